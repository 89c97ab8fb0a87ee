"""Y-channel PSNR / SSIM of the paper protocol, checked against known values and scikit-image."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from srgan_jax import metrics
from srgan_jax.metrics import batch_psnr, psnr, rgb_to_y, ssim, to_uint8


def _pair(seed: int = 0, shape=(48, 40, 3), noise: int = 25) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    smooth = (127 + 100 * np.sin(x / 6.0)[..., None] * np.cos(y / 9.0)[..., None]) * np.ones(shape[2:])
    hr = np.clip(smooth + rng.normal(0, 10, shape), 0, 255).astype(np.uint8)
    sr = np.clip(hr.astype(int) + rng.integers(-noise, noise + 1, shape), 0, 255).astype(np.uint8)
    return sr, hr


def test_rgb_to_y_known_values():
    pixels = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    # 16 + 65.481 = 81.481 -> 81; 16 + 128.553 = 144.553 -> 145; 16 + 24.966 = 40.966 -> 41.
    np.testing.assert_array_equal(rgb_to_y(pixels), [[235, 16, 81, 145, 41]])
    assert rgb_to_y(pixels).dtype == np.uint8


def test_rgb_to_y_gray_is_r_equals_g_equals_b():
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    expected = np.floor(16 + gray.astype(float) * 219 / 255 + 0.5)  # the three coefficients sum to 219
    np.testing.assert_array_equal(rgb_to_y(gray), expected)
    np.testing.assert_array_equal(rgb_to_y(np.stack([gray] * 3, -1)), expected)
    np.testing.assert_array_equal(rgb_to_y(gray[..., None]), expected)


def test_float_input_is_quantised():
    assert to_uint8(np.array([-0.2, 0.0, 0.5, 1.0, 1.7])).tolist() == [0, 0, 128, 255, 255]
    sr, hr = _pair()
    assert psnr(sr / 255.0, hr) == psnr(sr, hr)
    assert ssim(sr / 255.0, hr / 255.0) == ssim(sr, hr)


def test_psnr_of_known_mse():
    hr = np.full((20, 20), 100, np.uint8)
    sr = hr.copy()
    sr[4:-4, 4:-4:2] += 10  # every other column of the 12x12 centre is off by 10
    mse = 100 / 2  # y_channel=False scores the raw gray values
    assert psnr(sr, hr, y_channel=False) == pytest.approx(10 * math.log10(255**2 / mse))
    sr[:4] = 0  # inside the 4-px border: ignored
    assert psnr(sr, hr, y_channel=False) == pytest.approx(10 * math.log10(255**2 / mse))
    assert psnr(sr, hr, crop_border=0, y_channel=False) < 10 * math.log10(255**2 / mse)


def test_psnr_identical_is_inf():
    _, hr = _pair()
    assert psnr(hr, hr) == math.inf


def test_psnr_uses_y_channel():
    sr, hr = _pair()
    ys, yh = rgb_to_y(sr)[4:-4, 4:-4].astype(float), rgb_to_y(hr)[4:-4, 4:-4].astype(float)
    assert psnr(sr, hr) == pytest.approx(10 * np.log10(255**2 / np.mean((ys - yh) ** 2)), rel=1e-12)


def test_ssim_identical_is_one():
    _, hr = _pair()
    assert ssim(hr, hr) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ssim_matches_skimage_on_y(seed):
    sr, hr = _pair(seed, noise=10 + 20 * seed)
    ys, yh = (rgb_to_y(image)[4:-4, 4:-4].astype(np.float64) for image in (sr, hr))
    # skimage filters with reflect padding, then drops (11 - 1) / 2 = 5 px of the map on each
    # side before the mean: exactly the 'valid' region of the paper protocol.
    expected = structural_similarity(
        ys, yh, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert ssim(sr, hr) == pytest.approx(expected, abs=1e-6)
    assert 0 < ssim(sr, hr) < 1


def test_ssim_grayscale_input():
    sr, hr = _pair(shape=(40, 36, 1))
    assert ssim(sr[..., 0], hr[..., 0]) == pytest.approx(ssim(np.repeat(sr, 3, -1), np.repeat(hr, 3, -1)))
    assert psnr(sr[..., 0], hr[..., 0]) == pytest.approx(psnr(np.repeat(sr, 3, -1), np.repeat(hr, 3, -1)))


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differs"):
        psnr(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8))


def test_batch_psnr_range_minus_one_to_one():
    hr = jnp.zeros((2, 8, 8, 3))
    sr = hr.at[0].set(0.1).at[1].set(-0.2)  # MSE 0.01 and 0.04, data range 2
    expected = (10 * math.log10(4 / 0.01) + 10 * math.log10(4 / 0.04)) / 2
    assert float(batch_psnr(sr, hr)) == pytest.approx(expected, rel=1e-5)


def _noise_with_grid(seed: int, amplitude: float, period: int = 4, size: int = 136, sigma: float = 16.0) -> np.ndarray:
    """Gray uint8: 128 + N(0, sigma^2) white noise + `amplitude` on every pixel of a period x period lattice."""
    image = 128.0 + sigma * np.random.default_rng(seed).standard_normal((size, size))
    image[::period, ::period] += amplitude
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def test_shuffle_grid_prominence_is_one_on_white_noise():
    # Each windowed-DFT bin of white noise has the same expected power, so the ratio of the 135
    # peak bins to the 1,440 ring bins is 1 in expectation; one image's ratio has a standard
    # deviation of about 1 / sqrt(135 / 2) = 0.12 (neighbouring Hann bins are correlated), the
    # mean of 8 images about 0.04: the 0.2 bound is 4.6 of those. Seeded, float64 FFT.
    values = [metrics.shuffle_grid_prominence(_noise_with_grid(seed, 0.0)) for seed in range(8)]
    assert abs(np.mean(values) - 1.0) < 0.2


def test_shuffle_grid_prominence_matches_the_windowed_dft_of_a_pulse_grid():
    # A pulse of height A every 4 px in both axes has DFT coefficients A/16 at all 16 grid
    # frequencies. Under a periodic Hann window (sum N/2 per axis) each becomes a 3x3 lobe
    # with weights (1/2, 1, 1/2) x (1/2, 1, 1/2): mean power over the lobe (A/16)^2 (N/2)^4 / 4.
    # White noise gives sigma^2 * (3N/8)^2 per bin (sum of Hann^2 = 3N/8 per axis), in the ring
    # and, on average, under the lobe. So E[prominence] = 1 + A^2 N^2 / (2304 sigma^2): 29.4 for
    # A = 2 sigma and N = 128 (136 less the 4-px crops). The Y conversion scales A and sigma
    # alike. Mean of 8 images, each with a standard deviation of about 2 (the noise-grid cross
    # term): 3 (10 %) is more than 4 of the mean's standard deviations.
    expected = 1.0 + 32.0**2 * 128**2 / (2304 * 16.0**2)
    values = [metrics.shuffle_grid_prominence(_noise_with_grid(seed, 32.0)) for seed in range(8)]
    assert abs(np.mean(values) - expected) < 3.0
    weaker = [metrics.shuffle_grid_prominence(_noise_with_grid(seed, 8.0)) for seed in range(8)]
    assert 1.5 < np.mean(weaker) < np.mean(values)  # 1 + 1.78 expected at A = sigma / 2


def test_shuffle_grid_prominence_ignores_other_periods():
    # A period-3 lattice puts its energy at k/3 cycles per pixel, none of which is on the
    # period-4 grid (nor in its 3x3 lobes for N = 128): the prominence stays at the noise level.
    values = [metrics.shuffle_grid_prominence(_noise_with_grid(seed, 64.0, period=3)) for seed in range(8)]
    assert abs(np.mean(values) - 1.0) < 0.2


def test_shuffle_grid_prominence_refuses_a_too_small_image():
    with pytest.raises(ValueError, match="too small"):
        metrics.shuffle_grid_prominence(np.zeros((20, 20), np.uint8))
