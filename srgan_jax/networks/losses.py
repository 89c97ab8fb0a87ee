"""SRGAN losses (SPEC "Losses"). All return float32 scalars, means over the batch.

Ranges: `sr` and `hr` are generator-range images in [-1, 1], NHWC. Discriminator outputs
are logits (D(x) = sigmoid(logit)); every loss works on logits for numerical stability.
"""

from __future__ import annotations

from typing import Callable, Mapping

import jax
import jax.numpy as jnp

FeatureFn = Callable[[jax.Array], Mapping[str, jax.Array]]
# (sr, hr) -> scalar: `mse_loss`, or `vgg_content_loss` with its features and layer bound.
ContentLoss = Callable[[jax.Array, jax.Array], jax.Array]

# SPEC: VGG features are divided by 12.75 so that the VGG loss is on the scale of the MSE.
VGG_FEATURE_SCALE = 1.0 / 12.75


def mse_loss(sr: jax.Array, hr: jax.Array) -> jax.Array:
    """Pixel MSE: mean over all pixels and channels of (hr - sr)^2."""
    return jnp.mean(jnp.square(hr.astype(jnp.float32) - sr.astype(jnp.float32)))


def vgg_content_loss(features: FeatureFn, sr: jax.Array, hr: jax.Array, layer: str) -> jax.Array:
    """VGG i.j loss: mean squared distance of phi_ij(sr) and phi_ij(hr), features / 12.75.

    `features` maps [-1, 1] NHWC images to a dict of feature maps (`vgg19.VGGFeatures`)
    and must hold the VGG weights frozen; the HR features get no gradient.
    """
    sr_features = features(sr)[layer].astype(jnp.float32) * VGG_FEATURE_SCALE
    hr_features = jax.lax.stop_gradient(features(hr)[layer].astype(jnp.float32) * VGG_FEATURE_SCALE)
    return jnp.mean(jnp.square(sr_features - hr_features))


def generator_adversarial_loss(fake_logits: jax.Array) -> jax.Array:
    """Non-saturating generator loss: mean of -log D(G(lr)) = softplus(-logit)."""
    return jnp.mean(jax.nn.softplus(-fake_logits.astype(jnp.float32)))


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """Binary cross-entropy on logits, real = 1 and fake = 0: -log D(hr) - log(1 - D(sr))."""
    real = jnp.mean(jax.nn.softplus(-real_logits.astype(jnp.float32)))
    fake = jnp.mean(jax.nn.softplus(fake_logits.astype(jnp.float32)))
    return real + fake
