"""This process's training batches for a config: the in-memory source or the tf.data one.

Both yield {"lr": float32 [B, hr/scale, hr/scale, 3] in [0, 1], "hr": float32 [B, hr, hr, 3]
in [-1, 1]} with B the per-process batch, as a pure function of (seed, step), so a run
resumed at step N sees the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from typing import Iterator

import jax
import ml_collections
import numpy as np

from srgan_jax.errors import UserError


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
        raise UserError(f"the tf.data pipeline needs TensorFlow and tensorflow-datasets ({err}): "
                        "pip install -e '.[data]', or pass --config.data.in_memory=True") from None
    return tfds_source.create_train_iterator(
        data, scale=config.model.scale, batch_size=batch_size, seed=config.seed, start_step=start_step)
