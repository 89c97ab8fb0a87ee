"""Pure train steps and the eval step: functions of explicit state, wrapped by `srgan_jax.parallel`.

SRResNet trains G alone on a content loss (`generator_train_step`); SRGAN alternates one D
update and one G update per step (`gan_train_step`, k = 1). Each is a pure function
`step(state, batch, *, content_loss, ..., axis_name=None) -> (state, metrics)`; `axis_name`
is set only under pmap, where gradients and metrics are `pmean`-ed over it.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from srgan_jax import metrics
from srgan_jax.networks import losses
from srgan_jax.networks.losses import ContentLoss
from srgan_jax.config import RunSpec
from srgan_jax.training.state import SRState


def _pmean(tree: Any, axis_name: str | None) -> Any:
    return tree if axis_name is None else jax.lax.pmean(tree, axis_name)


def generator_train_step(state: SRState, batch: dict, *, content_loss: ContentLoss,
                         axis_name: str | None = None) -> tuple[SRState, dict]:
    """One Adam step of G on the content loss (SRResNet; also SRGAN's pretraining steps).

    batch: {"lr": [B, h, w, 3] in [0, 1], "hr": [B, h*s, w*s, 3] in [-1, 1]}.
    """

    def loss_fn(params):
        sr, updates = state.g.apply_fn({"params": params, "batch_stats": state.g.batch_stats},
                                       batch["lr"], train=True, mutable=["batch_stats"])
        return content_loss(sr, batch["hr"]), (sr, updates["batch_stats"])

    (loss, (sr, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.g.params)
    grads = _pmean(grads, axis_name)
    g = state.g.apply_gradients(grads=grads, batch_stats=batch_stats)
    step_metrics = {"g_loss": loss, "content_loss": loss, "psnr": metrics.batch_psnr(sr, batch["hr"])}
    return state.replace(g=g), _pmean(step_metrics, axis_name)


def _discriminate(d_state: Any, params: Any, batch_stats: Any, real: jax.Array, fake: jax.Array, *,
                  joint: bool) -> tuple[jax.Array, jax.Array, Any]:
    """(real logits, fake logits, D's new batch statistics), D in training mode: one call on
    [real; fake] (`joint`), or a call on each, the second with the first's statistics."""
    apply = functools.partial(d_state.apply_fn, train=True, mutable=["batch_stats"])
    if joint:
        logits, updates = apply({"params": params, "batch_stats": batch_stats}, jnp.concatenate([real, fake]))
        return logits[:real.shape[0]], logits[real.shape[0]:], updates["batch_stats"]
    real_logits, updates = apply({"params": params, "batch_stats": batch_stats}, real)
    fake_logits, updates = apply({"params": params, "batch_stats": updates["batch_stats"]}, fake)
    return real_logits, fake_logits, updates["batch_stats"]


def gan_train_step(state: SRState, batch: dict, *, content_loss: ContentLoss, adversarial_weight: float,
                   d_joint_batch: bool = False, axis_name: str | None = None) -> tuple[SRState, dict]:
    """One D update then one G update (k = 1), SPEC "Losses".

    D: BCE on logits of HR (real) and of G(LR) held constant (fake). G: content loss +
    adversarial_weight * -log D(G(LR)), with D after its update. G runs forward once; its
    backward pass reuses that forward through `jax.vjp`.

    D's BatchNorm takes its statistics over the real and the fake batch separately (two
    calls), or with `d_joint_batch` over both at once (one call on [HR; SR], in D's and in G's
    update; `config.train.d_joint_batch`). Separately, whatever all fakes share (a pixel-shuffle
    lattice, which D's 4x-strided features see as a constant per channel) is normalised away
    within the fake batch, so D cannot learn to penalise it.
    """
    hr = batch["hr"]
    discriminate = functools.partial(_discriminate, joint=d_joint_batch)

    def generate(params):
        sr, updates = state.g.apply_fn({"params": params, "batch_stats": state.g.batch_stats},
                                       batch["lr"], train=True, mutable=["batch_stats"])
        return sr, updates["batch_stats"]

    sr, g_vjp, g_batch_stats = jax.vjp(generate, state.g.params, has_aux=True)
    fake = jax.lax.stop_gradient(sr)

    def d_loss_fn(params):
        real_logits, fake_logits, batch_stats = discriminate(state.d, params, state.d.batch_stats, hr, fake)
        return losses.discriminator_loss(real_logits, fake_logits), (real_logits, fake_logits, batch_stats)

    (d_loss, (real_logits, fake_logits, d_batch_stats)), d_grads = jax.value_and_grad(
        d_loss_fn, has_aux=True)(state.d.params)
    d = state.d.apply_gradients(grads=_pmean(d_grads, axis_name), batch_stats=d_batch_stats)

    def g_loss_fn(sr):
        content = content_loss(sr, hr)
        # D in training mode (batch statistics), as in the D update; its running
        # statistics are left to the D update.
        if d_joint_batch:
            _, logits, _ = discriminate(d, d.params, d.batch_stats, hr, sr)
        else:
            logits, _ = d.apply_fn({"params": d.params, "batch_stats": d.batch_stats}, sr, train=True,
                                   mutable=["batch_stats"])
        adversarial = losses.generator_adversarial_loss(logits)
        return content + adversarial_weight * adversarial, (content, adversarial)

    (g_loss, (content, adversarial)), sr_grad = jax.value_and_grad(g_loss_fn, has_aux=True)(sr)
    (g_grads,) = g_vjp(sr_grad)
    g = state.g.apply_gradients(grads=_pmean(g_grads, axis_name), batch_stats=g_batch_stats)
    step_metrics = {
        "g_loss": g_loss, "content_loss": content, "adversarial_loss": adversarial, "d_loss": d_loss,
        "d_real": jnp.mean(jax.nn.sigmoid(real_logits)), "d_fake": jnp.mean(jax.nn.sigmoid(fake_logits)),
        "psnr": metrics.batch_psnr(sr, hr),
    }
    return SRState(g=g, d=d), _pmean(step_metrics, axis_name)


def eval_step(variables: dict, lr: jax.Array, *, generator: nn.Module) -> jax.Array:
    """G in inference mode (running BatchNorm averages): LR [0, 1] -> SR [-1, 1]."""
    return generator.apply(variables, lr, train=False)


class TrainSteps(NamedTuple):
    g: Callable  # the content-loss step (SRResNet; SRGAN's pretraining)
    gan: Callable  # the D + G step


def bind_train_steps(spec: RunSpec, content_loss: ContentLoss) -> TrainSteps:
    """Both kinds of step with the run's losses and D batch bound: what training runs and
    `srgan-jax benchmark` times (each still to be wrapped by the parallel strategy)."""
    return TrainSteps(
        g=functools.partial(generator_train_step, content_loss=content_loss),
        gan=functools.partial(gan_train_step, content_loss=content_loss, adversarial_weight=spec.adversarial_weight,
                              d_joint_batch=spec.d_joint_batch))
