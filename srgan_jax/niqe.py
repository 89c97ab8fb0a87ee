"""NIQE, the "completely blind" natural-image quality score, following the authors' MATLAB release.

Reference: A. Mittal, R. Soundararajan, A. C. Bovik, "Making a Completely Blind Image Quality
Analyzer", IEEE Signal Processing Letters 20(3), 2013, and their MATLAB release (LIVE lab,
`computequality.m`, `computefeature.m`, `estimateaggdparam.m`). Lower = more natural. This is
the "NIQE" of the PIRM 2018 perceptual-SR protocol (Y channel, border crop = scale).

Algorithm (MATLAB semantics; every step float64):

1. The gray image in [0, 255] is cut to whole 96 x 96 blocks, top-left kept.
2. Two scales: the image, then MATLAB `imresize(img, 0.5)` (bicubic, antialiased;
   `srgan_jax.data.imresize.imresize`, float path, no rounding). Blocks are 96 px at scale 1 and
   48 px at scale 2, so both scales have the same blocks.
3. MSCN coefficients at each scale: mu = imfilter(img, w, 'replicate'),
   sigma = sqrt(|imfilter(img.^2, w, 'replicate') - mu.^2|), mscn = (img - mu) / (sigma + 1),
   with w = fspecial('gaussian', 7, 7/6) normalised to sum 1.
4. 18 features per block and scale (`blkproc` hands each block to `computefeature`):
   the AGGD fit of the block's MSCN values gives [alpha, (beta_l + beta_r) / 2]; then for each
   neighbour shift (0, 1), (1, 0), (1, 1), (1, -1), the MSCN block times its own `circshift`
   (wrap-around *inside the block*) is AGGD-fitted and gives
   [alpha, (beta_r - beta_l) * G(2/alpha) / G(1/alpha), beta_l, beta_r]. A block's 36
   features are its 18 at scale 1 followed by its 18 at scale 2.
5. AGGD fit (`estimateaggdparam`): left_std = sqrt(mean(x[x < 0]^2)), right_std likewise for
   x > 0, g = left_std / right_std, r = mean(|x|)^2 / mean(x^2),
   R = r (g^3 + 1)(g + 1) / (g^2 + 1)^2; alpha = the first grid value of 0.2:0.001:10 minimising
   (G(2/a)^2 / (G(1/a) G(3/a)) - R)^2; beta_{l,r} = {left,right}_std * sqrt(G(1/alpha) / G(3/alpha)).
   (G is the gamma function.) A side with no samples gives NaN stds; MATLAB's `min` then
   returns the first grid point, alpha = 0.2, which is kept.
6. mu_dist = nanmean of the block features, cov_dist = nancov (rows with any NaN left out,
   normalised by N - 1); NIQE = sqrt((mu_pris - mu_dist) pinv((cov_pris + cov_dist) / 2)
   (mu_pris - mu_dist)^T), pinv with MATLAB's tolerance max(size) * eps * largest singular value.

The alpha search is vectorised over all blocks: the ratio G(2/a)^2 / (G(1/a) G(3/a)) is strictly
increasing on the grid (checked when the table is built; a brute-force search is used otherwise),
so a binary search plus a comparison of the two neighbours finds MATLAB's first minimum.

Pristine model: `niqe_pris_params.npz`, shipped inside this package and read at call time.
Provenance (from the README kept beside the model in the project's data folder): 11,850 bytes,
sha256 2a7c182a68c9e7f1b2e2e5ec723279d6f65d912b6fcaf37eb2bf03d7367c4296; the natural-scene-statistics
model estimated by the NIQE authors from their pristine image set and released in
`modelparameters.mat` of the LIVE lab's MATLAB release; this copy is the NumPy conversion kept in
XPixelGroup/BasicSR @ 8d56e3a : basicsr/metrics/niqe_pris_params.npz (data only; no code taken).

    mu_pris_param    1 x 36   mean of the 36 features (18 per scale, 2 scales) over pristine
                              96 x 96 blocks
    cov_pris_param  36 x 36   their covariance
    gaussian_window  7 x 7    MATLAB fspecial('gaussian', 7, 7/6), normalised: the MSCN window

Known value: the MATLAB release (R2021a) gives NIQE = 5.72957 for Set14 `baboon.png` scored on
the Y channel of MATLAB rgb2ycbcr (rounded), no border crop; this module gives 5.72996. The
3.9e-4 left is not explained (a one-level change of a single pixel moves the score by up to
3.4e-4, since alpha takes grid values, so the two baboon files may differ slightly).
"""

from __future__ import annotations

import functools
import importlib.resources
import math

import numpy as np

from srgan_jax.data.imresize import imresize
from srgan_jax.metrics import rgb_to_y, to_uint8

BLOCK_SIZE = 96
FEATURES_PER_SCALE = 18
NUM_SCALES = 2
WINDOW_SIZE = 7
WINDOW_SIGMA = 7.0 / 6.0
# Neighbour shifts of computefeature.m, MATLAB circshift convention (down, right positive).
SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))
_MODEL_FILE = "niqe_pris_params.npz"
# MATLAB's 0.2:0.001:10 (9,801 shape candidates).
_GRID_START_MILLI, _GRID_STOP_MILLI = 200, 10000


def gaussian_window(size: int = WINDOW_SIZE, sigma: float = WINDOW_SIGMA) -> np.ndarray:
    """MATLAB `fspecial('gaussian', size, sigma)`, normalised to sum 1 (float64 [size, size])."""
    half = (size - 1) / 2.0
    y, x = np.mgrid[-half : half + 1, -half : half + 1]
    h = np.exp(-(x * x + y * y) / (2.0 * sigma * sigma))
    h[h < np.finfo(np.float64).eps * h.max()] = 0.0
    h = h / h.sum()
    return h / h.sum()  # computequality.m normalises once more


@functools.lru_cache(maxsize=1)
def _pristine_model() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    resource = importlib.resources.files("srgan_jax") / _MODEL_FILE
    with resource.open("rb") as f, np.load(f) as data:
        mu = np.asarray(data["mu_pris_param"], np.float64).reshape(-1)
        cov = np.asarray(data["cov_pris_param"], np.float64)
        window = np.asarray(data["gaussian_window"], np.float64)
    for array in (mu, cov, window):
        array.setflags(write=False)
    return mu, cov, window


def pristine_model() -> dict[str, np.ndarray]:
    """The shipped pristine model: mu [36], cov [36, 36], gaussian_window [7, 7] (read-only float64)."""
    mu, cov, window = _pristine_model()
    return {"mu": mu, "cov": cov, "gaussian_window": window}


class _ShapeTable:
    """The alpha grid and the gamma-function ratios that estimateaggdparam.m evaluates on it."""

    def __init__(self) -> None:
        self.alpha = np.arange(_GRID_START_MILLI, _GRID_STOP_MILLI + 1, dtype=np.float64) / 1000.0
        g1 = np.array([math.gamma(1.0 / a) for a in self.alpha])
        g2 = np.array([math.gamma(2.0 / a) for a in self.alpha])
        g3 = np.array([math.gamma(3.0 / a) for a in self.alpha])
        self.ratio = g2 * g2 / (g1 * g3)  # r_gam
        self.beta_factor = np.sqrt(g1 / g3)  # std -> AGGD scale beta
        self.mean_factor = g2 / g1  # (beta_r - beta_l) -> meanparam
        self.increasing = bool(np.all(np.diff(self.ratio) > 0))

    def nearest(self, target: np.ndarray) -> np.ndarray:
        """Index of the first minimum of (ratio - t)^2 per element, as MATLAB's `min` returns it.

        Non-finite targets give index 0 (MATLAB: min over all-NaN or all-Inf picks the first).
        """
        target = np.asarray(target, np.float64)
        finite = np.isfinite(target)
        safe = np.where(finite, target, 0.0)
        if self.increasing:
            hi = np.clip(np.searchsorted(self.ratio, safe, side="left"), 0, len(self.ratio) - 1)
            lo = np.maximum(hi - 1, 0)
            take_lo = (self.ratio[lo] - safe) ** 2 <= (self.ratio[hi] - safe) ** 2
            index = np.where(take_lo, lo, hi)
        else:  # pragma: no cover - the grid is monotone; kept for safety
            flat = safe.reshape(-1)
            index = np.array(
                [np.argmin((self.ratio - t) ** 2) for t in flat], dtype=np.int64
            ).reshape(safe.shape)
        return np.where(finite, index, 0)


@functools.lru_cache(maxsize=1)
def _shape_table() -> _ShapeTable:
    return _ShapeTable()


def _replicate_filter(images: np.ndarray, window: np.ndarray) -> np.ndarray:
    """MATLAB imfilter(x, window, 'replicate') (correlation, same size) on [..., H, W]."""
    k = window.shape[0]
    r = k // 2
    h, w = images.shape[-2:]
    pad = [(0, 0)] * (images.ndim - 2) + [(r, r), (r, r)]
    padded = np.pad(images, pad, mode="edge")
    out = np.zeros(images.shape, np.float64)
    for i in range(k):
        for j in range(k):
            out += window[i, j] * padded[..., i : i + h, j : j + w]
    return out


def mscn(image: np.ndarray, window: np.ndarray | None = None) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients of a float64 gray image [H, W].

    (img - mu) / (sigma + 1) with mu and sigma the local Gaussian-weighted mean and standard
    deviation (7x7, sigma 7/6, replicate borders); input in [0, 255]. Returns float64 [H, W].
    """
    image = np.asarray(image, np.float64)
    if image.ndim != 2:
        raise ValueError(f"niqe.mscn: expected a gray [H, W] image, got shape {image.shape}")
    window = gaussian_window() if window is None else np.asarray(window, np.float64)
    mu, mean_sq = _replicate_filter(np.stack([image, image * image]), window)
    sigma = np.sqrt(np.abs(mean_sq - mu * mu))
    return (image - mu) / (sigma + 1.0)


def _fit_aggd_index(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AGGD moment fit along the last axis: (grid index of alpha, left_std, right_std)."""
    x = np.asarray(x, np.float64)
    sq = x * x
    negative, positive = x < 0, x > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        left_std = np.sqrt(np.where(negative, sq, 0.0).sum(-1) / negative.sum(-1))
        right_std = np.sqrt(np.where(positive, sq, 0.0).sum(-1) / positive.sum(-1))
        gamma_hat = left_std / right_std
        r_hat = np.mean(np.abs(x), axis=-1) ** 2 / np.mean(sq, axis=-1)
        r_hat_norm = r_hat * (gamma_hat**3 + 1.0) * (gamma_hat + 1.0) / (gamma_hat**2 + 1.0) ** 2
    return _shape_table().nearest(r_hat_norm), left_std, right_std


def fit_aggd(x: np.ndarray) -> tuple[np.ndarray | float, np.ndarray | float, np.ndarray | float]:
    """Asymmetric generalised Gaussian fit of samples, MATLAB `estimateaggdparam` (moment matching).

    Args:
      x: samples along the last axis; leading axes are independent fits (e.g. [n_blocks, n]).

    Returns:
      (alpha, left_std, right_std): shape alpha on the grid 0.2:0.001:10, and the root mean
      square of the negative / positive samples (NaN when a side has none). The AGGD scales are
      beta = std * sqrt(G(1/alpha) / G(3/alpha)). Floats for 1-D input, arrays otherwise.
    """
    index, left_std, right_std = _fit_aggd_index(x)
    alpha = _shape_table().alpha[index]
    if np.ndim(alpha) == 0:
        return float(alpha), float(left_std), float(right_std)
    return alpha, left_std, right_std


def _to_blocks(image: np.ndarray, block: int) -> np.ndarray:
    """[R*b, C*b] -> [R*C, b, b], blocks in MATLAB column-major order (down the columns first)."""
    rows, cols = image.shape[0] // block, image.shape[1] // block
    return image.reshape(rows, block, cols, block).transpose(2, 0, 1, 3).reshape(rows * cols, block, block)


def scale_features(structdis: np.ndarray, block: int) -> np.ndarray:
    """The 18 computefeature.m features of each block of an MSCN map whose sides are multiples of `block`.

    Returns float64 [n_blocks, 18]: [alpha, (beta_l + beta_r) / 2] of the block, then for each of
    SHIFTS [alpha, meanparam, beta_l, beta_r] of block * circshift(block, shift).
    """
    structdis = np.asarray(structdis, np.float64)
    if structdis.ndim != 2 or structdis.shape[0] % block or structdis.shape[1] % block or structdis.size == 0:
        raise ValueError(f"niqe: MSCN map {structdis.shape} is not a whole number of {block}x{block} blocks")
    table = _shape_table()
    blocks = _to_blocks(structdis, block)
    n = blocks.shape[0]
    features = np.empty((n, FEATURES_PER_SCALE), np.float64)
    index, left, right = _fit_aggd_index(blocks.reshape(n, -1))
    factor = table.beta_factor[index]
    features[:, 0] = table.alpha[index]
    features[:, 1] = (left * factor + right * factor) / 2.0
    for s, shift in enumerate(SHIFTS):
        pair = blocks * np.roll(blocks, shift, axis=(1, 2))
        index, left, right = _fit_aggd_index(pair.reshape(n, -1))
        beta_l, beta_r = left * table.beta_factor[index], right * table.beta_factor[index]
        col = 2 + 4 * s
        features[:, col] = table.alpha[index]
        features[:, col + 1] = (beta_r - beta_l) * table.mean_factor[index]
        features[:, col + 2] = beta_l
        features[:, col + 3] = beta_r
    return features


def block_features(image: np.ndarray) -> np.ndarray:
    """NIQE features of every 96 x 96 block of a gray float image in [0, 255].

    The image is cut to whole blocks (top-left kept). Returns float64 [n_blocks, 36]: the 18
    scale-1 features, then the 18 features of the same block at half resolution (48 x 48 block
    of MATLAB imresize(img, 0.5)). Blocks are ordered down the columns first, as blkproc does.
    """
    image = np.asarray(image, np.float64)
    if image.ndim != 2:
        raise ValueError(f"niqe: expected a gray [H, W] image, got shape {image.shape}")
    rows, cols = image.shape[0] // BLOCK_SIZE, image.shape[1] // BLOCK_SIZE
    if rows < 1 or cols < 1:
        raise ValueError(
            f"niqe: image {image.shape[0]}x{image.shape[1]} (after any border crop) is smaller than"
            f" one {BLOCK_SIZE}x{BLOCK_SIZE} block"
        )
    image = image[: rows * BLOCK_SIZE, : cols * BLOCK_SIZE]
    window = gaussian_window()
    per_scale = []
    for scale in range(1, NUM_SCALES + 1):
        per_scale.append(scale_features(mscn(image, window), BLOCK_SIZE // scale))
        if scale < NUM_SCALES:
            image = imresize(image, scale=0.5)
    return np.concatenate(per_scale, axis=1)


def _matlab_pinv(matrix: np.ndarray) -> np.ndarray:
    """MATLAB pinv: singular values <= max(size) * eps * s_max are treated as zero."""
    u, s, vt = np.linalg.svd(matrix)
    tol = max(matrix.shape) * np.finfo(np.float64).eps * (s[0] if s.size else 0.0)
    keep = s > tol
    return (vt[keep].T / s[keep]) @ u[:, keep].T


def niqe_distance(
    features: np.ndarray, mu_pris: np.ndarray | None = None, cov_pris: np.ndarray | None = None
) -> float:
    """NIQE from block features: Mahalanobis-like distance of the image's fit to the pristine model.

    Args:
      features: float [n_blocks, 36] (`block_features`); NaN entries are allowed.
      mu_pris, cov_pris: the pristine model ([36], [36, 36]); the shipped one by default.

    Returns:
      sqrt(d pinv((cov_pris + cov_dist) / 2) d^T) with d = mu_pris - nanmean(features) and
      cov_dist the covariance (N - 1 normalisation; N when N = 1) of the blocks without NaN.
    """
    if mu_pris is None or cov_pris is None:
        model_mu, model_cov, _ = _pristine_model()
        mu_pris = model_mu if mu_pris is None else mu_pris
        cov_pris = model_cov if cov_pris is None else cov_pris
    features = np.asarray(features, np.float64)
    mu_pris = np.asarray(mu_pris, np.float64).reshape(-1)
    cov_pris = np.asarray(cov_pris, np.float64)
    if features.ndim != 2 or features.shape[1] != mu_pris.size:
        raise ValueError(f"niqe: expected features [n_blocks, {mu_pris.size}], got shape {features.shape}")
    complete = features[~np.isnan(features).any(axis=1)]
    if complete.shape[0] == 0:
        raise ValueError("niqe: every block has undefined (NaN) features, e.g. a flat image; NIQE is undefined")
    mu_dist = np.nanmean(features, axis=0)  # finite: `complete` has a row in every column
    centred = complete - complete.mean(axis=0)
    cov_dist = centred.T @ centred / max(complete.shape[0] - 1, 1)
    diff = mu_pris - mu_dist
    value = diff @ _matlab_pinv((cov_pris + cov_dist) / 2.0) @ diff
    return float(np.sqrt(max(value, 0.0)))


def _gray_uint8(image: np.ndarray, y_channel: bool) -> np.ndarray:
    """The uint8 [H, W] plane that is scored (see `niqe`)."""
    image = to_uint8(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    is_gray = image.ndim == 2
    if not is_gray and (image.ndim != 3 or image.shape[-1] != 3):
        raise ValueError(f"niqe: expected an [H, W, 3] RGB or [H, W] gray image, got shape {image.shape}")
    if y_channel:
        return rgb_to_y(image)
    if is_gray:
        return image
    rgb = image.astype(np.float64)
    gray = 0.298936021293775 * rgb[..., 0] + 0.587043074451121 * rgb[..., 1] + 0.114020904255103 * rgb[..., 2]
    return np.clip(np.floor(gray + 0.5), 0, 255).astype(np.uint8)


def niqe(image: np.ndarray, crop_border: int = 0, y_channel: bool = True) -> float:
    """NIQE of one image (PIRM protocol conventions); lower = more natural.

    Args:
      image: uint8 RGB [H, W, 3] or gray [H, W] / [H, W, 1], values in [0, 255]; float input in
        [0, 1] is clipped and rounded to 8 bits first (`metrics.to_uint8`).
      crop_border: pixels removed from every side before scoring (the SR scale in the PIRM
        protocol; 0 = none).
      y_channel: score the Y channel of MATLAB `rgb2ycbcr` (rounded, range [16, 235]; gray input
        is taken as R = G = B first, as the evaluation protocol does). False: a gray image is
        scored as it is, RGB through MATLAB `rgb2gray` rounded to 8 bits
        (0.298936021 R + 0.587043074 G + 0.114020904 B).

    The gray plane (float64, [0, 255]) is cut to whole 96 x 96 blocks, top-left kept.

    Returns:
      NIQE against the shipped pristine model (the MATLAB release's `modelparameters.mat`).

    Raises:
      ValueError: bad shape/dtype, negative crop, or a cropped image smaller than 96 x 96.
    """
    if crop_border < 0:
        raise ValueError(f"niqe: crop_border must be >= 0, got {crop_border}")
    gray = _gray_uint8(image, y_channel).astype(np.float64)
    if crop_border:
        gray = gray[crop_border:-crop_border, crop_border:-crop_border]
    if gray.shape[0] < BLOCK_SIZE or gray.shape[1] < BLOCK_SIZE:
        raise ValueError(
            f"niqe: image {np.shape(image)[0]}x{np.shape(image)[1]} with crop_border={crop_border} leaves"
            f" {max(gray.shape[0], 0)}x{max(gray.shape[1], 0)}, smaller than one {BLOCK_SIZE}x{BLOCK_SIZE} block"
        )
    return niqe_distance(block_features(gray))
