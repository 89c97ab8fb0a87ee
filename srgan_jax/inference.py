"""Upscale arbitrary images with a trained generator: tiling, image files, `upscale` / `compare`.

Conventions: images are uint8, channels last (RGB, RGBA). The generator maps LR in [0, 1]
(uint8 / 255) to SR in [-1, 1]; SR is quantised as round((sr + 1) * 127.5), clipped to
[0, 255], exactly as the evaluation protocol does.

Tiling: the LR image is cut into `tile` x `tile` tiles whose neighbours share at least
`overlap` pixels, run `batch` tiles per forward pass, and cross-faded over the shared pixels
(the weights sum to 1 at every output pixel). Every forward pass has one of a few fixed
shapes, so XLA compiles once per shape, not once per image:
- images larger than a tile: [batch, tile, tile, 3] (a side shorter than the tile, and the
  last batch, are padded);
- images within one tile (and every image with tile = 0): [1, h', w', 3] with h', w' the
  sides rounded up to a multiple of 32 (at most the tile size).
Padding does not change the result: `masked_apply` zeroes every convolution's input outside
the image, which is what the convolutions' own zero padding does on the exact shape. So a
padded image gives the exact-shape output (evaluation numbers do not depend on the padding),
and only tile seams differ from one whole-image pass (by border effects inside the overlap).
The output is preallocated uint8; float accumulation is kept for one band of tile rows only
([tile * scale, W * scale, 3] float32), so memory stays bounded for large images.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from srgan_jax import checkpoints, metrics, xla_cpu
from srgan_jax.errors import UserError
from srgan_jax.metrics import sr_to_uint8
from srgan_jax.images import IMAGE_SUFFIXES
from srgan_jax.imresize import imresize, resize_matrix
from srgan_jax.models import Generator

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "pretrained" / "srresnet_x4"
# --format value -> (PIL format, file suffix)
FORMATS = {"png": ("PNG", ".png"), "jpeg": ("JPEG", ".jpg"), "jpg": ("JPEG", ".jpg"),
           "webp": ("WEBP", ".webp"), "bmp": ("BMP", ".bmp"), "tiff": ("TIFF", ".tif"), "tif": ("TIFF", ".tif")}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

_BUCKET = 32  # sides of single-tile images are rounded up to a multiple of this
_ALPHA_BAND = 512  # output rows per matrix product when upscaling alpha
# Modes whose ICC profile does not describe the RGB pixels we write.
_NON_RGB_MODES = ("CMYK", "YCbCr", "LAB", "HSV")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
# What PIL raises for a file that is not a readable image.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)

Apply = Callable[[Any, np.ndarray, np.ndarray], jax.Array]


def check_tiling(tile: int, overlap: int, batch: int) -> None:
    """Raise UserError unless tile = 0 (no tiling) or tile > overlap >= 0, and batch >= 1."""
    if tile < 0 or overlap < 0 or (tile and overlap >= tile):
        raise UserError(f"tile {tile} / overlap {overlap}: the tile must be 0 (no tiling) or larger than "
                        "the overlap, both >= 0; fix --tile / --overlap")
    if batch < 1:
        raise UserError(f"batch {batch}: pass --batch 1 or more")


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Offsets of `tile`-long tiles covering [0, length), neighbours sharing >= `overlap` pixels.

    Evenly spread from 0 to length - tile (so all neighbours share about the same amount);
    [0] when length <= tile.
    """
    if length <= tile:
        return [0]
    gaps = -(-(length - tile) // (tile - overlap))
    return [(i * (length - tile) + gaps // 2) // gaps for i in range(gaps + 1)]


def _cross_fade(shared: int) -> np.ndarray:
    """Weights [shared] of the tile entering a shared strip: 0 over its outer quarter, smoothstep
    to 1 across the middle half. Paired with its mirror image (the leaving tile) it sums to 1."""
    u = np.clip(((np.arange(shared) + 0.5) / shared - 0.25) * 2.0, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def blend_weights(starts: Sequence[int], tile: int, scale: int) -> list[np.ndarray]:
    """Per-tile float32 weights [tile * scale] along one axis, summing to 1 at every output pixel.

    Neighbours cross-fade over the middle half of the pixels they share (`_cross_fade`): the
    quarter next to a tile's own edge, where the convolutions' zero padding disturbs it
    most, is not used. A tile keeps full weight where no neighbour overlaps it.
    """
    size = tile * scale
    weights = []
    for k, start in enumerate(starts):
        weight = np.ones(size)
        if k > 0:
            shared = (starts[k - 1] + tile - start) * scale
            weight[:shared] = np.minimum(weight[:shared], _cross_fade(shared))
        if k + 1 < len(starts):
            shared = (start + tile - starts[k + 1]) * scale
            weight[size - shared:] = np.minimum(weight[size - shared:], _cross_fade(shared)[::-1])
        weights.append(weight)
    total = np.zeros((starts[-1] + tile) * scale)
    for start, weight in zip(starts, weights):
        total[start * scale:start * scale + size] += weight
    return [(weight / total[start * scale:start * scale + size]).astype(np.float32)
            for start, weight in zip(starts, weights)]


def resize_alpha(alpha: np.ndarray, scale: int) -> np.ndarray:
    """uint8 [H, W] -> uint8 [H*scale, W*scale]: MATLAB bicubic, equal to `imresize(alpha, scale)`.

    Computed in bands of output rows, so the float64 intermediate stays small.
    """
    h, w = alpha.shape
    rows = resize_matrix(h, h * scale, scale)
    cols = resize_matrix(w, w * scale, scale).T
    alpha = alpha.astype(np.float64)
    out = np.empty((h * scale, w * scale), np.uint8)
    for top in range(0, h * scale, _ALPHA_BAND):
        # Like imresize on uint8: rows first, rounded and clipped after each axis.
        band = np.clip(np.round(rows[top:top + _ALPHA_BAND] @ alpha), 0, 255)
        out[top:top + _ALPHA_BAND] = np.clip(np.round(band @ cols), 0, 255)
    return out


class Upscaler:
    """`upscaler(image)`: uint8 [H, W] or [H, W, C] -> uint8 [H*scale, W*scale, 3], or 4 with alpha.

    C = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA). Gray is replicated to RGB and the
    result is RGB (the file writer converts it back to gray). Alpha is upscaled with MATLAB
    bicubic (`resize_alpha`) and reattached. See the module docstring for the tiling.

    Attributes:
      scale: the upscaling factor.
      model: the generator config {"num_blocks", "features", "scale"} (None if not from a checkpoint).
      checkpoint: the checkpoint path it was restored from (None if not from a checkpoint).
      apply: the jitted forward pass (variables, lr [B, h, w, 3] float32 in [0, 1], valid int32
        [2]) -> sr [B, h*scale, w*scale, 3] in [-1, 1], as if lr were cropped to its top-left
        valid[0] x valid[1] pixels (see `masked_apply`); one compilation per input shape.
    """

    def __init__(self, apply: Apply, variables: Any, scale: int, *, tile: int = 128, overlap: int = 16,
                 batch: int = 4, model: dict | None = None, checkpoint: str | None = None):
        check_tiling(tile, overlap, batch)
        self.apply, self.variables, self.scale = apply, variables, scale
        self.tile, self.overlap, self.batch = tile, overlap, batch
        self.model, self.checkpoint = model, checkpoint

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.ndim == 2:
            image = image[..., None]
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 2, 3, 4) or 0 in image.shape:
            raise ValueError(f"upscale: expected a uint8 [H, W] or [H, W, 1|2|3|4] image, got "
                             f"{image.dtype} {image.shape}")
        h, w, channels = image.shape
        rgb = np.repeat(image[..., :1], 3, axis=-1) if channels < 3 else image[..., :3]
        has_alpha = channels in (2, 4)
        out = np.empty((h * self.scale, w * self.scale, 4 if has_alpha else 3), np.uint8)
        self._upscale_rgb(rgb, out)
        if has_alpha:
            out[..., 3] = resize_alpha(image[..., -1], self.scale)
        return out

    def tile_shape(self, h: int, w: int) -> tuple[int, int]:
        """LR tile (forward pass) shape for an h x w image: the tile, or a bucket for small images."""
        if self.tile and (h > self.tile or w > self.tile):
            return self.tile, self.tile
        bucket_h, bucket_w = (-(-n // _BUCKET) * _BUCKET for n in (h, w))
        if not self.tile:
            return bucket_h, bucket_w
        return min(bucket_h, self.tile), min(bucket_w, self.tile)

    def _upscale_rgb(self, rgb: np.ndarray, out: np.ndarray) -> None:
        """Write the SR of uint8 RGB [h, w, 3] into out[..., :3], one band of tile rows at a time."""
        h, w, _ = rgb.shape
        s = self.scale
        th, tw = self.tile_shape(h, w)
        padded = np.pad(rgb, ((0, max(th - h, 0)), (0, max(tw - w, 0)), (0, 0)))
        ys = tile_starts(padded.shape[0], th, self.overlap)
        xs = tile_starts(padded.shape[1], tw, self.overlap)
        wy, wx = blend_weights(ys, th, s), blend_weights(xs, tw, s)
        # band[0] is output row ys[row] * s; rows above the next tile row's start are final.
        band = np.zeros((th * s, padded.shape[1] * s, 3), np.float32)
        row = 0
        for (i, j), sr in self._tiles(padded, ys, xs, (th, tw), np.array([min(h, th), min(w, tw)], np.int32)):
            while row < i:
                done = (ys[row + 1] - ys[row]) * s
                _write_rows(out, ys[row] * s, band[:done])
                band[:-done] = band[done:]
                band[-done:] = 0
                row += 1
            x0 = xs[j] * s
            band[:, x0:x0 + tw * s] += sr * (wy[i][:, None, None] * wx[j][None, :, None])
        _write_rows(out, ys[row] * s, band)

    def _tiles(self, padded: np.ndarray, ys: list[int], xs: list[int], shape: tuple[int, int],
               valid: np.ndarray) -> Iterator[tuple[tuple[int, int], np.ndarray]]:
        """((row, column), sr float32 [th*s, tw*s, 3]) per tile in row-major order.

        `valid` = (rows, columns) of every tile that are image, not padding. The next batch is
        dispatched before the previous one is fetched, so the device computes while the host blends.
        """
        th, tw = shape
        positions = [(i, j) for i in range(len(ys)) for j in range(len(xs))]
        batch = 1 if len(positions) == 1 else self.batch
        pending = None
        for first in range(0, len(positions), batch):
            chunk = positions[first:first + batch]
            lr = np.zeros((batch, th, tw, 3), np.float32)
            for n, (i, j) in enumerate(chunk):
                lr[n] = padded[ys[i]:ys[i] + th, xs[j]:xs[j] + tw]
            lr /= 255.0
            launched = (chunk, self.apply(self.variables, lr, valid))
            if pending is not None:
                yield from zip(pending[0], np.asarray(pending[1]))
            pending = launched
        yield from zip(pending[0], np.asarray(pending[1]))


def _write_rows(out: np.ndarray, top: int, rows: np.ndarray) -> None:
    """Quantise finished float SR rows into out[top:, :, :3], dropping the padding."""
    count = min(rows.shape[0], out.shape[0] - top)
    if count > 0:
        out[top:top + count, :, :3] = sr_to_uint8(rows[:count, :out.shape[1]])


def masked_apply(generator: Generator, variables: Any, lr: jax.Array, valid: jax.Array) -> jax.Array:
    """G in inference mode on LR [B, h, w, 3] in [0, 1] whose top-left valid[0] x valid[1] is the image.

    Every convolution's input is zeroed outside the image (at that layer's resolution), as
    the convolution's 'SAME' zero padding would be on the exact shape; every other layer is
    pointwise or pixel-shuffle. So the output's top-left valid * scale part equals
    `generator.apply(variables, lr[:, :valid[0], :valid[1]], train=False)` with one compiled
    shape for every valid size.
    """
    height = lr.shape[1]

    def zero_outside_image(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.Conv) and context.method_name == "__call__":
            x = args[0]
            factor = x.shape[1] // height
            rows = jnp.arange(x.shape[1]) < valid[0] * factor
            cols = jnp.arange(x.shape[2]) < valid[1] * factor
            args = (jnp.where((rows[:, None] & cols[None, :])[None, :, :, None], x, 0),) + args[1:]
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(zero_outside_image):
        return generator.apply(variables, lr, train=False)


def load_generator(path: str | Path | None = None, *, tile: int = 128, overlap: int = 16, batch: int = 4,
                   dtype: str = "float32") -> Upscaler:
    """Restore a trained generator as an `Upscaler` (uint8 image -> uint8 image x scale).

    Args:
      path: a training workdir, its checkpoints/ folder or a step folder (the newest step is
        used); None: the shipped pretrained SRResNet x4 (`pretrained/srresnet_x4`).
      tile, overlap: LR tile size and the minimum overlap between neighbouring tiles, in
        pixels; tile = 0 runs each image whole.
      batch: tiles per forward pass.
      dtype: compute dtype, "float32" or "bfloat16" (parameters stay float32).
    """
    check_tiling(tile, overlap, batch)
    if dtype not in DTYPES:
        raise UserError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}: fix --dtype")
    if path is None:
        if not DEFAULT_CHECKPOINT.is_dir():
            raise UserError("no --checkpoint given and the pretrained SRResNet x4 is not installed: "
                            "pass --checkpoint WORKDIR")
        path = DEFAULT_CHECKPOINT
    if not Path(path).exists():
        raise UserError(f"checkpoint {path} does not exist: pass a training workdir, its checkpoints/ "
                        "folder or a step folder")
    model = dict(checkpoints.read_meta(path)["model"])
    abstract = jax.eval_shape(lambda: Generator(**model).init(jax.random.key(0), jnp.zeros((1, 8, 8, 3))))
    variables = checkpoints.load_generator_variables(path, abstract)
    apply = jax.jit(functools.partial(masked_apply, Generator(**model, dtype=DTYPES[dtype])),
                    compiler_options=xla_cpu.compiler_options())
    return Upscaler(apply, variables, model["scale"], tile=tile, overlap=overlap, batch=batch, model=model,
                    checkpoint=str(path))


# --------------------------------------------------------------------------- image files


@dataclasses.dataclass
class Picture:
    """A decoded image file: pixels uint8 [H, W, C] (C = 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA)."""

    pixels: np.ndarray
    format: str | None  # PIL format of the file ("PNG", "JPEG", ...)
    icc_profile: bytes | None  # colour profile of the pixels, kept in the output


def read_image(path: str | Path) -> Picture:
    """Decode an image file, upright (EXIF orientation applied), 8 bits per channel.

    16-bit gray is scaled to 8 bits (v / 257, rounded); CMYK, YCbCr, palette etc. become RGB
    (RGBA when the file has transparency). Raises one of DECODE_ERRORS for a bad file.
    """
    with Image.open(path) as image:
        file_format = image.format
        image = ImageOps.exif_transpose(image)
    icc = None if image.mode in _NON_RGB_MODES else image.info.get("icc_profile")
    if image.mode in _SIXTEEN_BIT_MODES:
        gray = np.clip(np.round(np.asarray(image, np.float64) / 257.0), 0, 255).astype(np.uint8)
        return Picture(gray[..., None], file_format, icc)
    has_alpha = image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info
    gray = image.mode in ("1", "L", "LA", "La")
    target = ("LA" if has_alpha else "L") if gray else ("RGBA" if has_alpha else "RGB")
    pixels = np.asarray(image.convert(target))
    return Picture(pixels[..., None] if pixels.ndim == 2 else pixels, file_format, icc)


def write_image(path: Path, sr: np.ndarray, *, gray: bool, file_format: str, icc_profile: bytes | None) -> None:
    """Save uint8 RGB(A) SR as `file_format`; gray inputs are saved gray (PIL's luma of the RGB).

    JPEG has no alpha: it is dropped. JPEG and WebP are written at quality 95. Written to a
    temporary name first, so an interrupted run leaves no truncated output.
    """
    image = Image.fromarray(sr)
    if gray:
        image = image.convert("LA" if sr.shape[-1] == 4 else "L")
    if file_format == "JPEG" and image.mode in ("LA", "RGBA"):
        image = image.convert(image.mode[:-1])
    elif file_format in ("BMP", "WEBP") and image.mode == "LA":
        image = image.convert("RGBA")
    options = {"quality": 95} if file_format in ("JPEG", "WEBP") else {}
    if icc_profile:
        options["icc_profile"] = icc_profile
    partial = path.with_name(path.name + ".part")
    image.save(partial, format=file_format, **options)
    os.replace(partial, path)


def _format_for(suffix: str) -> str | None:
    return Image.registered_extensions().get(suffix.lower())


def plan_outputs(inputs: Sequence[str], output: str | Path, format_name: str | None, scale: int
                 ) -> tuple[list[tuple[Path, Path, str]], list[str]]:
    """Pair every input image with its output path and PIL format.

    Inputs are files or folders (searched recursively for IMAGE_SUFFIXES). `output` is a
    file when one input file is given and it has an image suffix; otherwise a folder that
    mirrors the inputs' relative paths as `<stem>_x<scale><suffix>`. The suffix and format
    are the input's, or `format_name`'s (a FORMATS key) when given.

    Returns:
      (jobs, errors): (input, output, PIL format) per image; one line per input that is
      missing, an empty folder, or whose output would overwrite an input or another output.
    """
    output = Path(output)
    if format_name is not None:
        format_name = format_name.lower()
        if format_name not in FORMATS:
            raise UserError(f"--format {format_name} is not one of {', '.join(FORMATS)}")
    to_file = (len(inputs) == 1 and Path(inputs[0]).is_file() and not output.is_dir()
               and output.suffix.lower() in IMAGE_SUFFIXES)
    if not to_file and output.suffix.lower() in IMAGE_SUFFIXES and not output.is_dir():
        raise UserError(f"-o {output} names a file but the inputs are several images or a folder: "
                        "pass an output folder")
    if to_file and format_name and _format_for(output.suffix) != FORMATS[format_name][0]:
        raise UserError(f"--format {format_name} does not match -o {output}: drop --format or rename the file")
    files, errors = [], []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            # An output folder inside the input folder holds earlier outputs: not inputs.
            skip = output.resolve() if output.resolve() != path.resolve() else None
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                           and skip not in p.resolve().parents)
            if not found:
                errors.append(f"{path}: no images ({' '.join(IMAGE_SUFFIXES)}) in this folder")
            files += [(p, p.relative_to(path)) for p in found]
        elif path.is_file():
            files.append((path, Path(path.name)))
        else:
            errors.append(f"{path}: no such file or folder; skipped")
    sources = {p.resolve() for p, _ in files}
    jobs, taken = [], {}
    for path, relative in files:
        if to_file:
            target = output
        else:
            suffix = FORMATS[format_name][1] if format_name else path.suffix
            target = output / relative.parent / f"{relative.stem}_x{scale}{suffix}"
        file_format = FORMATS[format_name][0] if format_name else _format_for(target.suffix)
        if target.resolve() in sources:
            errors.append(f"{path}: the output {target} would overwrite an input file; skipped (choose another -o)")
        elif target.resolve() in taken:
            errors.append(f"{path}: its output {target} is also the output of {taken[target.resolve()]}; skipped")
        elif file_format is None:
            errors.append(f"{path}: no image format for the suffix of {target}; skipped (pass --format png)")
        else:
            taken[target.resolve()] = path
            jobs.append((path, target, file_format))
    return jobs, errors


def run_upscale_cli(args: argparse.Namespace) -> int:
    """`srgan-jax upscale`: write the SR of every input image, print each output path.

    Problems with single files (missing, unreadable, would overwrite an input) are one line
    each on stderr and do not stop the others. Returns 0, or 1 if any file failed.
    """
    upscaler = load_generator(args.checkpoint, tile=args.tile, overlap=args.overlap, batch=args.batch,
                              dtype=args.dtype)
    jobs, errors = plan_outputs(args.inputs, args.output, args.format, upscaler.scale)
    for line in errors:
        print(line, file=sys.stderr)
    if not jobs:
        raise UserError("no images to upscale (see above): pass image files or folders of images")
    from tqdm import tqdm

    failed = len(errors)
    for source, target, file_format in tqdm(jobs, unit="image", disable=len(jobs) < 2, dynamic_ncols=True):
        try:
            picture = read_image(source)
        except DECODE_ERRORS as err:
            tqdm.write(f"{source}: unreadable image ({err}); skipped", file=sys.stderr)
            failed += 1
            continue
        sr = upscaler(picture.pixels)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            write_image(target, sr, gray=picture.pixels.shape[-1] < 3, file_format=file_format,
                        icc_profile=picture.icc_profile)
        except OSError as err:
            tqdm.write(f"{target}: cannot write ({err}); skipped", file=sys.stderr)
            failed += 1
            continue
        tqdm.write(str(target))
    return 1 if failed else 0


# --------------------------------------------------------------------------- comparison figure

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


def run_compare_cli(args: argparse.Namespace) -> int:
    """`srgan-jax compare`: PNG figure bicubic | each model | HR, PSNR/SSIM under each panel.

    IMAGE is HR (mod-cropped to the scale; LR = MATLAB bicubic / scale) or, with --lr, the LR
    input itself (no HR panel, no scores). Scores are the paper protocol on the whole image
    (Y channel, border crop = scale), whatever --crop shows.
    """
    output = Path(args.output)
    if output.suffix.lower() != ".png":
        raise UserError(f"-o {output}: the figure is a PNG; give a file name ending in .png")
    try:
        pixels = read_image(args.image).pixels
    except DECODE_ERRORS as err:
        raise UserError(f"{args.image}: unreadable image ({err}); pass a PNG/JPEG/... file") from None
    rgb = np.repeat(pixels[..., :1], 3, axis=-1) if pixels.shape[-1] < 3 else pixels[..., :3]
    models = [(_label(c), load_generator(c)) for c in (args.checkpoint or [None])]
    scale = models[0][1].scale
    if any(upscaler.scale != scale for _, upscaler in models):
        raise UserError("the checkpoints upscale by different factors: compare models of one scale")
    if args.lr:
        lr, hr = rgb, None
    else:
        hr = rgb[:rgb.shape[0] - rgb.shape[0] % scale, :rgb.shape[1] - rgb.shape[1] % scale]
        if min(hr.shape[:2]) < 2 * scale + 11:  # SSIM's 11-px window after the border crop
            raise UserError(f"{args.image} is too small to score ({rgb.shape[1]}x{rgb.shape[0]}): pass an HR "
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
    crop = parse_crop(args.crop, *bicubic.shape[:2])
    output.parent.mkdir(parents=True, exist_ok=True)
    render_figure(panels, crop).save(output, format="PNG")
    print(output)
    return 0
