"""MATLAB-exact bicubic `imresize` (the LR-making operator of the SR literature).

MATLAB's `imresize(img, scale, 'bicubic')` is separable. For each axis it builds a
weight matrix W of shape [out, in] such that resized = W @ x along that axis:

- Keys cubic kernel with a = -0.5, support 4 pixels.
- When shrinking (scale < 1) with antialiasing, the kernel is stretched by 1/scale:
  h(x) = scale * cubic(scale * x), support 4 / scale.
- Output pixel i (1-based) maps to input coordinate u = i / scale + 0.5 * (1 - 1 / scale).
- Weights are normalised to sum to 1 for each output pixel.
- Out-of-range taps are mirrored symmetrically (x[-1] = x[0], like MATLAB's `padarray
  'symmetric'`), and folded into the dense matrix here.

`resize_matrix` exposes W so that fast paths (NumPy batches, tf.data) are plain matrix products
with the same numbers as the float64 reference `imresize`.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel with a = -0.5 (MATLAB's `bicubic`)."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1) + (
        -0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0
    ) * ((ax > 1) & (ax <= 2))


def output_size(in_size: int, scale: float) -> int:
    """MATLAB's output length for a scale factor: ceil(in_size * scale)."""
    # Guard against 96 * 0.25 = 24.000000000000004 style float noise.
    return int(math.ceil(round(in_size * scale, 9)))


def resize_matrix(in_size: int, out_size: int, scale: float, antialias: bool = True) -> np.ndarray:
    """Dense float64 matrix W [out_size, in_size] of MATLAB's bicubic resize along one axis."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"imresize: sizes must be positive, got in={in_size} out={out_size}")
    if scale <= 0:
        raise ValueError(f"imresize: scale must be positive, got {scale}")
    kernel_width = 4.0
    shrink = scale < 1 and antialias
    if shrink:
        kernel_width /= scale
    x = np.arange(1, out_size + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2.0)
    taps = int(math.ceil(kernel_width)) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based
    distance = u[:, None] - indices
    weights = scale * cubic(scale * distance) if shrink else cubic(distance)
    weights /= weights.sum(axis=1, keepdims=True)
    # Symmetric border: 1..n, n..1 repeated.
    mirror = np.concatenate([np.arange(in_size), np.arange(in_size)[::-1]])
    columns = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_size)]
    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.repeat(np.arange(out_size), taps)
    np.add.at(matrix, (rows, columns.ravel()), weights.ravel())
    return matrix


def _scales_and_shape(
    shape: Sequence[int], scale: float | None, output_shape: Sequence[int] | None
) -> tuple[tuple[float, float], tuple[int, int]]:
    if (scale is None) == (output_shape is None):
        raise ValueError("imresize: give exactly one of scale= or output_shape=")
    h, w = shape
    if scale is not None:
        if scale <= 0:
            raise ValueError(f"imresize: scale must be positive, got {scale}")
        return (scale, scale), (output_size(h, scale), output_size(w, scale))
    oh, ow = (int(s) for s in output_shape)
    if oh < 1 or ow < 1:
        raise ValueError(f"imresize: output_shape must be positive, got {tuple(output_shape)}")
    return (oh / h, ow / w), (oh, ow)


def imresize(
    image: np.ndarray,
    scale: float | None = None,
    output_shape: Sequence[int] | None = None,
    antialias: bool = True,
) -> np.ndarray:
    """Bicubic resize with MATLAB `imresize` semantics (float64 reference).

    Args:
      image: [H, W] or [H, W, C]. Float input (any range, typically [0, 1]) is resized
        in float64 and returned as float64 without clipping. uint8 input is resized in
        float64, rounded and clipped to [0, 255] after each axis (as MATLAB does for
        uint8) and returned as uint8.
      scale: factor applied to both axes (e.g. 0.25 or 4); output size ceil(H * scale).
      output_shape: (out_H, out_W) instead of scale; the per-axis scale is out / in.
      antialias: widen the kernel when shrinking (MATLAB's default, True).

    Returns:
      The resized image, [out_H, out_W] or [out_H, out_W, C].
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"imresize: expected an [H, W] or [H, W, C] image, got shape {image.shape}")
    is_uint8 = image.dtype == np.uint8
    (sh, sw), (oh, ow) = _scales_and_shape(image.shape[:2], scale, output_shape)
    out = image.astype(np.float64)
    # MATLAB resizes the axis with the smaller scale first.
    order = (0, 1) if sh <= sw else (1, 0)
    for axis in order:
        in_len, out_len, s = (image.shape[0], oh, sh) if axis == 0 else (image.shape[1], ow, sw)
        matrix = resize_matrix(in_len, out_len, s, antialias)
        out = np.moveaxis(np.tensordot(matrix, np.moveaxis(out, axis, 0), axes=(1, 0)), 0, axis)
        if is_uint8:
            out = np.clip(np.round(out), 0, 255)
    return out.astype(np.uint8) if is_uint8 else out


def upscale_nearest(image: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling by an integer factor: each pixel becomes a scale x scale block.

    Works on [H, W] or [H, W, C] of any dtype; returns [H * scale, W * scale(, C)], same dtype.
    """
    image = np.asarray(image)
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
