"""Validation during training: Y-PSNR of G and of MATLAB bicubic on held-out HR images."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import flax.linen as nn
import jax
import numpy as np
from PIL import Image

from srgan_jax import config as config_lib
from srgan_jax import metrics, parallel
from srgan_jax.data import memory_source
from srgan_jax.data.images import mod_crop
from srgan_jax.data.imresize import imresize
from srgan_jax.training.steps import eval_step

Results = dict[str, dict]  # image name -> {"psnr", "bicubic_psnr", "sr": uint8 [H, W, 3]}


def load_eval_images(spec: config_lib.RunSpec) -> dict[str, np.ndarray]:
    """Validation HR images (uint8 RGB), mod-cropped to the scale; {} when none are configured."""
    if spec.eval_images is None:
        return {}
    images = memory_source.load_source(spec.eval_images, "config.eval.image_dir")
    return {name: mod_crop(image, spec.generator.scale) for name, image in images.items()}


def evaluate_images(upscale: Callable[[jax.Array], jax.Array], images: dict[str, np.ndarray], scale: int
                    ) -> Results:
    """Y-channel PSNR (border crop = scale) of `upscale` (LR [0, 1] -> SR [-1, 1]) and of bicubic."""
    results = {}
    for name, hr in images.items():
        lr = imresize(hr, 1.0 / scale)
        sr = metrics.sr_to_uint8(np.asarray(upscale(np.asarray(lr[None], np.float32) / 255.0)))[0]
        bicubic = imresize(lr, float(scale))
        results[name] = {"psnr": metrics.psnr(sr, hr, crop_border=scale),
                         "bicubic_psnr": metrics.psnr(bicubic, hr, crop_border=scale), "sr": sr}
    return results


class Validator:
    """`validator(variables)` -> `Results` for G's inference `variables`, placed as the strategy
    places the state (`place_state`), on the held-out images, computed where the strategy runs it."""

    def __init__(self, images: dict[str, np.ndarray], generator: nn.Module, scale: int,
                 strategy: parallel.Strategy):
        self.images, self.scale = images, scale
        self._upscale = strategy.wrap_validation(functools.partial(eval_step, generator=generator))

    def __call__(self, variables: dict) -> Results:
        return evaluate_images(functools.partial(self._upscale, variables), self.images, self.scale)


def mean_psnr(results: Results) -> dict[str, float]:
    """{"val_psnr", "val_bicubic_psnr"}: means over the validation images."""
    return {"val_psnr": float(np.mean([r["psnr"] for r in results.values()])),
            "val_bicubic_psnr": float(np.mean([r["bicubic_psnr"] for r in results.values()]))}


def write_samples(workdir: Path, results: Results, scale: int) -> None:
    """Write each validation image's SR output to the workdir and print its PSNR against bicubic."""
    for name, result in results.items():
        out = workdir / f"sample_{Path(name).stem}_x{scale}.png"
        Image.fromarray(result["sr"]).save(out)
        print(f"{name}: SR {result['psnr']:.2f} dB vs bicubic {result['bicubic_psnr']:.2f} dB "
              f"(Y, crop {scale}); wrote {out}")
