"""In-memory HR/LR crop source without TensorFlow: decode once, sample crops per step.

For small training sets (T91, BSD200, scikit-image's sample photos) and for machines
without TensorFlow. Every batch is a pure function of (seed, step, process index), so
a run restarted at step N sees exactly the batches an uninterrupted run would have seen.
Batches match `srgan_jax.data.tfds_source`'s: LR = MATLAB-exact bicubic of the HR crop.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from srgan_jax.config import ImageSource
from srgan_jax.data.images import DECODE_ERRORS, list_images, read_rgb
from srgan_jax.data.imresize import resize_matrix
from srgan_jax.errors import UserError


def load_folder(folder: str | Path, what: str) -> dict[str, np.ndarray]:
    """Decode every image under `folder` (named `what` in errors, e.g. "config.data.image_dir").

    Unreadable files are skipped with a warning naming them.
    """
    folder = Path(folder).expanduser()
    images = {}
    for path in list_images(folder, what):
        try:
            images[str(path.relative_to(folder))] = read_rgb(path)
        except DECODE_ERRORS as err:
            logging.warning("skipping unreadable image %s: %s", path, err)
    if not images:
        raise UserError(f"no readable images in {folder}: add PNG/JPEG/BMP files or fix the path")
    return images


def load_source(source: ImageSource, what: str) -> dict[str, np.ndarray]:
    """The images of `source`: its scikit-image samples if it names any, else its folder's files
    (`what` names the folder's config field in errors)."""
    return load_skimage_samples(source.skimage_names) if source.skimage_names else load_folder(source.folder, what)


def load_skimage_samples(names: Sequence[str]) -> dict[str, np.ndarray]:
    """scikit-image's bundled sample photos by name (e.g. "astronaut"), as uint8 RGB."""
    try:
        import skimage.data
    except ImportError as err:
        raise UserError("scikit-image is needed for its sample images: pip install scikit-image") from err
    images = {}
    for name in names:
        loader = getattr(skimage.data, name, None)
        if loader is None:
            raise UserError(f"scikit-image has no sample image {name!r}: see skimage.data")
        image = np.asarray(loader())
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        images[name] = image[..., :3].astype(np.uint8)
    return images


class CropSampler:
    """Aligned random HR/LR crops from decoded images.

    `batch(step)` returns {"lr": float32 [B, hr/scale, hr/scale, 3] in [0, 1],
    "hr": float32 [B, hr, hr, 3] in [-1, 1]}: each crop from a distinct image when there
    are at least B images (SPEC), LR by MATLAB-exact bicubic of the crop. `hr_size` is a
    multiple of `scale` (`config.validate`).
    """

    def __init__(self, images: Sequence[np.ndarray], *, hr_size: int, scale: int, batch_size: int,
                 seed: int, augment: bool = False, process_index: int = 0):
        usable = [im for im in images if im.shape[0] >= hr_size and im.shape[1] >= hr_size]
        if len(usable) < len(images):
            logging.warning("skipping %d images smaller than the %dx%d crop", len(images) - len(usable),
                            hr_size, hr_size)
        if not usable:
            raise UserError(f"no training image is at least {hr_size}x{hr_size}: lower config.data.hr_size")
        self.images = usable
        self.hr_size, self.scale, self.batch_size = hr_size, scale, batch_size
        self.seed, self.augment, self.process_index = seed, augment, process_index
        self._matrix = resize_matrix(hr_size, hr_size // scale, 1.0 / scale).astype(np.float32)

    def batch(self, step: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, step, self.process_index])
        replace = self.batch_size > len(self.images)
        picks = rng.choice(len(self.images), self.batch_size, replace=replace)
        size = self.hr_size
        crops = np.empty((self.batch_size, size, size, 3), np.float32)
        for k, index in enumerate(picks):
            image = self.images[index]
            top = rng.integers(0, image.shape[0] - size + 1)
            left = rng.integers(0, image.shape[1] - size + 1)
            crop = image[top:top + size, left:left + size].astype(np.float32) / 255.0
            if self.augment:
                if rng.random() < 0.5:
                    crop = crop[:, ::-1]
                if rng.random() < 0.5:
                    crop = crop[::-1]
                crop = np.rot90(crop, rng.integers(0, 4))
            crops[k] = crop
        return {"lr": self._downscale(crops), "hr": crops * 2.0 - 1.0}

    def _downscale(self, crops: np.ndarray) -> np.ndarray:
        """MATLAB bicubic /scale of [B, S, S, 3] crops as two batched matmuls (BLAS)."""
        b, s, lr_s = crops.shape[0], self.hr_size, self.hr_size // self.scale
        rows = np.matmul(self._matrix, crops.reshape(b, s, s * 3)).reshape(b, lr_s, s, 3)
        cols = np.matmul(self._matrix, rows.transpose(0, 2, 1, 3).reshape(b, s, lr_s * 3))
        return np.ascontiguousarray(cols.reshape(b, lr_s, lr_s, 3).transpose(0, 2, 1, 3))

    def __call__(self, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
        step = start_step
        while True:
            yield self.batch(step)
            step += 1
