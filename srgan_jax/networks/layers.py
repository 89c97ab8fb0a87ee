"""Layers shared by the generator and the discriminator: PReLU, pixel shuffle, BatchNorm."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
# `lax.conv_general_dilated` or a drop-in replacement for it; None: `lax.conv_general_dilated`.
ConvFn = Callable[..., jax.Array] | None

# PyTorch BatchNorm2d defaults (momentum 0.1 there = 0.9 here, eps 1e-5).
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5


def pixel_shuffle(x: jax.Array, factor: int) -> jax.Array:
    """Sub-pixel convolution rearrangement [B, H, W, C*r*r] -> [B, H*r, W*r, C].

    Input channel c*r*r + i*r + j becomes output pixel (h*r + i, w*r + j) of channel c:
    PyTorch's `nn.PixelShuffle` order, so its conv weights load unchanged. Traced under the
    name scope "pixel_shuffle", so that checks of a traced program can tell this
    rearrangement from other ops.
    """
    b, h, w, c = x.shape
    out_c = c // (factor * factor)
    if out_c * factor * factor != c:
        raise ValueError(f"pixel_shuffle: {c} channels is not a multiple of {factor}^2")
    with jax.named_scope("pixel_shuffle"):
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


def batch_norm(train: bool, dtype: Dtype, axis_name: str | None, name: str | None = None) -> nn.BatchNorm:
    """BatchNorm with PyTorch's defaults: batch statistics when `train`, running averages otherwise.

    `axis_name` names the pmap axis to average the statistics over (None under `jax.jit`,
    where the global batch is one array and its statistics are already global).
    """
    return nn.BatchNorm(use_running_average=not train, momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, dtype=dtype,
                        axis_name=axis_name, name=name)
