"""SRResNet generator and SRGAN discriminator (Ledig et al. 2017, SPEC "Generator", "Discriminator").

Both are Flax Linen modules: `init` and `apply` are the only ways in. Parameters are
float32; `dtype` sets the compute dtype (float32 or bfloat16). BatchNorm uses batch
statistics when `train=True` and running averages otherwise; `bn_axis_name` names the
`pmap` axis to average statistics over (None under `jax.jit`, where the global batch is
one array and its statistics are already global). When JAX runs on the CPU (checked when a
model is traced), G's output convolution and D's strided ones use the faster equivalent
forms of `srgan_jax.xla_cpu`; parameters are the same either way.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from srgan_jax import xla_cpu

Dtype = Any

# PyTorch BatchNorm2d defaults (momentum 0.1 there = 0.9 here, eps 1e-5).
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5


def pixel_shuffle(x: jax.Array, factor: int) -> jax.Array:
    """Sub-pixel convolution rearrangement [B, H, W, C*r*r] -> [B, H*r, W*r, C].

    Input channel c*r*r + i*r + j becomes output pixel (h*r + i, w*r + j) of channel c:
    PyTorch's `nn.PixelShuffle` order, so its conv weights load unchanged.
    """
    b, h, w, c = x.shape
    out_c = c // (factor * factor)
    if out_c * factor * factor != c:
        raise ValueError(f"pixel_shuffle: {c} channels is not a multiple of {factor}^2")
    x = x.reshape(b, h, w, out_c, factor, factor)
    x = x.transpose(0, 1, 4, 2, 5, 3)
    return x.reshape(b, h * factor, w * factor, out_c)


class PReLU(nn.Module):
    """Parametric ReLU with one learned slope per channel, initialised to 0.25."""

    init_slope: float = 0.25

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        slope = self.param("slope", nn.initializers.constant(self.init_slope), (x.shape[-1],))
        return jnp.where(x >= 0, x, slope.astype(x.dtype) * x)


def _batch_norm(train: bool, dtype: Dtype, axis_name: str | None, name: str | None = None) -> nn.BatchNorm:
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=_BN_MOMENTUM,
        epsilon=_BN_EPSILON,
        dtype=dtype,
        axis_name=axis_name,
        name=name,
    )


class ResidualBlock(nn.Module):
    """conv3 -> BN -> PReLU -> conv3 -> BN, plus the block input."""

    features: int = 64
    dtype: Dtype = jnp.float32
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = nn.Conv(self.features, (3, 3), dtype=self.dtype)(x)
        y = _batch_norm(train, self.dtype, self.bn_axis_name)(y)
        y = PReLU()(y)
        y = nn.Conv(self.features, (3, 3), dtype=self.dtype)(y)
        y = _batch_norm(train, self.dtype, self.bn_axis_name)(y)
        return x + y


class Generator(nn.Module):
    """SRResNet: LR [B, h, w, 3] in [0, 1] -> SR [B, h*scale, w*scale, 3] in [-1, 1] (tanh).

    Fully convolutional: any LR size works. `scale` must be a power of 2 (one
    conv + pixel-shuffle x2 + PReLU stage per factor of 2; the paper uses 4).
    """

    num_blocks: int = 16
    features: int = 64
    scale: int = 4
    dtype: Dtype = jnp.float32
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, lr: jax.Array, train: bool = False) -> jax.Array:
        if self.scale < 2 or self.scale & (self.scale - 1):
            raise ValueError(f"Generator: scale must be a power of 2, got {self.scale}")
        x = lr.astype(self.dtype)
        x = nn.Conv(self.features, (9, 9), dtype=self.dtype, name="head_conv")(x)
        skip = PReLU(name="head_prelu")(x)
        x = skip
        for i in range(self.num_blocks):
            x = ResidualBlock(self.features, self.dtype, self.bn_axis_name, name=f"block_{i}")(x, train)
        x = nn.Conv(self.features, (3, 3), dtype=self.dtype, name="body_conv")(x)
        x = _batch_norm(train, self.dtype, self.bn_axis_name, name="body_bn")(x)
        x = x + skip
        for i in range(self.scale.bit_length() - 1):
            x = nn.Conv(self.features * 4, (3, 3), dtype=self.dtype, name=f"upsample_{i}_conv")(x)
            x = pixel_shuffle(x, 2)
            x = PReLU(name=f"upsample_{i}_prelu")(x)
        tail_conv = xla_cpu.row_split_conv if xla_cpu.on_cpu() else None  # None: lax.conv_general_dilated
        x = nn.Conv(3, (9, 9), dtype=self.dtype, name="tail_conv", conv_general_dilated=tail_conv)(x)
        return jnp.tanh(x.astype(jnp.float32))


# (features, stride) of the 7 conv -> BN -> LeakyReLU stages after the first conv.
_DISCRIMINATOR_STAGES = ((64, 2), (128, 1), (128, 2), (256, 1), (256, 2), (512, 1), (512, 2))


class Discriminator(nn.Module):
    """SRGAN discriminator: image [B, H, W, 3] in [-1, 1] -> real/fake logit [B].

    D(x) = sigmoid(logit); losses take the logit for numerical stability. The dense
    layer's input size is (H/16)*(W/16)*512, 6*6*512 for the paper's 96x96 crops.
    """

    dtype: Dtype = jnp.float32
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        x = x.astype(self.dtype)
        x = nn.leaky_relu(nn.Conv(64, (3, 3), dtype=self.dtype)(x), 0.2)
        strided_conv = xla_cpu.stride2_conv if xla_cpu.on_cpu() else None  # None: lax.conv_general_dilated
        for features, stride in _DISCRIMINATOR_STAGES:
            # Symmetric padding 1 (PyTorch's), not 'SAME', which pads strided convs (0, 1).
            x = nn.Conv(features, (3, 3), strides=(stride, stride), padding=1, dtype=self.dtype,
                        conv_general_dilated=strided_conv if stride == 2 else None)(x)
            x = _batch_norm(train, self.dtype, self.bn_axis_name)(x)
            x = nn.leaky_relu(x, 0.2)
        x = x.reshape(x.shape[0], -1)
        x = nn.leaky_relu(nn.Dense(1024, dtype=self.dtype)(x), 0.2)
        return nn.Dense(1, dtype=self.dtype)(x)[:, 0].astype(jnp.float32)
