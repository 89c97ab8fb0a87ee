"""tf.data input pipeline: aligned random HR/LR crop pairs from tfds (SPEC "Training recipe").

Sources (`config.TfdsSource`, from `config.data`):
- folder: every PNG/JPEG/BMP under `folder` (recursive), turned into a tfds dataset by
  `FolderImages` so a folder of photos gets the same caching, splitting and sharding as a
  registered dataset. It is prepared once into `<tfds_data_dir or the tfds default
  (~/tensorflow_datasets, or $TFDS_DATA_DIR)>/srgan_image_folder/<folder digest>/<VERSION>/`;
  the digest covers the folder's path and its files' names, sizes and mtimes, so an edited
  folder is prepared again (old copies can be deleted by hand). Unreadable files are skipped
  with a warning naming them.
- tfds: the registered dataset `tfds_name` (default div2k/bicubic_x4), HR from its `hr`
  feature (or `image`, e.g. imagenet2012), LR from its `lr` feature when `use_dataset_lr`.

Batches: {"lr": float32 [B, hr/scale, hr/scale, 3], "hr": float32 [B, hr, hr, 3] in [-1, 1]}.
LR is the MATLAB-exact bicubic /scale of the HR crop in [0, 1] (not clipped, so bicubic
overshoot can leave [0, 1] by a little, exactly as `imresize` on floats), or the dataset's own
LR crop aligned with the HR crop.

Order and resume: this process reads its slice of the split (`tfds.split_for_jax_process`),
drops images smaller than the crop (decided from the PNG/JPEG header, so before decoding) and
counts the K images left (one pass over the records at start, no decoding). Epoch e is a
shuffle of those K images seeded by (seed, process, e), cut to a multiple of B when K >= B so
every batch holds B distinct images; each crop (and augmentation) is drawn with stateless ops
keyed on (seed, process, e, the image's position in the slice). The batch stream is therefore a
pure function of (seed, step): a restart at step N starts at epoch N*B // E (E = images used per
epoch) in O(1) and skips the remaining N*B % E records of that epoch before decoding them.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from srgan_jax.config import TfdsSource
from srgan_jax.data.images import DECODE_ERRORS, list_images, read_rgb
from srgan_jax.data.imresize import resize_matrix
from srgan_jax.errors import UserError

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXIF_ORIENTATION = 0x0112


@functools.cache
def _hide_gpus_from_tf() -> None:
    """Keeps TensorFlow off the accelerators (JAX owns them); runs once per process."""
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError as err:  # TF already initialised its devices elsewhere.
        logging.warning("could not hide GPUs from TensorFlow: %s", err)


def _folder_digest(folder: Path, files: list[Path]) -> str:
    digest = hashlib.sha256(str(folder.resolve()).encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _is_plain_8bit(path: Path, encoded: bytes, mode: str, upright: bool) -> bool:
    """True if TF's decoder yields the same RGB as `read_rgb`: 8-bit gray/RGB PNG or JPEG, no EXIF rotation."""
    if not upright:
        return False
    if encoded.startswith(_PNG_SIGNATURE):
        bit_depth, colour_type = encoded[24], encoded[25]  # IHDR fields
        return bit_depth == 8 and colour_type in (0, 2)
    return path.suffix.lower() in (".jpg", ".jpeg") and mode in ("L", "RGB")


class FolderImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """tfds dataset of the images in one folder: features {"image": uint8 [H, W, 3], "name": path}.

    Single split "train". 8-bit gray/RGB PNG and JPEG files are stored as they are; other
    files (BMP, palette, RGBA, 16-bit) are decoded with `read_rgb` and stored as PNG.
    """

    name = "srgan_image_folder"
    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "First version.",
                     "1.1.0": "Images decoded upright (EXIF orientation applied), as srgan_jax.data.images does."}
    # No download checksums live beside this code. Also sidesteps tfds 4.9.x looking the code
    # path up through `importlib_resources`, a dependency it does not declare (tfds issue #11212).
    code_path = None

    def __init__(self, *, image_dir: str | Path, **kwargs: Any):
        self._folder = Path(image_dir).expanduser()
        self._files = list_images(self._folder, "config.data.image_dir")
        config = tfds.core.BuilderConfig(
            name=f"folder_{_folder_digest(self._folder, self._files)}", description=str(self._folder.resolve()))
        super().__init__(config=config, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
                "name": tfds.features.Text(),
            }),
            description=f"Images under {self._folder.resolve()}",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterable]:
        del dl_manager  # Local files only.
        return {"train": self._generate_examples()}

    def _generate_examples(self) -> Iterator[tuple[str, dict[str, Any]]]:
        skipped = 0
        for path in self._files:
            name = str(path.relative_to(self._folder))
            try:
                with Image.open(path) as probe:
                    mode = probe.mode
                    upright = probe.getexif().get(_EXIF_ORIENTATION, 1) == 1
                pixels = read_rgb(path)  # Full decode: finds truncated and corrupt files.
            except DECODE_ERRORS as err:
                skipped += 1
                logging.warning("skipping unreadable image %s: %s", path, err)
                continue
            encoded = path.read_bytes()
            yield name, {"image": encoded if _is_plain_8bit(path, encoded, mode, upright) else pixels, "name": name}
        if skipped:
            logging.warning("skipped %d unreadable image(s) of %d in %s", skipped, len(self._files), self._folder)


def _builder(source: TfdsSource) -> tuple[tfds.core.DatasetBuilder, str, str | None]:
    """Prepared builder, its HR image feature and its LR feature (None unless use_dataset_lr,
    which `config.validate` allows for a tfds dataset only)."""
    if source.folder:
        builder = FolderImages(image_dir=source.folder, data_dir=source.tfds_data_dir)
        # A copy of every image lands outside the workdir: say where, once per run.
        logging.info("%s the tfds copy of %s in %s (config.data.tfds_data_dir moves it)",
                     "using" if builder.is_prepared() else "preparing", source.folder, builder.data_dir)
        try:
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(compute_stats=tfds.download.ComputeStatsMode.SKIP))
        except AssertionError as err:  # tfds refuses to write a split without examples.
            raise UserError(f"no readable image in {source.folder}: fix or replace the files") from err
        return builder, "image", None
    try:
        builder = tfds.builder(source.tfds_name, data_dir=source.tfds_data_dir)
    except tfds.core.registered.DatasetNotFoundError as err:
        raise UserError(f"unknown tfds dataset {source.tfds_name!r}: fix config.data.tfds_name "
                        "(e.g. div2k/bicubic_x4) or set config.data.image_dir") from err
    features = builder.info.features
    hr_key = "hr" if "hr" in features else "image"
    if hr_key not in features:
        raise UserError(f"tfds dataset {source.tfds_name} has no 'hr' or 'image' feature: pick an image dataset")
    if source.use_dataset_lr and "lr" not in features:
        raise UserError(
            f"tfds dataset {source.tfds_name} has no 'lr' feature: set config.data.use_dataset_lr=False")
    builder.download_and_prepare()
    return builder, hr_key, "lr" if source.use_dataset_lr else None


def _encoded_hw(encoded: tf.Tensor) -> tf.Tensor:
    """[height, width] int32 of an encoded image, from the PNG/JPEG header when possible."""

    def png() -> tf.Tensor:
        width_height = tf.io.decode_raw(tf.strings.substr(encoded, 16, 8), tf.int32, little_endian=False)
        return tf.reverse(width_height, [0])

    def jpeg() -> tf.Tensor:
        return tf.image.extract_jpeg_shape(encoded)[:2]

    def other() -> tf.Tensor:
        return tf.shape(tf.io.decode_image(encoded, channels=3, expand_animations=False))[:2]

    head = tf.strings.substr(encoded, 0, 8)
    return tf.case([(tf.equal(head, _PNG_SIGNATURE), png),
                    (tf.equal(tf.strings.substr(head, 0, 2), b"\xff\xd8"), jpeg)], default=other)


def _decode(encoded: tf.Tensor) -> tf.Tensor:
    return tf.ensure_shape(tf.io.decode_image(encoded, channels=3, expand_animations=False), [None, None, 3])


def _key(base: tf.Tensor, *data: tf.Tensor) -> tf.Tensor:
    for value in data:
        base = tf.random.experimental.stateless_fold_in(base, tf.cast(value, tf.int64))
    return base


def _augment(key: tf.Tensor, images: list[tf.Tensor]) -> list[tf.Tensor]:
    """The same random h-flip, v-flip and 90-degree rotation applied to every image."""
    flips = tf.random.stateless_uniform([2], key) < 0.5
    turns = tf.random.stateless_uniform([], _key(key, 1), minval=0, maxval=4, dtype=tf.int32)
    out = []
    for image in images:
        image = tf.cond(flips[0], lambda im=image: tf.reverse(im, [1]), lambda im=image: im)
        image = tf.cond(flips[1], lambda im=image: tf.reverse(im, [0]), lambda im=image: im)
        out.append(tf.image.rot90(image, turns))
    return out


def _make_pair_fn(hr_size: int, scale: int, augment: bool, with_dataset_lr: bool):
    """Returns f(key, hr_bytes, lr_bytes) -> {"lr", "hr"} for one example."""
    lr_size = hr_size // scale
    rows = tf.constant(resize_matrix(hr_size, lr_size, 1.0 / scale), tf.float32)  # [lr, hr]

    def offsets(key: tf.Tensor, limits: tf.Tensor) -> tf.Tensor:
        draws = tf.random.stateless_uniform([2], key, minval=0, maxval=2**31 - 1, dtype=tf.int32)
        return draws % limits

    def make_pair(key: tf.Tensor, hr_bytes: tf.Tensor, lr_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        crop_key, augment_key = _key(key, 0), _key(key, 1)
        image = _decode(hr_bytes)
        if with_dataset_lr:
            small = _decode(lr_bytes)
            room = tf.minimum(tf.shape(small)[:2], tf.shape(image)[:2] // scale) - lr_size + 1
            top, left = tf.unstack(offsets(crop_key, room))
            lr = tf.cast(small[top:top + lr_size, left:left + lr_size], tf.float32) / 255.0
            hr = image[top * scale:top * scale + hr_size, left * scale:left * scale + hr_size]
            hr = tf.cast(hr, tf.float32) / 255.0
        else:
            top, left = tf.unstack(offsets(crop_key, tf.shape(image)[:2] - hr_size + 1))
            hr = tf.cast(image[top:top + hr_size, left:left + hr_size], tf.float32) / 255.0
            # MATLAB bicubic: W @ x along the height, then along the width.
            lr = tf.einsum("oh,hwc->owc", rows, hr)
            lr = tf.einsum("pw,owc->opc", rows, lr)
        hr, lr = tf.reshape(hr, [hr_size, hr_size, 3]), tf.reshape(lr, [lr_size, lr_size, 3])
        if augment:
            hr, lr = _augment(augment_key, [hr, lr])
        return {"lr": lr, "hr": hr * 2.0 - 1.0}

    return make_pair


def _count_usable(usable: tf.data.Dataset, where: str, hr_size: int, batch_size: int) -> int:
    """How many of the images are big enough (`usable`: one bool each); UserError when none is."""
    total, kept = usable.reduce(
        (np.int64(0), np.int64(0)), lambda counts, ok: (counts[0] + 1, counts[1] + tf.cast(ok, tf.int64)))
    total, kept = int(total), int(kept)
    if kept < total:
        logging.warning("skipping %d of %d training images smaller than the %dx%d crop in %s",
                        total - kept, total, hr_size, hr_size, where)
    if not kept:
        raise UserError(f"no training image in {where} is at least {hr_size}x{hr_size}: "
                        "lower config.data.hr_size or add larger images")
    if kept < batch_size:
        logging.warning("only %d usable training images for a batch of %d: batches repeat images", kept, batch_size)
    return kept


def create_train_dataset(source: TfdsSource, *, hr_size: int, scale: int, augment: bool, batch_size: int,
                         seed: int, start_step: int = 0, process_index: int | None = None,
                         process_count: int | None = None) -> tf.data.Dataset:
    """Infinite tf.data.Dataset of this process's batches from `start_step` on (see module doc)."""
    _hide_gpus_from_tf()
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    builder, hr_key, lr_key = _builder(source)
    split = tfds.split_for_jax_process(source.split, process_index=process_index, process_count=process_count)
    image_keys = [hr_key] + ([lr_key] if lr_key else [])
    records = builder.as_dataset(
        split=split, shuffle_files=False, decoders={k: tfds.decode.SkipDecoding() for k in image_keys},
        read_config=tfds.ReadConfig(try_autocache=False))

    lr_size = hr_size // scale

    def select(example: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        return example[hr_key], example[lr_key] if lr_key else tf.constant(b"")

    def big_enough(hr_bytes: tf.Tensor, lr_bytes: tf.Tensor) -> tf.Tensor:
        if lr_key:
            room = tf.minimum(_encoded_hw(lr_bytes), _encoded_hw(hr_bytes) // scale)
            return tf.reduce_all(room >= lr_size)
        return tf.reduce_all(_encoded_hw(hr_bytes) >= hr_size)

    records = records.map(select, num_parallel_calls=tf.data.AUTOTUNE)
    where = f"{source.folder or source.tfds_name} (process {process_index})"
    kept = _count_usable(records.map(big_enough, num_parallel_calls=tf.data.AUTOTUNE), where, hr_size, batch_size)

    def indexed_filter(position: tf.Tensor, pair: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        del position  # Kept in the element: it keys the crop.
        return big_enough(*pair)

    usable = records.enumerate().filter(indexed_filter)
    if source.cache:
        usable = usable.cache()
    per_epoch = kept - kept % batch_size if kept >= batch_size else kept
    first_epoch, skip = divmod(start_step * batch_size, per_epoch)
    base = tf.constant([seed, process_index], tf.int64)
    shuffle_base, crop_base = _key(base, 0), _key(base, 1)

    def epoch(index: tf.Tensor) -> tf.data.Dataset:
        shuffle_seed = tf.random.stateless_uniform(
            [], _key(shuffle_base, index), minval=0, maxval=2**62, dtype=tf.int64)
        shuffled = usable.shuffle(min(source.shuffle_buffer, kept), seed=shuffle_seed,
                                  reshuffle_each_iteration=False)
        return shuffled.take(per_epoch).map(lambda position, pair: (_key(crop_base, index, position), *pair))

    ds = tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch).skip(skip)
    make_pair = _make_pair_fn(hr_size, scale, augment, lr_key is not None)
    ds = ds.map(make_pair, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True)
    options = tf.data.Options()
    options.deterministic = True
    options.threading.max_intra_op_parallelism = 1
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def create_train_iterator(source: TfdsSource, *, hr_size: int, scale: int, augment: bool, batch_size: int,
                          seed: int, start_step: int = 0, process_index: int | None = None,
                          process_count: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """This process's batches from step `start_step` on, forever.

    Yields {"lr": float32 [B, hr/scale, hr/scale, 3] (~[0, 1]), "hr": float32 [B, hr, hr, 3] in
    [-1, 1]} with B = `batch_size` (per process). Batch i is the same for a given (seed, process
    slice) whatever `start_step` the iterator was created with.
    """
    return create_train_dataset(source, hr_size=hr_size, scale=scale, augment=augment, batch_size=batch_size,
                                seed=seed, start_step=start_step, process_index=process_index,
                                process_count=process_count).as_numpy_iterator()


def measure_throughput(source: TfdsSource, *, hr_size: int, scale: int, batch_size: int, num_batches: int,
                       seed: int = 0) -> dict[str, float]:
    """HR/LR pairs per second of this process's pipeline, after its first batch (preparation, counting).

    Returns {"pairs_per_s", "batches", "batch_size", "startup_s"}.
    """
    start = time.perf_counter()
    batches = create_train_iterator(source, hr_size=hr_size, scale=scale, augment=False, batch_size=batch_size,
                                    seed=seed)
    next(batches)
    startup = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(num_batches):
        next(batches)
    elapsed = time.perf_counter() - start
    return {"pairs_per_s": num_batches * batch_size / elapsed, "batches": num_batches, "batch_size": batch_size,
            "startup_s": startup}
