"""Losses on hand-computed values (SPEC "Losses")."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srgan_jax.networks import losses


def test_mse_is_the_mean_squared_pixel_difference():
    hr = jnp.zeros((1, 2, 2, 1))
    sr = jnp.array([0.5, -0.5, 1.0, 0.0]).reshape(1, 2, 2, 1)
    assert float(losses.mse_loss(sr, hr)) == pytest.approx((0.25 + 0.25 + 1.0) / 4)


def test_adversarial_losses_are_cross_entropies_on_logits():
    logits = jnp.array([0.0, 2.0, -3.0])
    d = 1 / (1 + np.exp(-np.array([0.0, 2.0, -3.0])))
    assert float(losses.generator_adversarial_loss(logits)) == pytest.approx(np.mean(-np.log(d)), rel=1e-6)
    real, fake = jnp.array([1.5, -0.5]), jnp.array([0.3, -2.0])
    d_real, d_fake = 1 / (1 + np.exp(-np.asarray(real))), 1 / (1 + np.exp(-np.asarray(fake)))
    expected = np.mean(-np.log(d_real)) + np.mean(-np.log(1 - d_fake))
    assert float(losses.discriminator_loss(real, fake)) == pytest.approx(expected, rel=1e-6)


def test_adversarial_losses_stay_finite_for_saturated_logits():
    big = jnp.array([1e4, -1e4])
    assert np.isfinite(float(losses.generator_adversarial_loss(big)))
    assert np.isfinite(float(losses.discriminator_loss(big, big)))
    assert np.all(np.isfinite(np.asarray(jax.grad(lambda x: losses.generator_adversarial_loss(x))(big))))


def test_vgg_content_loss_rescales_features_and_stops_hr_gradient():
    def features(x):  # a stand-in feature map: 2 * x
        return {"relu2_2": 2.0 * x}

    sr = jnp.full((1, 2, 2, 1), 0.5)
    hr = jnp.zeros((1, 2, 2, 1))
    loss = losses.vgg_content_loss(features, sr, hr, "relu2_2")
    assert float(loss) == pytest.approx((2 * 0.5 / 12.75) ** 2)
    grad_hr = jax.grad(lambda h: losses.vgg_content_loss(features, sr, h, "relu2_2"))(hr)
    assert float(jnp.abs(grad_hr).max()) == 0.0
