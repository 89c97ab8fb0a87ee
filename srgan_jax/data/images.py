"""Image files: the one decoder, file listing and mod-crop used by training, evaluation and upscaling."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from srgan_jax.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
# What decoding raises for a file that is not a readable image.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)

# Modes whose ICC profile does not describe the RGB pixels we return.
_NON_RGB_MODES = ("CMYK", "YCbCr", "LAB", "HSV")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


@dataclasses.dataclass
class Picture:
    """A decoded image file: pixels uint8 [H, W, C] (C = 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA)."""

    pixels: np.ndarray
    format: str | None  # PIL format of the file ("PNG", "JPEG", ...)
    icc_profile: bytes | None  # colour profile of the pixels

    def rgb(self) -> np.ndarray:
        """uint8 [H, W, 3]: gray replicated to RGB, alpha dropped."""
        return to_rgb(self.pixels)


def to_rgb(pixels: np.ndarray) -> np.ndarray:
    """[H, W, C] with C = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA) -> [H, W, 3]: gray
    replicated, alpha dropped."""
    return np.repeat(pixels[..., :1], 3, axis=-1) if pixels.shape[-1] < 3 else pixels[..., :3]


def read_image(path: str | Path) -> Picture:
    """Fully decode an image file, upright (EXIF orientation applied), 8 bits per channel.

    16-bit gray is scaled to 8 bits (v / 257, rounded); 32-bit float gray is read as [0, 1]
    when its values lie there (v * 255, rounded), else as [0, 255] (clipped); CMYK, YCbCr,
    palette etc. become RGB (RGBA when the file has transparency). Raises one of
    DECODE_ERRORS for a bad file.
    """
    with Image.open(path) as image:
        file_format = image.format
        image = ImageOps.exif_transpose(image)
        image.load()
    icc = None if image.mode in _NON_RGB_MODES else image.info.get("icc_profile")
    if image.mode in _SIXTEEN_BIT_MODES or image.mode == "F":
        values = np.nan_to_num(np.asarray(image, np.float64))
        if image.mode == "F":
            values = values * 255.0 if values.min() >= 0.0 and values.max() <= 1.0 else values
        else:
            values = values / 257.0
        gray = np.clip(np.round(values), 0, 255).astype(np.uint8)
        return Picture(gray[..., None], file_format, icc)
    has_alpha = image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info
    gray = image.mode in ("1", "L", "LA", "La")
    target = ("LA" if has_alpha else "L") if gray else ("RGBA" if has_alpha else "RGB")
    pixels = np.asarray(image.convert(target))
    return Picture(pixels[..., None] if pixels.ndim == 2 else pixels, file_format, icc)


def read_rgb(path: str | Path) -> np.ndarray:
    """`read_image(path).rgb()`: uint8 RGB [H, W, 3]. Raises one of DECODE_ERRORS for a bad file."""
    return read_image(path).rgb()


def find_images(folder: str | Path) -> list[Path]:
    """Image files (IMAGE_SUFFIXES, any case) under `folder`, recursive, sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def list_images(folder: str | Path, what: str) -> list[Path]:
    """`find_images(folder)`; UserError naming `what` (e.g. "config.data.image_dir") if there are none."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UserError(f"image folder {folder} does not exist: fix {what}")
    files = find_images(folder)
    if not files:
        raise UserError(f"no {'/'.join(s[1:].upper() for s in IMAGE_SUFFIXES)} images in {folder}: "
                        f"add images or fix {what}")
    return files


def mod_crop(image: np.ndarray, scale: int) -> np.ndarray:
    """[H, W, ...] -> its top-left [H - H % scale, W - W % scale, ...] (the SR literature's mod-crop)."""
    return image[: image.shape[0] - image.shape[0] % scale, : image.shape[1] - image.shape[1] % scale]
