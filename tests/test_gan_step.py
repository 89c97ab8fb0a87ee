"""The GAN step's two ways of forming D's BatchNorm batches (`train.d_joint_batch`), checked
against D applied by hand."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from srgan_jax.networks import losses
from srgan_jax.networks.discriminator import Discriminator
from srgan_jax.networks.generator import Generator
from srgan_jax.training.state import SRState, TrainState
from srgan_jax.training.steps import gan_train_step


def _setup(seed: int = 0):
    import optax

    g, d = Generator(num_blocks=1, features=8, scale=4), Discriminator()
    lr = jax.random.uniform(jax.random.key(seed), (4, 8, 8, 3))
    hr = jax.random.uniform(jax.random.key(seed + 1), (4, 32, 32, 3), minval=-1, maxval=1)
    g_vars = g.init(jax.random.key(2), lr, train=False)
    d_vars = d.init(jax.random.key(3), hr, train=False)
    tx = optax.adam(1e-4)
    state = SRState(g=TrainState.create(apply_fn=g.apply, params=g_vars["params"], batch_stats=g_vars["batch_stats"], tx=tx),
                    d=TrainState.create(apply_fn=d.apply, params=d_vars["params"], batch_stats=d_vars["batch_stats"], tx=tx))
    return state, {"lr": lr, "hr": hr}


def _step(joint: bool):
    return jax.jit(functools.partial(gan_train_step, content_loss=losses.mse_loss, adversarial_weight=1e-3,
                                     d_joint_batch=joint))


def test_joint_batch_d_loss_is_one_call_on_real_then_fake():
    state, batch = _setup()
    _, step_metrics = _step(True)(state, batch)
    sr = state.g.apply_fn({"params": state.g.params, "batch_stats": state.g.batch_stats}, batch["lr"], train=True,
                          mutable=["batch_stats"])[0]
    logits, _ = state.d.apply_fn({"params": state.d.params, "batch_stats": state.d.batch_stats},
                                 jnp.concatenate([batch["hr"], sr]), train=True, mutable=["batch_stats"])
    expected = losses.discriminator_loss(logits[:4], logits[4:])
    # Same program on both sides but for the fused step: float32 rounding of a loss of O(1).
    np.testing.assert_allclose(step_metrics["d_loss"], expected, rtol=1e-5)
    np.testing.assert_allclose(step_metrics["d_real"], jnp.mean(jax.nn.sigmoid(logits[:4])), rtol=1e-5)


def test_only_joint_batches_let_the_real_images_change_the_fake_logits():
    # Apart, the fake half is normalised by its own statistics: its logits (and so D(fake)) cannot
    # depend on the real batch. Together they must.
    state, batch = _setup()
    other = dict(batch, hr=jnp.flip(batch["hr"], axis=2) * 0.5)
    apart = [_step(False)(state, b)[1]["d_fake"] for b in (batch, other)]
    together = [_step(True)(state, b)[1]["d_fake"] for b in (batch, other)]
    np.testing.assert_array_equal(apart[0], apart[1])
    assert abs(float(together[0]) - float(together[1])) > 1e-4
