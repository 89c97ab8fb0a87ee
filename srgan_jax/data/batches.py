"""This process's training batches for a config: the in-memory source or the tf.data one.

Both yield {"lr": float32 [B, hr/scale, hr/scale, 3] in [0, 1], "hr": float32 [B, hr, hr, 3]
in [-1, 1]} with B the per-process batch, as a pure function of (seed, step), so a run
resumed at step N sees the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Iterator

import jax
import numpy as np
from PIL import Image

from srgan_jax.data.images import list_images
from srgan_jax.config import RunSpec
from srgan_jax.errors import UserError

_NO_TFDS = ("the tf.data pipeline needs TensorFlow and tensorflow-datasets: pip install -e '.[data]', "
            "or pass --config.data.in_memory=True")


def check_source(spec: RunSpec) -> None:
    """A cheap check of the training data before anything is built (UserError naming the fix):
    the tf.data pipeline can be imported when it is the source, and a folder exists and holds
    an image of at least hr_size x hr_size (read from the file headers)."""
    if spec.train_tfds is not None and importlib.util.find_spec("tensorflow_datasets") is None:
        raise UserError(_NO_TFDS)
    if spec.train_folder:
        files = list_images(spec.train_folder, "config.data.image_dir")
        if not any(_at_least(path, spec.hr_size) for path in files):
            raise UserError(f"no training image in {spec.train_folder} is at least {spec.hr_size}x{spec.hr_size}: "
                            "lower config.data.hr_size or add larger images")


def _at_least(path: Path, size: int) -> bool:
    """Whether the image file's header says both sides are >= size (False for an unreadable file)."""
    try:
        with Image.open(path) as image:
            return min(image.size) >= size
    except (OSError, ValueError):
        return False


def create_train_iterator(spec: RunSpec, batch_size: int, start_step: int) -> Iterator[dict[str, np.ndarray]]:
    """Batches from step `start_step` on: the in-memory source (no TensorFlow) or tf.data over
    a folder or a tfds dataset (`spec.train_tfds`)."""
    if spec.train_images is not None:
        from srgan_jax.data import memory_source

        images = memory_source.load_source(spec.train_images, "config.data.image_dir")
        sampler = memory_source.CropSampler(
            list(images.values()), hr_size=spec.hr_size, scale=spec.generator.scale, batch_size=batch_size,
            seed=spec.seed, augment=spec.augment, process_index=jax.process_index())
        return sampler(start_step)
    try:
        from srgan_jax.data import tfds_source
    except ImportError as err:
        raise UserError(f"{_NO_TFDS} ({err})") from None
    return tfds_source.create_train_iterator(
        spec.train_tfds, hr_size=spec.hr_size, scale=spec.generator.scale, augment=spec.augment,
        batch_size=batch_size, seed=spec.seed, start_step=start_step)
