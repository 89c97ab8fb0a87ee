"""The explicit training state: G's (and for SRGAN D's) params, Adam state and BatchNorm statistics."""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from srgan_jax import config as config_lib


class TrainState(train_state.TrainState):
    """One network's params, Adam state and BatchNorm running statistics."""

    batch_stats: Any


@flax.struct.dataclass
class SRState:
    """Generator state and, for SRGAN, discriminator state (None for SRResNet)."""

    g: TrainState
    d: TrainState | None


def learning_rate_schedule(optimizer: config_lib.Optimizer) -> optax.Schedule:
    """Constant `learning_rate`, multiplied by `decay` at each of `boundaries`."""
    return optax.piecewise_constant_schedule(optimizer.learning_rate, {b: optimizer.decay for b in optimizer.boundaries})


def _adam(optimizer: config_lib.Optimizer) -> optax.GradientTransformation:
    return optax.adam(learning_rate_schedule(optimizer), b1=optimizer.b1, b2=optimizer.b2)


def _generator_optimizer(optimizer: config_lib.Optimizer) -> optax.GradientTransformation:
    """Adam, with the output stage's steps scaled by `g_tail_lr_scale` (the 9x9 output conv) and
    `g_upsample_lr_scale` (the pixel-shuffle stages' convs and PReLUs); 0 freezes them.

    Only a scale that is not 1 adds a transform, so checkpoints of runs without it resume.
    """
    groups = {  # the Generator's layer names
        "tail_conv": (optimizer.g_tail_lr_scale, lambda name: name == "tail_conv"),
        "upsample": (optimizer.g_upsample_lr_scale, lambda name: name.startswith("upsample_")),
    }
    transforms = [_adam(optimizer)]
    for scale, in_group in groups.values():
        if scale != 1.0:
            def mask(params: Any, in_group=in_group) -> Any:
                return {name: jax.tree.map(lambda _: in_group(name), layer) for name, layer in params.items()}
            transforms.append(optax.masked(optax.scale(scale), mask))
    return transforms[0] if len(transforms) == 1 else optax.chain(*transforms)


def create_state(spec: config_lib.RunSpec, rng: jax.Array, generator: nn.Module,
                 discriminator: nn.Module | None, jit: Callable[[Callable], Callable] = jax.jit) -> SRState:
    """Fresh parameters and Adam states for G (and D).

    `init` runs compiled by `jit` (training passes its strategy's `wrap_init`): one compilation
    instead of one per operation (seconds on a CPU).
    """
    g_rng, d_rng = jax.random.split(rng)
    lr_size = spec.hr_size // spec.generator.scale
    g_vars = jit(functools.partial(generator.init, train=False))(g_rng, jnp.zeros((1, lr_size, lr_size, 3)))
    g = TrainState.create(apply_fn=generator.apply, params=g_vars["params"],
                          batch_stats=g_vars["batch_stats"], tx=_generator_optimizer(spec.optimizer))
    d = None
    if discriminator is not None:
        hr = spec.hr_size
        d_vars = jit(functools.partial(discriminator.init, train=False))(d_rng, jnp.zeros((1, hr, hr, 3)))
        d = TrainState.create(apply_fn=discriminator.apply, params=d_vars["params"],
                              batch_stats=d_vars["batch_stats"], tx=_adam(spec.optimizer))
    return SRState(g=g, d=d)


def generator_variables(state: SRState) -> dict:
    """G's inference variables: {"params", "batch_stats"}."""
    return {"params": state.g.params, "batch_stats": state.g.batch_stats}
