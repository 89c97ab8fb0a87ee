"""Image-quality metrics: the paper's Y-channel PSNR / SSIM, a training-time PSNR monitor, and
the pixel-shuffle grid measure used to watch a GAN for checkerboard artefacts.

Paper protocol (`psnr`, `ssim`): 8-bit RGB images, converted to the Y channel of YCbCr
(ITU-R BT.601, MATLAB `rgb2ycbcr` on uint8), a `crop_border`-pixel strip removed from every
side (crop = scale = 4), float64 arithmetic, data range 255. Float images in [0, 1] are
clipped and rounded to 8 bits first, exactly as an SR output is before it is scored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import jax

_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_SSIM_K1, _SSIM_K2, _SSIM_L = 0.01, 0.03, 255.0


def to_uint8(image: np.ndarray) -> np.ndarray:
    """uint8 passes through; float input in [0, 1] is clipped to [0, 1], scaled by 255 and rounded."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"metrics: expected uint8 or float in [0, 1] images, got dtype {image.dtype}")
    return np.round(np.clip(image.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


def sr_to_uint8(sr: np.ndarray) -> np.ndarray:
    """Generator output in [-1, 1] -> uint8: round((sr + 1) * 127.5), clipped to [0, 255]."""
    return np.clip(np.round((np.asarray(sr) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """Y channel of YCbCr as MATLAB `rgb2ycbcr` computes it for uint8 images.

    Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 with R, G, B in [0, 255], rounded half
    away from zero (MATLAB's uint8 conversion). Range [16, 235].

    Args:
      image: uint8 [H, W, 3] RGB, or grayscale [H, W] / [H, W, 1] (treated as R = G = B).
        Float input in [0, 1] is accepted and quantised to 8 bits first.

    Returns:
      uint8 [H, W].
    """
    rgb = to_uint8(image).astype(np.float64)
    if rgb.ndim == 3 and rgb.shape[-1] == 1:
        rgb = rgb[..., 0]
    if rgb.ndim == 2:
        rgb = np.stack([rgb] * 3, axis=-1)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb_to_y: expected an [H, W, 3] RGB or [H, W] gray image, got shape {rgb.shape}")
    y = 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0
    return np.floor(y + 0.5).astype(np.uint8)


def _prepare(
    sr: np.ndarray, hr: np.ndarray, crop_border: int, y_channel: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Quantise, optionally take Y, crop; returns float64 [h, w, c] pairs (c = 1 for Y)."""
    sr, hr = to_uint8(sr), to_uint8(hr)
    if sr.shape != hr.shape:
        raise ValueError(f"metrics: SR shape {sr.shape} differs from HR shape {hr.shape}")
    if y_channel:
        sr, hr = rgb_to_y(sr), rgb_to_y(hr)
    sr, hr = sr.astype(np.float64), hr.astype(np.float64)
    if sr.ndim == 2:
        sr, hr = sr[..., None], hr[..., None]
    if crop_border:
        sr = sr[crop_border:-crop_border, crop_border:-crop_border]
        hr = hr[crop_border:-crop_border, crop_border:-crop_border]
    if sr.shape[0] < 1 or sr.shape[1] < 1:
        raise ValueError(f"metrics: image too small for crop_border={crop_border}: {hr.shape}")
    return sr, hr


def psnr(sr: np.ndarray, hr: np.ndarray, crop_border: int = 4, y_channel: bool = True) -> float:
    """PSNR in dB of one image pair, 10 log10(255^2 / MSE) (the paper protocol by default).

    Args:
      sr, hr: uint8 [H, W, 3] RGB or [H, W] gray, same shape; float in [0, 1] is clipped and
        rounded to 8 bits first.
      crop_border: pixels removed from every side before scoring (the scale factor, 4).
      y_channel: score the MATLAB `rgb2ycbcr` Y channel (True) or all RGB channels.

    Returns:
      PSNR in dB; `inf` when the (cropped) images are identical.
    """
    sr, hr = _prepare(sr, hr, crop_border, y_channel)
    mse = np.mean((sr - hr) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def gaussian_window(size: int = _SSIM_WINDOW, sigma: float = _SSIM_SIGMA) -> np.ndarray:
    """1-D normalised Gaussian [size] (float64); the SSIM window is its outer product."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def _filter_valid(images: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of [..., H, W] with outer(kernel, kernel)."""
    k = len(kernel)
    h, w = images.shape[-2] - k + 1, images.shape[-1] - k + 1
    rows = sum(kernel[i] * images[..., i : i + h, :] for i in range(k))
    return sum(kernel[j] * rows[..., :, j : j + w] for j in range(k))


def _ssim_channel(x: np.ndarray, y: np.ndarray) -> float:
    """Mean SSIM map of two float64 [H, W] images in [0, 255]."""
    c1, c2 = (_SSIM_K1 * _SSIM_L) ** 2, (_SSIM_K2 * _SSIM_L) ** 2
    mu_x, mu_y, xx, yy, xy = _filter_valid(np.stack([x, y, x * x, y * y, x * y]), gaussian_window())
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean())


def ssim(sr: np.ndarray, hr: np.ndarray, crop_border: int = 4, y_channel: bool = True) -> float:
    """SSIM (Wang et al. 2004) of one image pair, the paper protocol by default.

    11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, L = 255, 'valid' filtering (no
    padding), mean of the SSIM map. With `y_channel=False` the RGB channels are scored
    separately and averaged.

    Args:
      sr, hr: uint8 [H, W, 3] RGB or [H, W] gray, same shape; float in [0, 1] is clipped and
        rounded to 8 bits first.
      crop_border: pixels removed from every side before filtering (the scale factor, 4).
      y_channel: score the MATLAB `rgb2ycbcr` Y channel (True) or RGB.

    Returns:
      Mean SSIM, 1.0 for identical images.
    """
    sr, hr = _prepare(sr, hr, crop_border, y_channel)
    if min(sr.shape[:2]) < _SSIM_WINDOW:
        raise ValueError(f"ssim: cropped image {sr.shape[:2]} is smaller than the {_SSIM_WINDOW}px window")
    return float(np.mean([_ssim_channel(sr[..., c], hr[..., c]) for c in range(sr.shape[-1])]))


def batch_psnr(sr: jax.Array, hr: jax.Array) -> jax.Array:
    """Training monitor, NOT the paper protocol: mean over the batch of per-image RGB PSNR.

    Args:
      sr, hr: [B, H, W, 3] RGB in [-1, 1] (the generator's output range); no border crop,
        no 8-bit rounding, no Y channel; data range 2, i.e. PSNR = 10 log10(4 / MSE).

    Returns:
      Scalar float32 (jnp); `inf` if some image is reproduced exactly.
    """
    import jax.numpy as jnp

    diff = jnp.asarray(sr, jnp.float32) - jnp.asarray(hr, jnp.float32)
    mse = jnp.mean(diff**2, axis=(-3, -2, -1))
    return jnp.mean(10.0 * jnp.log10(4.0 / mse))


def shuffle_grid_prominence(image: np.ndarray, period: int = 4, crop_border: int = 4) -> float:
    """How much a periodic grid of `period` pixels stands out of the image's spectrum (1 = not at all).

    Two pixel-shuffle x2 stages give x4 outputs a period of 4 px; a checkerboard artefact of that
    stage is energy at the frequencies k / period cycles per pixel (1/4 and 1/2 for period 4)
    along each axis. The Y channel (MATLAB `rgb2ycbcr`), cut to a multiple of `period` after a
    `crop_border` strip, minus its mean, is multiplied by a periodic 2-D Hann window (so every
    such frequency falls on a DFT bin and leaks into its 3 x 3 neighbours only). The prominence is
    the mean power of the 3 x 3 bins at the period**2 - 1 grid frequencies (DC excluded) over
    the mean power of the bins around them at Chebyshev distance 3 to 5 (the local background).

    A smooth spectrum (white noise, most natural images off the axes) gives about 1; an added
    grid raises it in proportion to the grid's power. Natural images have more energy along the
    axes, so compare an SR output with its HR image (`prominence(sr) / prominence(hr)`, 1 = as
    much grid as the real photo) rather than with 1.

    Args:
      image: uint8 [H, W, 3] RGB or [H, W] gray (float in [0, 1] is quantised to 8 bits first);
        H and W at least 2 * crop_border + 4 * period.
      period: the grid period in output pixels (the product of the pixel-shuffle factors).
      crop_border: pixels removed from every side first (the paper protocol's crop).

    Returns:
      The prominence, a positive float (float64 arithmetic).
    """
    y = rgb_to_y(image).astype(np.float64)
    if crop_border:
        y = y[crop_border:-crop_border, crop_border:-crop_border]
    h, w = (n - n % period for n in y.shape)
    if min(h, w) < 4 * period:
        raise ValueError(f"shuffle_grid_prominence: {y.shape} is too small for period {period}")
    y = y[:h, :w] - y[:h, :w].mean()
    window = np.outer(np.hanning(h + 1)[:-1], np.hanning(w + 1)[:-1])  # periodic Hann
    power = np.abs(np.fft.fft2(y * window)) ** 2
    dy, dx = np.meshgrid(np.arange(-5, 6), np.arange(-5, 6), indexing="ij")
    ring = np.maximum(abs(dy), abs(dx)) >= 3
    peak, background = [], []
    for ky in range(period):
        for kx in range(period):
            if ky == kx == 0:
                continue
            near = power[np.ix_((ky * h // period + np.arange(-5, 6)) % h, (kx * w // period + np.arange(-5, 6)) % w)]
            peak.append(near[4:7, 4:7].mean())
            background.append(near[ring].mean())
    return float(np.mean(peak) / max(np.mean(background), np.finfo(np.float64).tiny))
