"""LPIPS v0.1 with the AlexNet backbone (Zhang et al., CVPR 2018), as the authors' `lpips`
package computes it (`lpips.LPIPS(net='alex', version='0.1')`), in Flax.

Inputs: two batches of RGB images in [-1, 1], NHWC, same shape, at least `MIN_SIZE` pixels
on each side. Recipe: the authors' ScalingLayer ((x - SHIFT) / SCALE), torchvision AlexNet
`features` up to the last ReLU (conv 11x11/4 pad 2 -> 64, max-pool 3/2, conv 5x5 pad 2 -> 192,
max-pool 3/2, conv 3x3 -> 384, -> 256, -> 256, a ReLU after each conv) with the five ReLU
outputs as taps; each tap divided by (its L2 norm over channels + 1e-10); the squared
difference of the two images' taps weighted per channel by the learned non-negative linear
layer (a 1x1 conv without bias), averaged over space and summed over the five taps. One
value per image pair, [B]; 0 for identical images, larger = less similar.

Params: {"alexnet": {"conv1" ... "conv5": {"kernel" HWIO, "bias"}}, "lin1" ... "lin5": [C]}.
Reading and converting weight files is `srgan_jax.lpips_weights`'s job.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

Params = dict[str, Any]

# lpips' ScalingLayer: ImageNet mean and std expressed in the [-1, 1] range.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10  # lpips.normalize_tensor's epsilon

# (name, kernel, stride, padding, input channels, output channels) of torchvision AlexNet's
# five convs, in network order; a 3x3 stride-2 max-pool (no padding) precedes conv2 and conv3.
ALEXNET_CONVS: tuple[tuple[str, int, int, int, int, int], ...] = (
    ("conv1", 11, 4, 2, 3, 64),
    ("conv2", 5, 1, 2, 64, 192),
    ("conv3", 3, 1, 1, 192, 384),
    ("conv4", 3, 1, 1, 384, 256),
    ("conv5", 3, 1, 1, 256, 256),
)
_POOL_BEFORE = ("conv2", "conv3")
# Smallest side whose conv1 output (15 at 64 px, 7 at 31) survives both pools with >= 1 pixel.
MIN_SIZE = 31

# The metric is defined in float32: no TF32 or bfloat16 passes on accelerators.
_PRECISION = jax.lax.Precision.HIGHEST


class AlexNetFeatures(nn.Module):
    """torchvision AlexNet `features` without the last pool: [B, H, W, 3] (already scaled
    by the ScalingLayer) -> the five ReLU outputs [relu1 ... relu5], each [B, h, w, C]."""

    @nn.compact
    def __call__(self, x: jax.Array) -> list[jax.Array]:
        taps = []
        for name, kernel, stride, pad, _, out_ch in ALEXNET_CONVS:
            if name in _POOL_BEFORE:
                x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
            x = nn.Conv(out_ch, (kernel, kernel), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
                        precision=_PRECISION, name=name)(x)
            x = nn.relu(x)
            taps.append(x)
        return taps


def unit_normalize(features: jax.Array, eps: float = EPS) -> jax.Array:
    """[..., C] -> features / (L2 norm over the channel axis + eps), as lpips.normalize_tensor."""
    return features / (jnp.sqrt(jnp.sum(features**2, axis=-1, keepdims=True)) + eps)


class LPIPS(nn.Module):
    """LPIPS v0.1 (AlexNet): x, y [B, H, W, 3] RGB in [-1, 1] -> distance [B] (float32).

    The linear weights `lin1` ... `lin5` initialise to ones, which is lpips' unlearned
    "baseline" (a plain channel sum); the metric needs the converted learned weights.
    """

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        if x.shape != y.shape or x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"LPIPS needs two [B, H, W, 3] batches of one shape, got {x.shape} and {y.shape}")
        if min(x.shape[1:3]) < MIN_SIZE:
            raise ValueError(f"LPIPS (AlexNet) needs images of at least {MIN_SIZE}x{MIN_SIZE} pixels, "
                             f"got {x.shape[1]}x{x.shape[2]}")
        shift, scale = jnp.asarray(SHIFT, jnp.float32), jnp.asarray(SCALE, jnp.float32)
        # One forward pass over both batches: x is the first half, y the second.
        both = (jnp.concatenate([x, y]).astype(jnp.float32) - shift) / scale
        distance = jnp.zeros((x.shape[0],), jnp.float32)
        for index, tap in enumerate(AlexNetFeatures(name="alexnet")(both), start=1):
            weight = self.param(f"lin{index}", nn.initializers.ones, (tap.shape[-1],), jnp.float32)
            tap_x, tap_y = jnp.split(unit_normalize(tap), 2)
            weighted = jnp.einsum("bhwc,c->bhw", (tap_x - tap_y) ** 2, weight, precision=_PRECISION)
            distance = distance + jnp.mean(weighted, axis=(1, 2))
        return distance


@flax.struct.dataclass
class LPIPSMetric:
    """LPIPS with its weights: call with x, y [B, H, W, 3] RGB in [-1, 1] -> [B] float32.

    A pytree: pass it into `jax.jit` as an argument or close over it.
    """

    params: Params

    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        return LPIPS().apply({"params": self.params}, x, y)
