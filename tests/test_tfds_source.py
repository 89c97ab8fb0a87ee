"""tf.data pipeline: pair alignment, MATLAB-bicubic LR, determinism, resume, process slices, bad files."""

from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from srgan_jax.config import TfdsSource
from srgan_jax.data import tfds_source
from srgan_jax.data.imresize import imresize
from srgan_jax.errors import UserError

ID_STEP = 8  # channel 0 of test image k is the constant k * ID_STEP: crops keep their image's id.


def _data_dir() -> Path:
    return Path(os.environ.get("SRGAN_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")


def _config(tmp_path: Path, folder: Path | str = "", hr_size: int = 48, augment: bool = False,
            **overrides) -> dict:
    """create_train_iterator's source and crop arguments: `folder` (else div2k/bicubic_x4), 48 px crops."""
    source = TfdsSource(folder=str(folder), tfds_data_dir=str(tmp_path / "tfds"), **{"shuffle_buffer": 64, **overrides})
    return {"source": source, "hr_size": hr_size, "augment": augment}


def _id_image(index: int, height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(index)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    image[..., 0] = index * ID_STEP
    return image


def _make_folder(folder: Path, count: int, first_id: int = 0) -> Path:
    """`count` id-coded RGB PNGs of 56..79 px, some in a subfolder (the listing is recursive)."""
    for index in range(first_id, first_id + count):
        sub = folder / ("nested" if index % 3 == 0 else "")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_id_image(index, 56 + index % 24, 60 + (7 * index) % 20)).save(sub / f"im{index:02d}.png")
    return folder


def _ids(batch: dict[str, np.ndarray]) -> list[int]:
    channel = (batch["hr"][..., 0] + 1.0) * 127.5 / ID_STEP
    ids = np.round(channel.reshape(len(channel), -1))
    assert np.all(ids == ids[:, :1]), "every crop comes from one id-coded image"
    return [int(i) for i in ids[:, 0]]


def _take(iterator, count: int) -> list[dict[str, np.ndarray]]:
    return list(itertools.islice(iterator, count))


def _assert_bicubic_lr(batch: dict[str, np.ndarray], scale: int = 4) -> None:
    for hr, lr in zip(batch["hr"], batch["lr"]):
        np.testing.assert_allclose(lr, imresize((hr.astype(np.float64) + 1.0) / 2.0, 1.0 / scale), atol=1e-5)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return _make_folder(tmp_path_factory.mktemp("images"), 10)


def test_batches_have_paper_shapes_ranges_and_matlab_bicubic_lr(folder, tmp_path):
    batches = tfds_source.create_train_iterator(**_config(tmp_path, folder), scale=4, batch_size=4, seed=0)
    for batch in _take(batches, 3):
        assert batch["hr"].shape == (4, 48, 48, 3) and batch["hr"].dtype == np.float32
        assert batch["lr"].shape == (4, 12, 12, 3) and batch["lr"].dtype == np.float32
        assert batch["hr"].min() >= -1.0 and batch["hr"].max() <= 1.0
        assert batch["lr"].min() > -0.2 and batch["lr"].max() < 1.2  # bicubic overshoot is not clipped
        _assert_bicubic_lr(batch)
        assert len(set(_ids(batch))) == 4, "each crop of a batch comes from a distinct image"


def _dihedral(image: np.ndarray) -> list[np.ndarray]:
    return [np.rot90(flipped, k) for flipped in (image, image[:, ::-1]) for k in range(4)]


def test_augment_flips_and_rotates_hr_and_lr_together(folder, tmp_path):
    plain = _take(tfds_source.create_train_iterator(**_config(tmp_path, folder), scale=4, batch_size=4, seed=3), 4)
    augmented = _take(tfds_source.create_train_iterator(
        **_config(tmp_path, folder, augment=True), scale=4, batch_size=4, seed=3), 4)
    changed = 0
    for before, after in zip(plain, augmented):
        _assert_bicubic_lr(after)
        for hr, hr_aug in zip(before["hr"], after["hr"]):
            # Same crop (the crop key does not depend on `augment`), one of its 8 symmetries.
            assert any(np.array_equal(hr_aug, option) for option in _dihedral(hr))
            changed += not np.array_equal(hr, hr_aug)
    assert changed >= 4


def test_same_seed_repeats_batches_other_seed_differs(folder, tmp_path):
    config = _config(tmp_path, folder)

    def run(seed: int) -> list[dict[str, np.ndarray]]:
        return _take(tfds_source.create_train_iterator(**config, scale=4, batch_size=4, seed=seed), 5)

    first, again, other = run(1), run(1), run(2)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a["hr"], b["hr"])
        np.testing.assert_array_equal(a["lr"], b["lr"])
    assert not all(np.array_equal(a["hr"], b["hr"]) for a, b in zip(first, other))


@pytest.mark.parametrize("cache", [False, True])
def test_restart_at_step_n_continues_the_uninterrupted_stream(folder, tmp_path, cache):
    config = _config(tmp_path, folder, cache=cache)
    # 10 images, batch 4: epochs of 8 images (2 steps), so steps 3 and 4 start inside / at an epoch.
    full = _take(tfds_source.create_train_iterator(**config, scale=4, batch_size=4, seed=5), 8)
    seen = [i for batch in full[:2] for i in _ids(batch)]
    assert len(set(seen)) == 8, "one epoch uses 8 distinct images"
    for start in (3, 4):
        resumed = _take(tfds_source.create_train_iterator(
            **config, scale=4, batch_size=4, seed=5, start_step=start), 8 - start)
        for expected, got in zip(full[start:], resumed):
            np.testing.assert_array_equal(expected["hr"], got["hr"])
            np.testing.assert_array_equal(expected["lr"], got["lr"])


def test_processes_read_disjoint_slices(folder, tmp_path):
    config = _config(tmp_path, folder)
    seen = []
    for index in range(2):
        batches = tfds_source.create_train_iterator(
            **config, scale=4, batch_size=2, seed=0, process_index=index, process_count=2)
        seen.append({i for batch in _take(batches, 10) for i in _ids(batch)})
    assert seen[0].isdisjoint(seen[1])
    assert seen[0] | seen[1] == set(range(10))


def test_corrupt_and_small_images_are_skipped_with_warnings(tmp_path, caplog):
    folder = _make_folder(tmp_path / "images", 5)
    good = (folder / "im01.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "garbage.jpg").write_bytes(b"not an image at all")
    Image.fromarray(_id_image(20, 40, 200)).save(folder / "small.png")  # 40 px high: < 48
    with caplog.at_level(logging.WARNING):
        batches = tfds_source.create_train_iterator(**_config(tmp_path, folder), scale=4, batch_size=2, seed=0)
        ids = {i for batch in _take(batches, 10) for i in _ids(batch)}
    assert ids == set(range(5))
    messages = [r.getMessage() for r in caplog.records]
    assert any("truncated.png" in m for m in messages)
    assert any("garbage.jpg" in m for m in messages)
    assert any("skipped 2 unreadable image(s) of 8" in m for m in messages)
    assert any("skipping 1 of 6 training images smaller than the 48x48 crop" in m for m in messages)


def test_gray_palette_rgba_16bit_bmp_and_jpeg_decode_to_rgb(tmp_path):
    folder = tmp_path / "modes"
    folder.mkdir()
    size = (64, 64)
    Image.new("L", size, 120).save(folder / "gray.png")
    Image.new("RGB", size, (10, 20, 30)).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    Image.new("RGBA", size, (40, 50, 60, 128)).save(folder / "rgba.png")
    Image.fromarray(np.full(size, 100 * 257, np.uint16)).save(folder / "deep.png")  # 16-bit gray
    Image.new("RGB", size, (70, 80, 90)).save(folder / "plain.bmp")
    Image.new("RGB", size, (200, 100, 50)).save(folder / "photo.jpg", quality=100)
    config = _config(tmp_path, folder)
    batch = next(tfds_source.create_train_iterator(**config, scale=4, batch_size=6, seed=0))
    colours = np.round((batch["hr"] + 1.0) * 127.5).reshape(6, -1, 3)
    assert np.all(colours == colours[:, :1]), "constant images give constant crops"
    found = sorted(tuple(int(v) for v in c[0]) for c in colours)
    expected = [(10, 20, 30), (40, 50, 60), (70, 80, 90), (100, 100, 100), (120, 120, 120)]
    assert [c for c in found if c in expected] == expected
    jpeg = [c for c in found if c not in expected]
    assert len(jpeg) == 1 and np.abs(np.subtract(jpeg[0], (200, 100, 50))).max() <= 2


def test_missing_or_empty_folder_and_unknown_dataset_are_user_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.png").write_bytes(b"junk")
    for config in (_config(tmp_path, tmp_path / "missing"), _config(tmp_path, tmp_path / "empty"),
                   _config(tmp_path, tmp_path / "broken"), _config(tmp_path, tfds_name="no_such_dataset_xyz")):
        with pytest.raises(UserError):
            tfds_source.create_train_iterator(**config, scale=4, batch_size=2, seed=0)
    # hr_size % scale is config.validate's rule alone (tests/test_config.py)


def _block_mean(images: np.ndarray, size: int = 4) -> np.ndarray:
    """[..., H, W, C] -> [..., H/size, W/size, C] means of size x size blocks (commutes with flips and turns)."""
    *lead, height, width, channels = images.shape
    blocks = images.reshape(*lead, height // size, size, width // size, size, channels).astype(np.float64)
    return blocks.mean(axis=(-4, -2))


def _mocked_records(count: int, make_example):
    """A mocked `_as_dataset` yielding make_example(index, hr) for id-coded HR images of 64.. x 72 px."""

    def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
        del split, read_config, kwargs
        features = self.info.features
        encoded = [features.encode_example(make_example(i, _id_image(i, 64 + 4 * i, 72))) for i in range(count)]
        ds = tf.data.Dataset.from_tensor_slices({k: [e[k] for e in encoded] for k in encoded[0]})
        return ds.map(lambda example: features.decode_example(example, decoders=decoders))

    return as_dataset


def _div2k_example(index: int, hr: np.ndarray) -> dict:
    return {"hr": hr, "lr": np.round(_block_mean(hr)).astype(np.uint8)}


def _imagenet_example(index: int, hr: np.ndarray) -> dict:
    # imagenet2012 stores JPEG: a flat grey image survives it, so the id stays readable.
    return {"image": np.full_like(hr, index * ID_STEP), "label": index, "file_name": f"n{index:08d}.JPEG"}


@pytest.mark.parametrize("name, make_example, use_dataset_lr", [
    ("div2k/bicubic_x4", _div2k_example, False),
    ("div2k/bicubic_x4", _div2k_example, True),
    ("imagenet2012", _imagenet_example, False),
])
def test_tfds_source_with_mocked_records(tmp_path, name, make_example, use_dataset_lr):
    # The datasets' features come from their builder code (offline); their records from `_mocked_records`.
    config = _config(tmp_path, tfds_name=name, use_dataset_lr=use_dataset_lr, augment=use_dataset_lr)
    with tfds.testing.mock_data(as_dataset_fn=_mocked_records(6, make_example),
                                policy=tfds.testing.MockPolicy.USE_CODE):
        batches = _take(tfds_source.create_train_iterator(**config, scale=4, batch_size=3, seed=0), 4)
    for batch in batches:
        assert batch["hr"].shape == (3, 48, 48, 3) and batch["lr"].shape == (3, 12, 12, 3)
        assert len(set(_ids(batch))) == 3
        if use_dataset_lr:  # The dataset's LR crop is the block mean of the HR crop: aligned, also augmented.
            np.testing.assert_allclose(batch["lr"], _block_mean((batch["hr"] + 1.0) / 2.0), atol=0.5 / 255 + 1e-6)
        else:
            _assert_bicubic_lr(batch)


def test_t91_folder_at_paper_crop_size(tmp_path):
    t91 = _data_dir() / "T91"
    if not t91.is_dir():
        pytest.skip(f"T91 not found at {t91} (set SRGAN_DATA_DIR to ../shared/data)")
    config = _config(tmp_path, t91, hr_size=96, shuffle_buffer=1024)
    batch = next(tfds_source.create_train_iterator(**config, scale=4, batch_size=16, seed=0))
    assert batch["hr"].shape == (16, 96, 96, 3) and batch["lr"].shape == (16, 24, 24, 3)
    _assert_bicubic_lr(batch)
    version = tfds_source.FolderImages.VERSION
    prepared = list((tmp_path / "tfds" / "srgan_image_folder").glob(f"folder_*/{version}/dataset_info.json"))
    assert len(prepared) == 1, "the folder is prepared once under tfds_data_dir"


def test_measure_throughput_reports_pairs_per_second(folder, tmp_path):
    source = _config(tmp_path, folder)["source"]
    result = tfds_source.measure_throughput(source, hr_size=48, scale=4, batch_size=4, num_batches=3)
    assert result["batches"] == 3 and result["batch_size"] == 4 and result["pairs_per_s"] > 0
