"""SRGAN discriminator (Ledig et al. 2017, SPEC "Discriminator"), a Flax Linen module."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from srgan_jax.networks.layers import ConvFn, Dtype, batch_norm

# (features, stride) of the 7 conv -> BN -> LeakyReLU stages after the first conv.
STAGES = ((64, 2), (128, 1), (128, 2), (256, 1), (256, 2), (512, 1), (512, 2))


class Discriminator(nn.Module):
    """Image [B, H, W, 3] in [-1, 1] -> real/fake logit [B] (float32).

    D(x) = sigmoid(logit); losses take the logit for numerical stability. The dense layer's
    input size is (H/16)*(W/16)*512, 6*6*512 for the paper's 96x96 crops. `bn_axis_name`:
    the pmap axis BatchNorm averages its statistics over (None under jit). `strided_conv`:
    how the stride-2 convolutions are computed (None: `lax.conv_general_dilated`); the
    parameters are `nn.Conv`'s whichever form is used.
    """

    dtype: Dtype = jnp.float32
    bn_axis_name: str | None = None
    strided_conv: ConvFn = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        x = x.astype(self.dtype)
        x = nn.leaky_relu(nn.Conv(64, (3, 3), dtype=self.dtype)(x), 0.2)
        for features, stride in STAGES:
            # Symmetric padding 1 (PyTorch's), not 'SAME', which pads strided convs (0, 1).
            x = nn.Conv(features, (3, 3), strides=(stride, stride), padding=1, dtype=self.dtype,
                        conv_general_dilated=self.strided_conv if stride == 2 else None)(x)
            x = batch_norm(train, self.dtype, self.bn_axis_name)(x)
            x = nn.leaky_relu(x, 0.2)
        x = x.reshape(x.shape[0], -1)
        x = nn.leaky_relu(nn.Dense(1024, dtype=self.dtype)(x), 0.2)
        return nn.Dense(1, dtype=self.dtype)(x)[:, 0].astype(jnp.float32)
