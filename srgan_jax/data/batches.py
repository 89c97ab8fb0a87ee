"""This process's training batches for a config: the in-memory source or the tf.data one.

Both yield {"lr": float32 [B, hr/scale, hr/scale, 3] in [0, 1], "hr": float32 [B, hr, hr, 3]
in [-1, 1]} with B the per-process batch, as a pure function of (seed, step), so a run
resumed at step N sees the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import importlib.util
from typing import Iterator

import jax
import ml_collections
import numpy as np

from srgan_jax.data.images import list_images
from srgan_jax.errors import UserError

_NO_TFDS = ("the tf.data pipeline needs TensorFlow and tensorflow-datasets: pip install -e '.[data]', "
            "or pass --config.data.in_memory=True")


def check_source(config: ml_collections.ConfigDict) -> None:
    """A cheap check of the training data before anything is built: the folder exists and holds
    images, or the tf.data pipeline can be imported (UserError naming the fix otherwise)."""
    data = config.data
    if data.in_memory and data.skimage_images:
        return  # names are checked when the samples load, in well under a second
    if data.image_dir:
        list_images(data.image_dir, "config.data.image_dir")
    elif data.in_memory:
        raise UserError("data.in_memory needs data.image_dir or data.skimage_images")
    if not data.in_memory and importlib.util.find_spec("tensorflow_datasets") is None:
        raise UserError(_NO_TFDS)


def create_train_iterator(config: ml_collections.ConfigDict, batch_size: int, start_step: int
                          ) -> Iterator[dict[str, np.ndarray]]:
    """Batches from step `start_step` on: `data.in_memory` (no TensorFlow) or tfds (folder or dataset)."""
    data = config.data
    if data.in_memory:
        from srgan_jax.data import memory_source

        if data.skimage_images:
            images = memory_source.load_skimage_samples(data.skimage_images)
        elif data.image_dir:
            images = memory_source.load_folder(data.image_dir, "config.data.image_dir")
        else:
            raise UserError("data.in_memory needs data.image_dir or data.skimage_images")
        sampler = memory_source.CropSampler(
            list(images.values()), hr_size=data.hr_size, scale=config.model.scale, batch_size=batch_size,
            seed=config.seed, augment=data.augment, process_index=jax.process_index())
        return sampler(start_step)
    try:
        from srgan_jax.data import tfds_source
    except ImportError as err:
        raise UserError(f"{_NO_TFDS} ({err})") from None
    return tfds_source.create_train_iterator(
        data, scale=config.model.scale, batch_size=batch_size, seed=config.seed, start_step=start_step)
