"""MATLAB imresize semantics: hand-computed weights, shapes, the JAX path, the shipped Set5 LR."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from srgan_jax.data.imresize import imresize, resize_matrix, upscale_nearest


def _data_dir() -> Path:
    return Path(os.environ.get("SRGAN_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")


def _keys(x: float) -> float:
    """Keys (1981) cubic, a = -0.5, written out piece by piece."""
    x = abs(x)
    if x <= 1:
        return 1.5 * x**3 - 2.5 * x**2 + 1
    if x < 2:
        return -0.5 * x**3 + 2.5 * x**2 - 4 * x + 2
    return 0.0


def _mirror(index: int, n: int) -> int:
    """1-based symmetric padding (x[0] = x[1], x[-1] = x[2], x[n+1] = x[n]) -> 0-based column."""
    while index < 1 or index > n:
        index = 1 - index if index < 1 else 2 * n + 1 - index
    return index - 1


def test_upscale_x2_weights_by_hand():
    # in=4, out=8: u_i = i/2 + 1/4. Row 1: u=0.75, taps j=-1,0,1,2 at distances 1.75, 0.75,
    # -0.25, -1.25 -> -3/128, 29/128, 111/128, -9/128 (sum 1). Symmetric fold: j=0 -> 1,
    # j=-1 -> 2, so row 1 = [29+111, -9-3] / 128 = [1.09375, -0.09375, 0, 0]. Rows 2-4 likewise;
    # rows 5-8 are rows 4-1 reversed (the grid is symmetric).
    a, b, c, d = -3 / 128, 29 / 128, 111 / 128, -9 / 128
    top = np.array(
        [
            [b + c, d + a, 0, 0],
            [c + d, b, a, 0],
            [b + a, c, d, 0],
            [d, c, b, a],
        ]
    )
    expected = np.concatenate([top, top[::-1, ::-1]])
    assert expected[0].tolist() == [1.09375, -0.09375, 0, 0]
    np.testing.assert_allclose(resize_matrix(4, 8, 2.0), expected, atol=1e-15)


def test_downscale_x4_weights_by_hand():
    # in=8, out=2, scale 1/4: antialiased kernel h(x) = cubic(x/4)/4 over |x| < 8, centres
    # u_i = 4 i - 1.5 (2.5 and 6.5); taps beyond the edges fold back symmetrically.
    expected = np.zeros((2, 8))
    for row, u in enumerate([2.5, 6.5]):
        for j in range(-10, 20):
            expected[row, _mirror(j, 8)] += _keys((u - j) / 4) / 4
    np.testing.assert_allclose(expected.sum(axis=1), 1.0, atol=1e-15)  # needs no normalising
    np.testing.assert_allclose(resize_matrix(8, 2, 0.25), expected, atol=1e-15)
    column = np.arange(8.0)[:, None]
    np.testing.assert_allclose(imresize(column, output_shape=(2, 1)), expected @ column)


@pytest.mark.parametrize(
    ("shape", "kwargs", "out"),
    [
        ((7, 5), {"scale": 0.25}, (2, 2)),
        ((13, 9), {"scale": 4}, (52, 36)),
        ((96, 96), {"scale": 0.25}, (24, 24)),
        ((97, 95), {"scale": 0.25}, (25, 24)),
        ((7, 5), {"output_shape": (3, 10)}, (3, 10)),
        ((13, 9), {"output_shape": (13, 4)}, (13, 4)),
    ],
)
def test_output_shapes(shape, kwargs, out):
    assert imresize(np.zeros(shape + (3,), np.uint8), **kwargs).shape == out + (3,)
    assert imresize(np.zeros(shape), **kwargs).shape == out


@pytest.mark.parametrize("scale", [0.25, 0.5, 2, 4])
def test_constant_stays_constant(scale):
    np.testing.assert_array_equal(imresize(np.full((13, 9, 3), 77, np.uint8), scale=scale), 77)
    np.testing.assert_allclose(imresize(np.full((13, 9), 0.3), scale=scale), 0.3, atol=1e-12)


def test_scale_one_is_identity():
    image = np.random.default_rng(0).integers(0, 256, (11, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(imresize(image, scale=1), image)


def test_down_then_up_smooth_ramp():
    y, x = np.mgrid[0:64, 0:48] / 64.0
    ramp = 0.2 + 0.5 * x + 0.2 * y
    back = imresize(imresize(ramp, scale=0.25), scale=4)
    assert back.shape == ramp.shape
    # A linear ramp is reproduced away from the borders (the symmetric fold bends it there).
    np.testing.assert_allclose(back[8:-8, 8:-8], ramp[8:-8, 8:-8], atol=1e-3)


def test_upscale_nearest_blocks():
    image = np.array([[1, 2], [3, 4]], np.uint8)
    np.testing.assert_array_equal(
        upscale_nearest(image, 2), [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    )
    assert upscale_nearest(np.zeros((5, 3, 3), np.uint8), 4).shape == (20, 12, 3)


def test_interior_matches_shipped_set5_lr():
    data = _data_dir()
    if not (data / "Set5").is_dir() or not (data / "Set5_LR_x4").is_dir():
        pytest.skip(f"Set5 and Set5_LR_x4 not found under {data} (set SRGAN_DATA_DIR)")
    for hr_path in sorted((data / "Set5").glob("*.png")):
        hr = np.asarray(Image.open(hr_path).convert("RGB"))
        shipped = np.asarray(Image.open(data / "Set5_LR_x4" / hr_path.name).convert("RGB")).astype(int)
        lr = imresize(hr, scale=0.25).astype(int)
        # The shipped files clamp at the border where MATLAB mirrors; 2 LR pixels = the kernel reach.
        assert np.abs(lr - shipped)[2:-2, 2:-2].max() <= 1, hr_path.name
