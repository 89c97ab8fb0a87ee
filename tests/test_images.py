"""The one image decoder: colour modes, 16-bit and float samples, EXIF orientation, listing."""

import numpy as np
import pytest
from PIL import Image

from srgan_jax.data.images import list_images, mod_crop, read_image, read_rgb
from srgan_jax.errors import UserError


def test_rgba_keeps_alpha_and_rgb_drops_it(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 4), dtype=np.uint8)
    Image.fromarray(pixels, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png").pixels, pixels)
    np.testing.assert_array_equal(read_rgb(tmp_path / "a.png"), pixels[..., :3])


def test_gray_is_one_channel_and_rgb_replicates_it(tmp_path):
    gray = np.arange(35, dtype=np.uint8).reshape(5, 7)
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    assert read_image(tmp_path / "g.png").pixels.shape == (5, 7, 1)
    np.testing.assert_array_equal(read_rgb(tmp_path / "g.png"), np.repeat(gray[..., None], 3, axis=-1))


def test_sixteen_bit_is_scaled_by_257(tmp_path):
    values = np.array([[0, 257, 65535, 32896]], np.uint16)
    Image.fromarray(values).save(tmp_path / "s.png")
    np.testing.assert_array_equal(read_image(tmp_path / "s.png").pixels[..., 0], [[0, 1, 255, 128]])


def test_float_tiff_in_unit_range_is_scaled_not_blackened(tmp_path):
    values = np.array([[0.0, 0.5, 1.0, 0.25]], np.float32)
    Image.fromarray(values, "F").save(tmp_path / "f.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "f.tif").pixels[..., 0], [[0, 128, 255, 64]])
    Image.fromarray(values * 200, "F").save(tmp_path / "g.tif")  # already 0..255: kept
    np.testing.assert_array_equal(read_image(tmp_path / "g.tif").pixels[..., 0], [[0, 100, 200, 50]])


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(pixels).save(tmp_path / "r.jpg", exif=exif, quality=100)
    assert read_rgb(tmp_path / "r.jpg").shape == (6, 4, 3)


def test_listing_and_mod_crop(tmp_path):
    with pytest.raises(UserError, match="does not exist: fix --x"):
        list_images(tmp_path / "missing", "--x")
    with pytest.raises(UserError, match="no .*images in .*fix --x"):
        list_images(tmp_path, "--x")
    Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(tmp_path / "b.PNG")
    (tmp_path / "notes.txt").write_text("not an image")
    assert [p.name for p in list_images(tmp_path, "--x")] == ["b.PNG"]
    assert mod_crop(np.zeros((10, 7, 3)), 4).shape == (8, 4, 3)
