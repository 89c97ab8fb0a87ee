"""Comparison figures: bicubic | models | HR panels with PSNR/SSIM captions (`srgan-jax compare`)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from srgan_jax import metrics
from srgan_jax.data.images import DECODE_ERRORS, mod_crop, read_rgb
from srgan_jax.data.imresize import imresize
from srgan_jax.errors import UserError
from srgan_jax.upscaling import engine

_GAP = 8  # px around and between panels
_CAPTION = 34  # px of text (two lines) under each panel
_MIN_PANEL = 192  # narrower crops are enlarged (nearest neighbour) to at least this width


def parse_crop(text: str | None, height: int, width: int) -> tuple[int, int, int, int]:
    """'x,y,w,h' (HR pixels) -> (x, y, w, h) inside a height x width image; None: the whole image."""
    if text is None:
        return 0, 0, width, height
    try:
        x, y, w, h = (int(part) for part in text.split(","))
    except ValueError:
        raise UserError(f"--crop {text!r}: expected four integers x,y,w,h") from None
    if x < 0 or y < 0 or w < 1 or h < 1 or x + w > width or y + h > height:
        raise UserError(f"--crop {text} is not inside the {width}x{height} SR image: pick x,y,w,h within it")
    return x, y, w, h


def render_figure(panels: Sequence[tuple[str, str, np.ndarray]], crop: tuple[int, int, int, int]) -> Image.Image:
    """Panels side by side, each cropped to `crop` = (x, y, w, h), with two caption lines below.

    panels: (title, caption, uint8 [H, W, 3]) of equal size. The figure is
    (n * (pw + GAP) + GAP) x (GAP + ph + CAPTION), pw x ph = the crop enlarged by an integer
    zoom so pw >= MIN_PANEL.
    """
    x, y, w, h = crop
    zoom = -(-_MIN_PANEL // w)
    pw, ph = w * zoom, h * zoom
    figure = Image.new("RGB", (len(panels) * (pw + _GAP) + _GAP, _GAP + ph + _CAPTION), "white")
    draw = ImageDraw.Draw(figure)
    font = ImageFont.load_default()
    for k, (title, caption, image) in enumerate(panels):
        left = _GAP + k * (pw + _GAP)
        region = Image.fromarray(np.ascontiguousarray(image[y:y + h, x:x + w]))
        figure.paste(region.resize((pw, ph), Image.NEAREST), (left, _GAP))
        draw.text((left, _GAP + ph + 4), title, fill="black", font=font)
        draw.text((left, _GAP + ph + 18), caption, fill="black", font=font)
    return figure


def _label(checkpoint: str | None) -> str:
    if checkpoint is None:
        return "SRResNet x4 (pretrained)"
    return checkpoint if len(checkpoint) <= 30 else "..." + checkpoint[-27:]


def write_comparison(image: str | Path, output: str | Path, *, checkpoints: Sequence[str | Path] = (),
                     labels: Sequence[str] = (), lr_input: bool = False, crop: str | None = None) -> Path:
    """`srgan-jax compare`: PNG figure bicubic | each model | HR at `output`, PSNR/SSIM under each panel.

    `image` is HR (mod-cropped to the scale; LR = MATLAB bicubic / scale) or, with `lr_input`,
    the LR input itself (no HR panel, no scores). The models are `checkpoints` (none: the
    shipped SRResNet x4), all of one scale, which is the figure's. Each model's panel is titled
    by its label (one per checkpoint; none: the checkpoint paths). Scores are the paper protocol
    on the whole image (Y channel, border crop = scale), whatever `crop` ('x,y,w,h' in SR
    pixels, `parse_crop`) shows. Returns `output` as a Path.
    """
    output = Path(output)
    if output.suffix.lower() != ".png":
        raise UserError(f"-o {output}: the figure is a PNG; give a file name ending in .png")
    try:
        rgb = read_rgb(image)
    except DECODE_ERRORS as err:
        raise UserError(f"{image}: unreadable image ({err}); pass a PNG/JPEG/... file") from None
    checkpoints = [str(c) for c in checkpoints] or [None]
    labels = list(labels) or [_label(c) for c in checkpoints]
    if len(labels) != len(checkpoints):
        raise UserError(f"{len(labels)} --label for {len(checkpoints)} model(s): give one --label per --checkpoint, "
                        "in the same order (or none)")
    models = [(label, engine.load_generator(c)) for label, c in zip(labels, checkpoints)]
    scale = engine.common_scale(models, "compare")
    if lr_input:
        lr, hr = rgb, None
    else:
        hr = mod_crop(rgb, scale)
        if min(hr.shape[:2]) < 2 * scale + 11:  # SSIM's 11-px window after the border crop
            raise UserError(f"{image} is too small to score ({rgb.shape[1]}x{rgb.shape[0]}): pass an HR "
                            f"image of at least {2 * scale + 11} px a side, or --lr")
        lr = imresize(hr, scale=1.0 / scale)

    def caption(sr: np.ndarray) -> str:
        if hr is None:
            return "(LR input: no HR to score)"
        return f"PSNR {metrics.psnr(sr, hr, scale):.2f} dB  SSIM {metrics.ssim(sr, hr, scale):.4f}"

    bicubic = imresize(lr, scale=scale)
    panels = [("bicubic", caption(bicubic), bicubic)]
    panels += [(label, caption(sr), sr) for label, sr in ((label, upscaler(lr)) for label, upscaler in models)]
    if hr is not None:
        panels.append(("HR (ground truth)", "reference", hr))
    region = parse_crop(crop, *bicubic.shape[:2])
    output.parent.mkdir(parents=True, exist_ok=True)
    render_figure(panels, region).save(output, format="PNG")
    return output
