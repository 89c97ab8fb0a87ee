"""Upscaling: tiling equals the whole-image forward pass, fixed compile shapes, image files, CLI."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import srgan_jax
from srgan_jax import checkpoints, cli, metrics
from srgan_jax.config import GeneratorSpec
from srgan_jax.data.images import read_image
from srgan_jax.data.imresize import imresize, upscale_nearest
from srgan_jax.errors import UserError
from srgan_jax.metrics import sr_to_uint8
from srgan_jax.networks.generator import Generator
from srgan_jax.upscaling import engine, figures, files

# LR receptive-field radius of the 1-block generator: 9x9 head (4) + 2 block convs (2) + body
# conv (1) + LR upsample conv (1) + x2 upsample conv (0.5) + 9x9 tail at x4 (1), rounded up.
RECEPTIVE_RADIUS = 10


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """uint8 [h, w, 3]: bicubic-enlarged noise (image-like, unlike white noise)."""
    small = np.random.default_rng(seed).integers(0, 256, size=(max(h // 6, 2), max(w // 6, 2), 3), dtype=np.uint8)
    return np.array(Image.fromarray(small).resize((w, h), Image.BICUBIC))


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint) -> Path:
    """conftest's 1-block, 8-feature generator with non-trivial BatchNorm statistics."""
    return tiny_checkpoint


@pytest.fixture(scope="module")
def model(checkpoint) -> engine.Upscaler:
    return engine.load_generator(checkpoint, tile=48, overlap=12, batch=2)


def nearest_upscaler(**tiling) -> engine.Upscaler:
    """An 'identity' generator: nearest-neighbour x4 of the LR, mapped to [-1, 1]."""

    def apply(variables, lr, valid):
        return jnp.repeat(jnp.repeat(lr, 4, axis=1), 4, axis=2) * 2.0 - 1.0

    return engine.Upscaler(jax.jit(apply), None, 4, **tiling)


def whole_image(upscaler: engine.Upscaler, lr: np.ndarray) -> np.ndarray:
    """The untiled reference: the plain generator on the exact image."""
    sr = Generator(**upscaler.spec.to_dict()).apply(upscaler.variables, lr[None].astype(np.float32) / 255.0, train=False)
    return sr_to_uint8(np.asarray(sr[0]))


def interior_edges(length: int, tile: int, overlap: int) -> list[int]:
    starts = engine.tile_starts(length, tile, overlap)
    return [s for s in starts if s > 0] + [s + tile for s in starts if s + tile < length]


def seam_mask(h: int, w: int, tile: int, overlap: int, scale: int = 4) -> np.ndarray:
    """Output pixels within RECEPTIVE_RADIUS LR pixels of an interior tile edge."""

    def near(length):
        lr = np.zeros(length, bool)
        for edge in interior_edges(length, tile, overlap):
            lr[max(edge - RECEPTIVE_RADIUS, 0):edge + RECEPTIVE_RADIUS] = True
        return np.repeat(lr, scale)

    return near(h)[:, None] | near(w)[None, :]


# --------------------------------------------------------------------------- tiling arithmetic


@pytest.mark.parametrize("length,tile,overlap", [(130, 48, 12), (49, 48, 12), (1000, 128, 16), (300, 64, 0),
                                                 (97, 32, 31)])
def test_tiles_cover_the_image_and_weights_sum_to_one(length, tile, overlap):
    starts = engine.tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] == length - tile
    assert all(a + tile - b >= overlap for a, b in zip(starts, starts[1:]))
    total = np.zeros(length * 4)
    for start, weight in zip(starts, engine.blend_weights(starts, tile, 4)):
        assert weight.min() >= 0
        total[start * 4:(start + tile) * 4] += weight
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_uint8_conversion_is_exact_for_every_level():
    levels = np.arange(256)
    np.testing.assert_array_equal(sr_to_uint8(levels / 127.5 - 1.0), levels)
    np.testing.assert_array_equal(sr_to_uint8(np.array([-1.5, 1.5])), [0, 255])


@pytest.mark.parametrize("tiling", [dict(tile=16, overlap=4, batch=3), dict(tile=24, overlap=10, batch=1),
                                    dict(tile=0), dict(tile=128)])
def test_tiling_pipeline_is_colour_neutral(tiling):
    # With an identity-like generator the whole pipeline (padding, tiling, blending,
    # quantisation) must give exactly the nearest-neighbour upscale: no shift, no seam.
    upscaler = nearest_upscaler(**tiling)
    image = smooth_image(50, 37)
    image[:20, :20] = (200, 30, 90)  # flat colour patches
    image[30:, 20:] = (0, 255, 17)
    np.testing.assert_array_equal(upscaler(image), upscale_nearest(image, 4))
    gray = image[..., 1]
    np.testing.assert_array_equal(upscaler(gray), upscale_nearest(np.stack([gray] * 3, -1), 4))
    rgba = np.concatenate([image, smooth_image(50, 37, seed=3)[..., :1]], -1)
    sr = upscaler(rgba)
    np.testing.assert_array_equal(sr[..., :3], upscale_nearest(image, 4))
    np.testing.assert_array_equal(sr[..., 3], imresize(rgba[..., 3], scale=4))


def test_resize_alpha_equals_imresize_in_bands():
    alpha = smooth_image(150, 41, seed=5)[..., 0]  # 600 output rows: two bands
    np.testing.assert_array_equal(engine.resize_alpha(alpha, 4), imresize(alpha, scale=4))


def test_bad_tiling_is_a_user_error():
    with pytest.raises(UserError, match="overlap"):
        nearest_upscaler(tile=16, overlap=16)
    with pytest.raises(UserError, match="--batch"):
        nearest_upscaler(batch=0)


# --------------------------------------------------------------------------- the trained generator


def test_tiled_output_equals_the_whole_image_forward_pass(model):
    lr = smooth_image(130, 110, seed=1)
    tiled = model(lr).astype(int)
    reference = whole_image(model, lr).astype(int)
    assert tiled.shape == reference.shape == (520, 440, 3)
    diff = np.abs(tiled - reference).max(axis=-1)
    seams = seam_mask(130, 110, tile=48, overlap=12)
    assert diff[~seams].max() <= 1
    # Within the receptive field of a tile edge the zero padding differs from the image;
    # skipping each strip's outer quarter keeps the error at 2/255 here (mean 0.06/255).
    # A linear ramp over the whole overlap gave 13/255.
    assert diff[seams].max() <= 2 and diff[seams].mean() < 0.1, (diff[seams].max(), diff[seams].mean())


def test_masked_apply_ignores_the_padding(model):
    lr = smooth_image(20, 30).astype(np.float32) / 255.0
    padded = np.random.default_rng(0).uniform(size=(1, 32, 48, 3)).astype(np.float32)
    padded[0, :20, :30] = lr
    sr = model.apply(model.variables, padded, np.array([20, 30], np.int32))[0, :80, :120]
    exact = Generator(**model.spec.to_dict()).apply(model.variables, lr[None], train=False)[0]
    np.testing.assert_allclose(sr, exact, atol=1e-5)


@pytest.mark.parametrize("h,w", [(20, 30), (40, 33), (30, 130)])
def test_padded_images_equal_the_exact_shape_forward_pass(model, h, w):
    # Bucketed (20x30 -> 32x32, 40x33 -> 48x48) or a side shorter than the tile (30 -> 48).
    lr = smooth_image(h, w, seed=2)
    diff = np.abs(model(lr).astype(int) - whole_image(model, lr).astype(int)).max(axis=-1)
    assert diff[~seam_mask(h, w, tile=48, overlap=12)].max() <= 1
    assert diff.max() <= 2


def test_flat_colour_has_no_tile_dependent_shift(model):
    lr = np.empty((130, 110, 3), np.uint8)
    lr[...] = (180, 60, 120)
    tiled = model(lr).astype(float)
    reference = whole_image(model, lr).astype(float)
    # Away from the image border the output is one 4x4 pattern (one colour per pixel-shuffle
    # phase) repeated, whatever tile it came from.
    margin = 4 * RECEPTIVE_RADIUS
    inner = tiled[margin:-margin, margin:-margin]
    assert np.abs(inner - reference[margin:-margin, margin:-margin]).max() <= 1
    phases = inner.reshape(inner.shape[0] // 4, 4, inner.shape[1] // 4, 4, 3)
    assert np.ptp(phases, axis=(0, 2)).max() <= 1


def test_compiles_once_per_tile_shape(checkpoint):
    upscaler = engine.load_generator(checkpoint, tile=48, overlap=12, batch=2)
    # Tiled images share [2, 48, 48]; small ones are bucketed to multiples of 32 (<= 48).
    sizes = [(130, 110), (60, 200), (49, 49), (20, 30), (25, 17), (40, 33), (48, 48), (33, 20)]
    expected = {(2, 48, 48), (1, 32, 32), (1, 48, 48), (1, 48, 32)}
    for h, w in sizes:
        assert upscaler(smooth_image(h, w)).shape == (4 * h, 4 * w, 3)
    assert upscaler.apply._cache_size() == len(expected)
    for h, w in [(100, 77), (31, 9), (47, 45), (300, 50)]:
        upscaler(smooth_image(h, w))
    assert upscaler.apply._cache_size() == len(expected)


def test_load_generator_is_exported_and_reads_the_model_config(checkpoint):
    upscaler = srgan_jax.load_generator(str(checkpoint))
    assert upscaler.scale == 4 and upscaler.spec == GeneratorSpec(num_blocks=1, features=8, scale=4)
    bf16 = srgan_jax.load_generator(checkpoint / "checkpoints" / "2", dtype="bfloat16", tile=0)
    lr = smooth_image(24, 20)
    assert np.abs(bf16(lr).astype(int) - upscaler(lr).astype(int)).mean() < 2


def test_missing_checkpoints_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="the shipped generator no_such_model is not installed .*pass --checkpoint"):
        checkpoints.shipped_checkpoint("no_such_model")
    with pytest.raises(UserError, match="does not exist"):
        engine.load_generator(tmp_path / "nope")
    with pytest.raises(UserError, match="no generator checkpoint"):
        engine.load_generator(tmp_path)


# --------------------------------------------------------------------------- upscale command


@pytest.fixture
def identity(monkeypatch) -> engine.Upscaler:
    """Make the CLI use the identity-like generator, so file handling can be checked exactly."""
    upscaler = nearest_upscaler(tile=16, overlap=4)
    monkeypatch.setattr(engine, "load_generator", lambda *args, **kwargs: upscaler)
    return upscaler


def test_bad_files_are_reported_and_the_others_written(tmp_path, identity, capsys):
    images = tmp_path / "in"
    (images / "sub").mkdir(parents=True)
    good = smooth_image(20, 24)
    Image.fromarray(good).save(images / "a.png")
    Image.fromarray(good).save(images / "sub" / "b.bmp")
    Image.fromarray(good).save(tmp_path / "c.png")
    data = (images / "a.png").read_bytes()
    (images / "corrupt.png").write_bytes(data[:len(data) // 2])
    (images / "notes.png").write_text("not an image\n")
    (images / "ignored.txt").write_text("not an image either\n")
    code = cli.main(["upscale", str(images), str(tmp_path / "c.png"), str(tmp_path / "missing.png"),
                     "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1
    for name in ("corrupt.png", "notes.png", "missing.png"):
        assert len([line for line in err.splitlines() if name in line]) == 1, err
    for written in ("out/a_x4.png", "out/sub/b_x4.bmp", "out/c_x4.png"):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / written)), upscale_nearest(good, 4))
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == ["a_x4.png", "b_x4.bmp", "c_x4.png", "sub"]


def test_output_over_an_input_is_refused(tmp_path, identity, capsys):
    image = tmp_path / "a.png"
    Image.fromarray(smooth_image(20, 24)).save(image)
    before = image.read_bytes()
    assert cli.main(["upscale", str(image), "-o", str(image)]) == 2
    err = capsys.readouterr().err
    assert "would overwrite an input file" in err and "every input was skipped" in err
    assert "no images to upscale" not in err
    assert image.read_bytes() == before
    (tmp_path / "a_x4.png").write_bytes(before)  # an input that is also another input's output
    assert cli.main(["upscale", str(image), str(tmp_path / "a_x4.png"), "-o", str(tmp_path)]) == 1
    assert "a_x4.png would overwrite an input file" in capsys.readouterr().err
    assert (tmp_path / "a_x4.png").read_bytes() == before


def test_a_rerun_into_the_input_folder_does_not_compound(tmp_path, identity, capsys):
    (tmp_path / "sub").mkdir()
    image = smooth_image(20, 24)
    Image.fromarray(image).save(tmp_path / "a.png")
    Image.fromarray(image).save(tmp_path / "sub" / "b.png")
    Image.fromarray(image).save(tmp_path / "photo_x4.png")  # no photo.* beside it: an input
    for extra in ([], [], ["--format", "bmp"]):
        assert cli.main(["upscale", str(tmp_path), "-o", str(tmp_path), *extra]) == 0
        assert "would overwrite" not in capsys.readouterr().err
    names = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.*"))
    assert names == ["a.png", "a_x4.bmp", "a_x4.png", "photo_x4.png", "photo_x4_x4.bmp", "photo_x4_x4.png",
                     "sub/b.png", "sub/b_x4.bmp", "sub/b_x4.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a_x4.png")), upscale_nearest(image, 4))


def test_successful_run_exits_0_and_prints_each_output(tmp_path, identity, capsys):
    Image.fromarray(smooth_image(20, 24)).save(tmp_path / "a.png")
    assert cli.main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "big.jpg")]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "big.jpg")]
    assert Image.open(tmp_path / "big.jpg").format == "JPEG"
    assert cli.main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--format", "webp"]) == 0
    assert Image.open(tmp_path / "o" / "a_x4.webp").size == (96, 80)
    assert cli.main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--format", "gif"]) == 2
    assert "--format gif is not one of png, jpeg" in capsys.readouterr().err


def test_an_output_folder_inside_the_input_folder_is_not_read_back(tmp_path, identity, capsys):
    Image.fromarray(smooth_image(20, 24)).save(tmp_path / "a.png")
    for _ in range(2):
        assert cli.main(["upscale", str(tmp_path), "-o", str(tmp_path / "up")]) == 0
    assert sorted(p.name for p in (tmp_path / "up").iterdir()) == ["a_x4.png"]


def _upscale_one(tmp_path: Path, name: str) -> Image.Image:
    assert cli.main(["upscale", str(tmp_path / name), "-o", str(tmp_path / "out")]) == 0
    stem, suffix = name.rsplit(".", 1)
    return Image.open(tmp_path / "out" / f"{stem}_x4.{suffix}")


def test_gray_rgba_16bit_palette_and_cmyk_inputs(tmp_path, identity):
    rgb = smooth_image(20, 24)
    gray = rgb[..., 0]
    Image.fromarray(gray).save(tmp_path / "gray.png")
    out = _upscale_one(tmp_path, "gray.png")
    assert out.mode == "L"  # gray in, gray out
    np.testing.assert_array_equal(np.asarray(out), upscale_nearest(gray, 4))

    alpha = smooth_image(20, 24, seed=2)[..., 0]
    Image.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "rgba.png")
    out = _upscale_one(tmp_path, "rgba.png")
    assert out.mode == "RGBA" and out.size == (96, 80)
    np.testing.assert_array_equal(np.asarray(out)[..., :3], upscale_nearest(rgb, 4))
    np.testing.assert_array_equal(np.asarray(out)[..., 3], imresize(alpha, scale=4))

    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "deep.png")  # 16-bit gray PNG
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    np.testing.assert_array_equal(np.asarray(_upscale_one(tmp_path, "deep.png")), upscale_nearest(gray, 4))

    Image.fromarray(rgb).quantize(16).save(tmp_path / "palette.png")
    palette_rgb = np.asarray(Image.open(tmp_path / "palette.png").convert("RGB"))
    out = _upscale_one(tmp_path, "palette.png")
    assert out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out), upscale_nearest(palette_rgb, 4))

    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    out = _upscale_one(tmp_path, "cmyk.jpg")
    assert out.mode == "RGB" and out.size == (96, 80)


def test_exif_rotated_jpeg_is_upscaled_upright(tmp_path, identity):
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:10] = (255, 0, 0)  # top half red, bottom half blue
    stored[10:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: the top becomes the right side
    Image.fromarray(stored).save(tmp_path / "photo.jpg", exif=exif, quality=95)
    out = np.asarray(_upscale_one(tmp_path, "photo.jpg")).astype(int)
    assert out.shape == (160, 80, 3)
    left, right = out[:, :30].mean(axis=(0, 1)), out[:, 50:].mean(axis=(0, 1))
    assert right[0] > 200 and right[2] < 50 and left[2] > 200 and left[0] < 50


def test_upscale_with_a_real_checkpoint(checkpoint, tmp_path, capsys):
    for i, (h, w) in enumerate([(20, 24), (50, 31)]):
        Image.fromarray(smooth_image(h, w, seed=i)).save(tmp_path / f"im{i}.png")
    code = cli.main(["upscale", str(tmp_path), "-o", str(tmp_path / "out"), "--checkpoint", str(checkpoint),
                     "--tile", "32", "--overlap", "8"])
    assert code == 0
    assert Image.open(tmp_path / "out" / "im0_x4.png").size == (96, 80)
    assert Image.open(tmp_path / "out" / "im1_x4.png").size == (124, 200)
    assert len(capsys.readouterr().out.splitlines()) == 2


# --------------------------------------------------------------------------- bounds and progress


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height RGB but holds almost no pixel data (it cannot be decoded)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(64)))
                     + chunk(b"IEND", b""))


def test_the_estimate_gives_output_size_memory_and_time(identity):
    small, big = identity.estimate(500, 500), identity.estimate(2000, 2000)
    assert (big.width, big.height, big.output_bytes) == (8000, 8000, 192_000_000)
    assert identity.estimate(2000, 2000, alpha=True).output_bytes == 256_000_000
    # At least the output, PIL's 4-byte copy of it and the process itself.
    assert big.peak_bytes > 192e6 + 256e6 + engine._BASE_BYTES
    assert big.seconds > 0 and big.seconds == pytest.approx(16 * small.seconds, rel=0.05)  # per output pixel


@pytest.mark.parametrize("seconds, words", [(0.4, "under 1 s on"), (12.2, "about 12 s on"), (600, "about 10 min on"),
                                             (7500, "about 2 h 5 min on")])
def test_the_estimate_line_says_the_time_once(seconds, words):
    line = files.describe(engine.Estimate(scale=2, width=20, height=10, output_bytes=600, peak_bytes=2**30,
                                          seconds=seconds))
    assert line.startswith("10x5 -> 20x10 (") and f", {words} " in line and "about under" not in line


def test_a_header_claiming_a_huge_size_is_refused_before_decoding(tmp_path, identity, capsys, monkeypatch):
    png_header_only(tmp_path / "huge.png", 12000, 12000)
    assert (tmp_path / "huge.png").stat().st_size < 1000

    def never(path):
        raise AssertionError(f"{path} was decoded")

    monkeypatch.setattr(files, "read_image", never)
    assert cli.main(["upscale", str(tmp_path / "huge.png"), "-o", str(tmp_path / "out.png")]) == 2
    err = capsys.readouterr().err
    line, = [line for line in err.splitlines() if "huge.png" in line]
    assert "12000x12000 -> 48000x48000 (2,304 MP, 6.9 GB as uint8), ~" in line and "GiB peak memory" in line
    assert "over --max-output-megapixels 200; skipped (raise --max-output-megapixels" in line
    assert "Traceback" not in err and "DecompressionBomb" not in err and not (tmp_path / "out.png").exists()


def test_max_output_megapixels_raises_the_limit(tmp_path, identity, capsys):
    png_header_only(tmp_path / "big.png", 3000, 3000)  # 144 MP out
    args = ["upscale", str(tmp_path / "big.png"), "-o", str(tmp_path / "out.png")]
    assert cli.main(args + ["--max-output-megapixels", "100"]) == 2
    assert "over --max-output-megapixels 100" in capsys.readouterr().err
    assert cli.main(args + ["--max-output-megapixels", "150"]) == 1
    err = capsys.readouterr().err
    assert "over --max-output-megapixels" not in err
    assert "big.png: 3000x3000 -> 12000x12000 (144 MP" in err  # the estimate, then the decoder's verdict
    assert "big.png: unreadable image" in err


def test_progress_bars_only_on_a_terminal(tmp_path, identity, capsys, monkeypatch):
    (tmp_path / "in").mkdir()
    Image.fromarray(smooth_image(60, 60)).save(tmp_path / "in" / "a.png")  # 25 tiles of 16 at overlap 4: 7 passes
    Image.fromarray(smooth_image(20, 24)).save(tmp_path / "in" / "b.png")
    single = ["upscale", str(tmp_path / "in" / "a.png"), "-o", str(tmp_path / "one")]
    folder = ["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "all")]
    for args in (single, folder):
        assert cli.main(args) == 0
        err = capsys.readouterr().err
        assert "tile" not in err and "image/s" not in err and "\r" not in err, err
    monkeypatch.setattr(files, "_stderr_is_terminal", lambda: True)
    assert cli.main(single) == 0
    assert "25/25" in capsys.readouterr().err
    assert cli.main(folder + ["--format", "bmp"]) == 0
    err = capsys.readouterr().err
    assert "2/2" in err and "a.png:   0%" in err and "0/25" in err  # the tile bar nested, cleared when done


# --------------------------------------------------------------------------- interrupted runs


def test_ctrl_c_while_writing_leaves_no_part_file(tmp_path, identity, capsys, monkeypatch):
    Image.fromarray(smooth_image(20, 24)).save(tmp_path / "a.png")

    def interrupted_save(image, path, *args, **kwargs):
        Path(path).write_bytes(b"\x89PNG half of it")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", interrupted_save)
    assert cli.main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "out")]) == 130
    assert list((tmp_path / "out").iterdir()) == []
    err = capsys.readouterr().err
    assert "upscale: 0 written; interrupted: rerun with --skip-existing to go on" in err


def test_a_stale_part_file_is_reported_and_replaced(tmp_path, identity, capsys):
    Image.fromarray(smooth_image(20, 24)).save(tmp_path / "a.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a_x4.png.part").write_bytes(b"left by kill -9")
    assert cli.main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "out")]) == 0
    assert f"{tmp_path / 'out' / 'a_x4.png.part'}: left by an interrupted run; replaced" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a_x4.png"]
    assert Image.open(tmp_path / "out" / "a_x4.png").size == (96, 80)


def test_skip_existing_resumes_a_folder(tmp_path, identity, capsys, monkeypatch):
    (tmp_path / "in").mkdir()
    for name in "abc":
        Image.fromarray(smooth_image(20, 24)).save(tmp_path / "in" / f"{name}.png")
    args = ["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out")]
    assert cli.main(args) == 0
    capsys.readouterr()
    (tmp_path / "out" / "b_x4.png").unlink()  # as if the first run had stopped there
    (tmp_path / "out" / "c_x4.png.part").write_bytes(b"an interrupted rewrite")
    decoded = []
    monkeypatch.setattr(files, "read_image", lambda path: decoded.append(path.name) or read_image(path))
    assert cli.main(args + ["--skip-existing"]) == 0
    out, err = capsys.readouterr()
    assert decoded == ["b.png"] and out.split() == [str(tmp_path / "out" / "b_x4.png")]
    assert "upscale: 1 written, 2 skipped (output already there, --skip-existing)" in err
    assert f"{tmp_path / 'out' / 'c_x4.png.part'}: left by an interrupted run; removed" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_x4.png", "b_x4.png", "c_x4.png"]
    assert cli.main(args + ["--skip-existing"]) == 0  # nothing left to do is not an error
    assert "upscale: 0 written, 3 skipped" in capsys.readouterr().err
    assert cli.main(args) == 0 and len(decoded) == 1 + 3  # without the flag everything is redone


# --------------------------------------------------------------------------- evaluate, compare


def test_evaluate_scores_the_model_and_both_baselines(checkpoint, tmp_path, capsys):
    (tmp_path / "X").mkdir()
    for i in range(2):
        Image.fromarray(smooth_image(48, 64, seed=i)).save(tmp_path / "X" / f"{i}.png")
    code = cli.main(["evaluate", "--checkpoint", str(checkpoint), "--data-dir", str(tmp_path), "--sets", "X"])
    assert code == 0
    rows = [line.split("|")[1].strip() for line in capsys.readouterr().out.splitlines()[2:]]
    assert rows == ["model", "nearest", "bicubic"]


def test_compare_writes_a_figure_of_the_expected_size(checkpoint, tmp_path, capsys):
    Image.fromarray(smooth_image(48, 64)).save(tmp_path / "hr.png")
    figure = tmp_path / "figure.png"
    args = ["compare", str(tmp_path / "hr.png"), "--checkpoint", str(checkpoint), "-o", str(figure)]
    assert cli.main(args + ["--crop", "8,4,40,30"]) == 0
    # bicubic | model | HR; a 40 px wide crop is enlarged x5 to 200 x 150.
    assert Image.open(figure).size == (3 * (200 + 8) + 8, 8 + 150 + 34)
    assert cli.main(args + ["--checkpoint", str(checkpoint)]) == 0  # whole image, zoom 3
    assert Image.open(figure).size == (4 * (192 + 8) + 8, 8 + 144 + 34)
    assert cli.main(args + ["--crop", "60,0,10,10"]) == 2
    assert "--crop 60,0,10,10 is not inside the 64x48 SR image" in capsys.readouterr().err


def test_compare_titles_panels_with_the_labels_given(checkpoint, tmp_path, capsys, monkeypatch):
    Image.fromarray(smooth_image(48, 64)).save(tmp_path / "hr.png")
    titles = []
    render = figures.render_figure
    monkeypatch.setattr(figures, "render_figure", lambda panels, crop: titles.append([p[0] for p in panels])
                        or render(panels, crop))
    args = ["compare", str(tmp_path / "hr.png"), "--checkpoint", str(checkpoint), "--checkpoint", str(checkpoint),
            "-o", str(tmp_path / "figure.png")]
    assert cli.main(args + ["--label", "quickstart (CPU, 3 min)", "--label", "another"]) == 0
    assert titles == [["bicubic", "quickstart (CPU, 3 min)", "another", "HR (ground truth)"]]
    assert cli.main(args + ["--label", "only one"]) == 2
    assert "1 --label for 2 model(s): give one --label per --checkpoint" in capsys.readouterr().err
    assert cli.main(args) == 0 and titles[-1][1].endswith(checkpoint.name)  # the path, by default


def test_the_shipped_generator_is_found_from_any_directory_and_beats_bicubic(tmp_path, monkeypatch):
    """No --checkpoint: the shipped SRResNet x4 comes from the package data, whatever the cwd."""
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image supplies the test photo")
    monkeypatch.chdir(tmp_path)
    assert (checkpoints.shipped_checkpoint() / "generator").is_dir()
    upscaler = srgan_jax.load_generator()
    assert upscaler.spec == GeneratorSpec(num_blocks=16, features=64, scale=4)
    hr = skimage_data.astronaut()[64:224, 160:320]  # face and suit: edges and texture
    lr = imresize(hr, scale=0.25)
    sr = upscaler(lr)
    assert sr.shape == hr.shape and sr.dtype == np.uint8
    assert metrics.psnr(sr, hr) > metrics.psnr(imresize(lr, scale=4), hr) + 0.5


def test_a_gif_output_name_is_a_file_not_a_folder(tmp_path, identity):
    image = smooth_image(20, 24)
    Image.fromarray(image).save(tmp_path / "anim.gif")
    out = tmp_path / "out" / "anim_x4.gif"
    assert cli.main(["upscale", str(tmp_path / "anim.gif"), "-o", str(out)]) == 0
    assert out.is_file()
    with Image.open(out) as written:
        assert written.format == "GIF" and written.size == (96, 80)


def test_a_damaged_checkpoint_is_one_user_error(checkpoint, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    arrays = [p for p in (broken / "checkpoints" / "2" / "generator").rglob("*") if p.is_file() and p.stat().st_size > 1000]
    assert arrays
    for path in arrays:
        path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))
    with pytest.raises(UserError, match="is damaged or incomplete .*pass another checkpoint"):
        engine.load_generator(broken)
    (broken / "checkpoints" / "2" / "meta" / "metadata").write_text("{not json")
    with pytest.raises(UserError, match="damaged or not srgan-jax metadata"):
        engine.load_generator(broken)
