"""Set5 / Set14 / BSD100 x4 evaluation tables (the paper protocol of SPEC.md).

Layout of `data_dir`: `<Set>/` holds the HR images, `<Set>_LR_x4/` (optional) the shipped LR
inputs under the same file names. HR images are mod-cropped to a multiple of the scale
(top-left kept) and converted to RGB; LR is either the shipped file or MATLAB bicubic / 4
of the HR (`imresize`). Every upscaler maps uint8 [h, w, 3] RGB LR to uint8 [4h, 4w, 3] SR,
scored with `metrics.psnr` / `metrics.ssim` (Y channel, 4-px border crop).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from srgan_jax import metrics
from srgan_jax.errors import UserError
from srgan_jax.data.images import DECODE_ERRORS, IMAGE_SUFFIXES, mod_crop, read_rgb
from srgan_jax.data.imresize import imresize, upscale_nearest

Upscaler = Callable[[np.ndarray], np.ndarray]
ImagePair = tuple[str, np.ndarray, np.ndarray]  # (name, lr uint8 [h, w, 3], hr uint8 [H, W, 3])


def lr_dir_name(set_name: str, scale: int = 4) -> str:
    """Folder of the shipped LR references of a set, e.g. 'Set5_LR_x4'."""
    return f"{set_name}_LR_x{scale}"


def resolve_lr_source(data_dir: str | Path, set_name: str, lr_source: str = "auto", scale: int = 4) -> str:
    """'shipped' or 'make': 'auto' picks 'shipped' when `<Set>_LR_x<scale>/` exists."""
    if lr_source not in ("auto", "shipped", "make"):
        raise ValueError(f"lr_source must be auto, shipped or make, got {lr_source!r}")
    if lr_source != "auto":
        return lr_source
    return "shipped" if (Path(data_dir) / lr_dir_name(set_name, scale)).is_dir() else "make"


def load_image_pairs(
    data_dir: str | Path, set_name: str, lr_source: str = "auto", scale: int = 4
) -> tuple[list[ImagePair], list[str]]:
    """Read one benchmark set as (name, lr, hr) uint8 RGB pairs, sorted by file name.

    HR is mod-cropped to a multiple of `scale`; LR is `<Set>_LR_x<scale>/<same file>`
    ('shipped') or `imresize(hr, 1 / scale)` ('make'); 'auto' = shipped where that folder
    exists. Problems do not stop the set: each unreadable image or LR/HR size mismatch
    becomes one line in `errors` (naming the file) and that image is skipped; a missing
    or empty set folder gives one line and no pairs.

    Returns:
      (pairs, errors): pairs of (file stem, lr [H/scale, W/scale, 3], hr [H, W, 3]).
    """
    data_dir = Path(data_dir)
    set_dir = data_dir / set_name
    if not set_dir.is_dir():
        return [], [f"{set_dir}: set folder not found; check --data-dir and --sets"]
    files = sorted(p for p in set_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        return [], [f"{set_dir}: no images ({', '.join(IMAGE_SUFFIXES)}) in the set folder"]
    source = resolve_lr_source(data_dir, set_name, lr_source, scale)
    lr_dir = data_dir / lr_dir_name(set_name, scale)
    if source == "shipped" and not lr_dir.is_dir():
        return [], [f"{lr_dir}: LR folder not found; use --lr-source make to downscale the HR images"]

    pairs, errors = [], []
    for hr_path in files:
        try:
            hr = read_rgb(hr_path)
        except DECODE_ERRORS as err:
            errors.append(f"{hr_path}: unreadable image ({err}); skipped")
            continue
        if min(hr.shape[:2]) < scale:
            errors.append(f"{hr_path}: {hr.shape[1]}x{hr.shape[0]} smaller than the scale {scale}; skipped")
            continue
        hr = mod_crop(hr, scale)
        h, w = hr.shape[:2]
        if source == "make":
            lr = imresize(hr, scale=1.0 / scale)
        else:
            lr_path = lr_dir / hr_path.name
            try:
                lr = read_rgb(lr_path)
            except FileNotFoundError:
                errors.append(f"{lr_path}: LR image missing for {hr_path.name}; skipped")
                continue
            except DECODE_ERRORS as err:
                errors.append(f"{lr_path}: unreadable image ({err}); skipped")
                continue
            if lr.shape[:2] != (h // scale, w // scale):
                errors.append(
                    f"{lr_path}: LR is {lr.shape[1]}x{lr.shape[0]} but HR {hr_path.name} is {w}x{h} "
                    f"(expected {w // scale}x{h // scale}); skipped"
                )
                continue
        pairs.append((hr_path.stem, lr, hr))
    return pairs, errors


def evaluate_set(upscale_fn: Upscaler, pairs: list[ImagePair]) -> dict:
    """Score an upscaler on (name, lr, hr) pairs with the paper protocol.

    Args:
      upscale_fn: uint8 [h, w, 3] RGB LR -> uint8 [H, W, 3] RGB SR (float in [0, 1] is also
        accepted: clipped and rounded to 8 bits before scoring).
      pairs: from `load_image_pairs`.

    Returns:
      {"psnr": mean dB, "ssim": mean, "n": count, "per_image": {name: {"psnr", "ssim"}}},
      Y channel, 4-px border crop.
    """
    if not pairs:
        raise ValueError("evaluate_set: no image pairs to evaluate")
    per_image = {}
    for name, lr, hr in pairs:
        sr = np.asarray(upscale_fn(lr))
        if sr.shape != hr.shape:
            raise UserError(f"{name}: upscaler gave {sr.shape} for HR {hr.shape}; it must upscale x4 to RGB")
        per_image[name] = {"psnr": metrics.psnr(sr, hr), "ssim": metrics.ssim(sr, hr)}
    return {
        "psnr": float(np.mean([v["psnr"] for v in per_image.values()])),
        "ssim": float(np.mean([v["ssim"] for v in per_image.values()])),
        "n": len(per_image),
        "per_image": per_image,
    }


def bicubic_upscale(lr: np.ndarray, scale: int = 4) -> np.ndarray:
    """MATLAB `imresize(lr, scale, 'bicubic')` on uint8 (rounded per axis), the bicubic baseline."""
    return imresize(lr, scale=scale)


def nearest_upscale(lr: np.ndarray, scale: int = 4) -> np.ndarray:
    """Nearest-neighbour x`scale` (pixel replication), the NN baseline."""
    return upscale_nearest(lr, scale)


BASELINES: dict[str, Upscaler] = {"nearest": nearest_upscale, "bicubic": bicubic_upscale}


def format_table(results: dict[str, dict[str, dict]], lr_source_used: dict[str, str]) -> str:
    """Markdown table of {method: {set: evaluate_set result}}; `lr_source_used` = {set: source}."""
    lines = [
        "| method | set | PSNR (dB) | SSIM | images | LR source |",
        "|---|---|---:|---:|---:|---|",
    ]
    for method, by_set in results.items():
        for set_name, r in by_set.items():
            lines.append(
                f"| {method} | {set_name} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['n']} "
                f"| {lr_source_used.get(set_name, '?')} |"
            )
    return "\n".join(lines)


def _methods(args: argparse.Namespace) -> dict[str, Upscaler]:
    """The upscalers to score: one baseline, or the model plus both baselines."""
    if args.method is not None:
        if args.checkpoint is not None:
            raise UserError("--method scores a baseline and ignores --checkpoint; pass only one of them")
        return {args.method: BASELINES[args.method]}
    from srgan_jax.upscaling.engine import load_generator  # JAX only when a model is scored

    return {"model": load_generator(args.checkpoint), **BASELINES}


def run_cli(args: argparse.Namespace) -> int:
    """`srgan-jax evaluate`: print a PSNR/SSIM table, optionally write JSON.

    JSON layout: one method (`--method`) -> {set: {"psnr", "ssim", "n", "per_image"}};
    the model (no `--method`) -> {"model" | "nearest" | "bicubic": {set: {...}}}.
    Per-file problems go to stderr, one line each; returns 0 if anything was evaluated.
    """
    if not args.data_dir:
        raise UserError("no data folder: pass --data-dir <folder with Set5/, Set14/, BSD100/> or set SRGAN_DATA_DIR")
    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        raise UserError(f"data folder {data_dir} not found; pass --data-dir <folder with Set5/, Set14/, ...>")
    if not args.sets:
        raise UserError("no sets given; pass --sets Set5,Set14,BSD100")
    methods = _methods(args)
    results: dict[str, dict[str, dict]] = {method: {} for method in methods}
    lr_source_used = {}
    for set_name in args.sets:
        pairs, errors = load_image_pairs(data_dir, set_name, args.lr_source)
        for line in errors:
            print(line, file=sys.stderr)
        if not pairs:
            continue
        lr_source_used[set_name] = resolve_lr_source(data_dir, set_name, args.lr_source)
        for method, upscale_fn in methods.items():
            results[method][set_name] = evaluate_set(upscale_fn, pairs)
    if not lr_source_used:
        raise UserError(f"no images could be evaluated (see above); check --data-dir {data_dir} and --sets")
    print(format_table(results, lr_source_used))
    if args.json:
        payload = results[args.method] if args.method is not None else results
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0
