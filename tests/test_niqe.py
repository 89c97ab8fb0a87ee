"""NIQE (Mittal et al. 2013) as the MATLAB release computes it: known value, MSCN, AGGD fit, features, distance."""

from __future__ import annotations

import hashlib
import importlib.resources
import math
import os
from pathlib import Path

import numpy as np
import pytest

from srgan_jax import niqe
from srgan_jax.metrics import rgb_to_y

MODEL_SHA256 = "2a7c182a68c9e7f1b2e2e5ec723279d6f65d912b6fcaf37eb2bf03d7367c4296"


def _data_dir() -> Path:
    return Path(os.environ.get("SRGAN_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")


def _texture(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A uint8 gray test picture: smooth waves plus noise."""
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    noise = np.random.default_rng(seed).normal(0, 12, shape)
    image = 128 + 50 * np.sin(x / 6.0) * np.cos(y / 9.0) + 20 * np.sin((x + 2 * y) / 17.0) + noise
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _fspecial_gaussian(size: int, sigma: float) -> np.ndarray:
    """fspecial('gaussian', size, sigma) written element by element."""
    half = (size - 1) / 2
    h = np.array(
        [[math.exp(-((i - half) ** 2 + (j - half) ** 2) / (2 * sigma**2)) for j in range(size)] for i in range(size)]
    )
    return h / h.sum()


def _grid() -> tuple[np.ndarray, np.ndarray]:
    """MATLAB's 0.2:0.001:10 and r(a) = G(2/a)^2 / (G(1/a) G(3/a)) on it, element by element."""
    alphas = [round(0.2 + 0.001 * k, 3) for k in range(9801)]
    ratio = [math.gamma(2 / a) ** 2 / (math.gamma(1 / a) * math.gamma(3 / a)) for a in alphas]
    return np.array(alphas), np.array(ratio)


def _brute_force_alpha(samples: np.ndarray, alphas: np.ndarray, ratio: np.ndarray) -> float:
    """estimateaggdparam.m's alpha with plain argmin over the whole grid (first minimum; NaN -> first)."""
    v = np.asarray(samples, np.float64)
    neg, pos = v[v < 0], v[v > 0]
    left = math.sqrt(np.mean(neg**2)) if neg.size else math.nan
    right = math.sqrt(np.mean(pos**2)) if pos.size else math.nan
    g = left / right
    mean_sq = np.mean(v**2)
    r_hat = np.mean(np.abs(v)) ** 2 / mean_sq if mean_sq > 0 else math.nan
    target = r_hat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    if not math.isfinite(target):
        return float(alphas[0])
    return float(alphas[int(np.argmin((ratio - target) ** 2))])


# --- the known value -------------------------------------------------------------------------


def test_baboon_matches_matlab_release():
    path = _data_dir() / "Set14" / "baboon.png"
    if not path.exists():
        pytest.skip(f"Set14 baboon.png not found at {path} (set SRGAN_DATA_DIR)")
    from srgan_jax.data.images import read_rgb

    value = niqe.niqe(read_rgb(path), crop_border=0, y_channel=True)
    # MATLAB release (R2021a), Y channel of rgb2ycbcr, no crop: 5.72957 (data/niqe/README.md).
    assert abs(value - 5.72957) < 1e-3, value


# --- the model and the window ----------------------------------------------------------------


def test_shipped_model_is_the_documented_file():
    resource = importlib.resources.files("srgan_jax") / "niqe_pris_params.npz"
    assert hashlib.sha256(resource.read_bytes()).hexdigest() == MODEL_SHA256
    model = niqe.pristine_model()
    assert model["mu"].shape == (36,) and model["cov"].shape == (36, 36)
    np.testing.assert_allclose(model["cov"], model["cov"].T, rtol=0, atol=1e-12)


def test_window_is_fspecial_gaussian_and_the_shipped_one():
    window = niqe.gaussian_window()
    np.testing.assert_allclose(window, _fspecial_gaussian(7, 7 / 6), rtol=0, atol=1e-15)
    np.testing.assert_allclose(window, niqe.pristine_model()["gaussian_window"], rtol=0, atol=1e-15)
    assert abs(window.sum() - 1) < 1e-15


# --- MSCN ------------------------------------------------------------------------------------


def test_mscn_matches_direct_formula():
    rng = np.random.default_rng(3)
    image = rng.uniform(0, 255, (9, 12))
    w = _fspecial_gaussian(7, 7 / 6)
    h, wd = image.shape
    expected = np.zeros_like(image)
    for i in range(h):
        for j in range(wd):
            m = s2 = 0.0
            for di in range(-3, 4):
                for dj in range(-3, 4):
                    v = image[min(max(i + di, 0), h - 1), min(max(j + dj, 0), wd - 1)]  # replicate
                    m += w[di + 3, dj + 3] * v
                    s2 += w[di + 3, dj + 3] * v * v
            expected[i, j] = (image[i, j] - m) / (math.sqrt(abs(s2 - m * m)) + 1)
    np.testing.assert_allclose(niqe.mscn(image), expected, rtol=0, atol=1e-10)


def test_mscn_of_constant_image_is_zero():
    assert np.all(niqe.mscn(np.zeros((20, 20))) == 0)


# --- AGGD fit --------------------------------------------------------------------------------


def test_fit_gaussian_and_laplacian_shapes():
    rng = np.random.default_rng(0)
    alpha, left, right = niqe.fit_aggd(rng.normal(0, 2.0, 200_000))
    assert abs(alpha - 2.0) < 0.05 and abs(left - 2.0) < 0.02 and abs(right - 2.0) < 0.02
    alpha, _, _ = niqe.fit_aggd(rng.laplace(0, 1.0, 200_000))
    assert abs(alpha - 1.0) < 0.05


def test_fit_asymmetric_recovers_side_stds():
    # Two-piece Gaussian (AGGD with alpha = 2): P(x < 0) = s_l / (s_l + s_r).
    rng = np.random.default_rng(1)
    s_l, s_r, n = 1.0, 3.0, 400_000
    left_side = rng.random(n) < s_l / (s_l + s_r)
    x = np.where(left_side, -np.abs(rng.normal(0, s_l, n)), np.abs(rng.normal(0, s_r, n)))
    alpha, left, right = niqe.fit_aggd(x)
    assert abs(alpha - 2.0) < 0.1
    assert abs(left - s_l) < 0.01 and abs(right - s_r) < 0.03


def test_fit_alpha_equals_brute_force_argmin():
    alphas, ratio = _grid()
    assert np.all(np.diff(ratio) > 0)  # the property the vectorised search relies on
    rng = np.random.default_rng(2)
    cases = [
        rng.standard_t(df, size=int(n)) * scale
        for df, n, scale in zip(rng.uniform(0.5, 30, 150), rng.integers(5, 400, 150), rng.uniform(0.1, 5, 150))
    ]
    cases += [rng.normal(0, 1, 50) * rng.normal(0, 1, 50) for _ in range(50)]  # products, like the pair features
    cases += [
        np.array([1.0, -1.0, 1.0, -1.0]),  # r_hat_norm = 1 > every grid ratio -> last alpha (10)
        np.array([1e-3] * 99 + [1e3, -1e3]),  # very heavy tails -> first alpha (0.2)
        np.array([0.5, 1.0, 2.0]),  # no negative samples: NaN left std, MATLAB min -> first (0.2)
        np.zeros(10),
    ]
    got = [niqe.fit_aggd(c)[0] for c in cases]
    want = [_brute_force_alpha(c, alphas, ratio) for c in cases]
    assert got == want
    assert got[-4] == 10.0 and got[-3] == 0.2 and got[-2] == 0.2 and got[-1] == 0.2
    # Vectorised over leading axes: the same fits row by row.
    batch = rng.normal(0, 1, (7, 300)) * rng.normal(0, 1, (7, 300))
    alpha_b, left_b, right_b = niqe.fit_aggd(batch)
    for row, a, lf, rt in zip(batch, alpha_b, left_b, right_b):
        assert (a, lf, rt) == pytest.approx(niqe.fit_aggd(row), rel=1e-12)


# --- block features and the distance ---------------------------------------------------------


def _features_by_hand(mscn_block: np.ndarray) -> list[float]:
    """computefeature.m for one block, written with the grid search above and math.gamma."""
    alphas, ratio = _grid()

    def fit(v):
        a = _brute_force_alpha(v, alphas, ratio)
        neg, pos = v[v < 0], v[v > 0]
        f = math.sqrt(math.gamma(1 / a) / math.gamma(3 / a))
        return a, math.sqrt(np.mean(neg**2)) * f, math.sqrt(np.mean(pos**2)) * f

    a, bl, br = fit(mscn_block.ravel())
    out = [a, (bl + br) / 2]
    for shift in [(0, 1), (1, 0), (1, 1), (1, -1)]:
        a, bl, br = fit((mscn_block * np.roll(mscn_block, shift, axis=(0, 1))).ravel())
        out += [a, (br - bl) * math.gamma(2 / a) / math.gamma(1 / a), bl, br]
    return out


def test_block_features_shape_order_and_values():
    image = _texture((200, 300)).astype(np.float64)  # cut to 192 x 288: 2 x 3 blocks
    features = niqe.block_features(image)
    assert features.shape == (6, 36) and np.isfinite(features).all()
    m1 = niqe.mscn(image[:192, :288])
    # blkproc order: down the first column of blocks, then the next column.
    np.testing.assert_allclose(features[1, :18], _features_by_hand(m1[96:192, 0:96]), rtol=1e-10)
    np.testing.assert_allclose(features[2, :18], _features_by_hand(m1[0:96, 96:192]), rtol=1e-10)
    from srgan_jax.data.imresize import imresize

    m2 = niqe.mscn(imresize(image[:192, :288], scale=0.5))
    np.testing.assert_allclose(features[2, 18:], _features_by_hand(m2[0:48, 48:96]), rtol=1e-10)


def test_flat_block_is_left_out_of_covariance():
    # First 96x96 block black (its MSCN is exactly 0 at both scales), texture from column 112 on.
    image = _texture((96, 480), seed=4).astype(np.float64)
    image[:, :112] = 0.0
    features = niqe.block_features(image)
    assert features.shape == (5, 36)
    nan_rows = np.isnan(features).any(axis=1)
    assert nan_rows.tolist() == [True, False, False, False, False]
    assert features[0, 0] == 0.2 and features[0, 18] == 0.2  # MATLAB min over NaN picks the first alpha
    mu_pris, cov_pris = niqe.pristine_model()["mu"], niqe.pristine_model()["cov"]
    mu = np.nanmean(features, axis=0)  # the NaN block's finite alphas still count in the mean
    cov = np.cov(features[1:], rowvar=False)
    d = mu_pris - mu
    expected = math.sqrt(d @ np.linalg.pinv((cov_pris + cov) / 2) @ d)
    assert niqe.niqe_distance(features) == pytest.approx(expected, rel=1e-9)
    assert niqe.niqe(image.astype(np.uint8), y_channel=False) == pytest.approx(expected, rel=1e-9)


def test_distance_by_hand_and_edge_cases():
    rng = np.random.default_rng(5)
    mu_p = rng.normal(0, 1, 4)
    a = rng.normal(0, 1, (4, 4))
    cov_p = a @ a.T + np.eye(4)
    feats = rng.normal(0, 1, (6, 4))
    d = mu_p - feats.mean(0)
    c = (cov_p + np.cov(feats, rowvar=False)) / 2
    expected = math.sqrt(d @ np.linalg.solve(c, d))
    assert niqe.niqe_distance(feats, mu_p, cov_p) == pytest.approx(expected, rel=1e-10)
    # One block: MATLAB's cov of a single observation is 0.
    one = feats[:1]
    d1 = mu_p - one[0]
    expected_one = math.sqrt(d1 @ np.linalg.solve(cov_p / 2, d1))
    assert niqe.niqe_distance(one, mu_p, cov_p) == pytest.approx(expected_one, rel=1e-10)
    with pytest.raises(ValueError, match="NaN"):
        niqe.niqe_distance(np.full((3, 4), np.nan), mu_p, cov_p)
    with pytest.raises(ValueError, match="features"):
        niqe.niqe_distance(feats[:, :3], mu_p, cov_p)


# --- the public entry point -----------------------------------------------------------------


def test_input_paths_agree():
    gray = _texture((100, 130), seed=6)
    rgb = np.stack([gray] * 3, axis=-1)
    gray_value = niqe.niqe(gray, y_channel=False)
    assert np.isfinite(gray_value) and gray_value > 0
    assert niqe.niqe(gray[..., None], y_channel=False) == gray_value
    assert niqe.niqe(rgb, y_channel=False) == gray_value  # rgb2gray of R = G = B is the gray level
    assert niqe.niqe(gray.astype(np.float64) / 255.0, y_channel=False) == gray_value  # [0, 1] floats
    # Y channel: gray is taken as R = G = B, then rgb2ycbcr.
    y_value = niqe.niqe(rgb)
    assert niqe.niqe(gray) == y_value
    assert y_value == niqe.niqe_distance(niqe.block_features(rgb_to_y(rgb).astype(np.float64)))


def test_colour_conversions_and_crop():
    rng = np.random.default_rng(7)
    rgb = np.stack([_texture((110, 120), seed=s) for s in (8, 9, 10)], axis=-1)
    rgb[..., 2] = rng.integers(0, 256, rgb.shape[:2])
    r, g, b = (rgb[..., c].astype(np.float64) for c in range(3))
    matlab_gray = np.floor(0.298936021293775 * r + 0.587043074451121 * g + 0.114020904255103 * b + 0.5)
    assert niqe.niqe(rgb, y_channel=False) == niqe.niqe_distance(niqe.block_features(matlab_gray))
    y = rgb_to_y(rgb).astype(np.float64)
    assert niqe.niqe(rgb, crop_border=4) == niqe.niqe_distance(niqe.block_features(y[4:-4, 4:-4]))


def test_too_small_and_bad_inputs_raise():
    with pytest.raises(ValueError, match="96x96"):
        niqe.niqe(_texture((95, 200)))
    with pytest.raises(ValueError, match="crop_border=4"):
        niqe.niqe(_texture((100, 100)), crop_border=4)  # 92 x 92 left
    with pytest.raises(ValueError, match="RGB"):
        niqe.niqe(np.zeros((100, 100, 4), np.uint8))
    with pytest.raises(ValueError):
        niqe.niqe(np.zeros((100, 100), np.int32))
    with pytest.raises(ValueError, match="crop_border"):
        niqe.niqe(_texture((100, 100)), crop_border=-1)
    niqe.niqe(_texture((96, 96)))  # exactly one block is fine
