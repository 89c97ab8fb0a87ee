"""SRResNet generator (Ledig et al. 2017, SPEC "Generator"), a Flax Linen module.

Parameters are float32; `dtype` sets the compute dtype (float32 or bfloat16). BatchNorm uses
batch statistics when `train=True` and running averages otherwise.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from srgan_jax.networks.layers import ConvFn, Dtype, PReLU, batch_norm, pixel_shuffle

# Pixel-shuffle factor of each upsampling stage per scale: x2 stages for powers of 2 (the
# paper's x4), one x3 stage for 3 (as EDSR and ESPCN do).
UPSAMPLE_FACTORS = {2: (2,), 3: (3,), 4: (2, 2), 8: (2, 2, 2)}
SCALES = tuple(UPSAMPLE_FACTORS)


class ResidualBlock(nn.Module):
    """conv3 -> BN -> PReLU -> conv3 -> BN, plus the block input."""

    features: int = 64
    dtype: Dtype = jnp.float32
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = nn.Conv(self.features, (3, 3), dtype=self.dtype)(x)
        y = batch_norm(train, self.dtype, self.bn_axis_name)(y)
        y = PReLU()(y)
        y = nn.Conv(self.features, (3, 3), dtype=self.dtype)(y)
        y = batch_norm(train, self.dtype, self.bn_axis_name)(y)
        return x + y


class Generator(nn.Module):
    """SRResNet: LR [B, h, w, 3] in [0, 1] -> SR [B, h*scale, w*scale, 3] in [-1, 1] (tanh).

    Fully convolutional: any LR size works. `scale` is one of `SCALES` (the paper uses 4):
    one conv + pixel-shuffle + PReLU stage per factor of `UPSAMPLE_FACTORS[scale]`, the conv
    to features * f * f channels for a x f stage. `bn_axis_name`: the
    pmap axis BatchNorm averages its statistics over (None under jit). `tail_conv`: how the
    9x9 output convolution is computed (None: `lax.conv_general_dilated`); the parameters
    are `nn.Conv`'s whichever form is used.
    """

    num_blocks: int = 16
    features: int = 64
    scale: int = 4
    dtype: Dtype = jnp.float32
    bn_axis_name: str | None = None
    tail_conv: ConvFn = None

    @nn.compact
    def __call__(self, lr: jax.Array, train: bool = False) -> jax.Array:
        if self.scale not in UPSAMPLE_FACTORS:
            raise ValueError(f"Generator: scale must be one of {SCALES}, got {self.scale}")
        x = lr.astype(self.dtype)
        x = nn.Conv(self.features, (9, 9), dtype=self.dtype, name="head_conv")(x)
        skip = PReLU(name="head_prelu")(x)
        x = skip
        for i in range(self.num_blocks):
            x = ResidualBlock(self.features, self.dtype, self.bn_axis_name, name=f"block_{i}")(x, train)
        x = nn.Conv(self.features, (3, 3), dtype=self.dtype, name="body_conv")(x)
        x = batch_norm(train, self.dtype, self.bn_axis_name, name="body_bn")(x)
        x = x + skip
        for i, factor in enumerate(UPSAMPLE_FACTORS[self.scale]):
            x = nn.Conv(self.features * factor**2, (3, 3), dtype=self.dtype, name=f"upsample_{i}_conv")(x)
            x = pixel_shuffle(x, factor)
            x = PReLU(name=f"upsample_{i}_prelu")(x)
        x = nn.Conv(3, (9, 9), dtype=self.dtype, name="tail_conv", conv_general_dilated=self.tail_conv)(x)
        return jnp.tanh(x.astype(jnp.float32))
