"""Reading image files: the one decoder and file listing shared by training, evaluation and inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def read_rgb(path: str | Path) -> np.ndarray:
    """Fully decodes an image file to uint8 RGB [H, W, 3].

    Grayscale, palette and RGBA (alpha dropped) become RGB; 16-bit samples are scaled by 255/65535.
    Raises OSError or ValueError for corrupt or truncated files.
    """
    with Image.open(path) as image:
        image.load()
        if image.mode in ("I", "I;16", "I;16B", "I;16L"):
            pixels = np.asarray(image, dtype=np.float64) / 257.0
            image = Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8))
        return np.asarray(image.convert("RGB"))


def find_images(folder: str | Path) -> list[Path]:
    """Image files (IMAGE_SUFFIXES, any case) under `folder`, recursive, sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
