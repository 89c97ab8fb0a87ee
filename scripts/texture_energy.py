"""How much fine texture a generator adds: the mean squared Laplacian of Y, beside SRResNet's and HR's.

    python scripts/texture_energy.py --data-dir ../shared/data [--checkpoint srgan_mse_x4]
        [--images Set14/baboon.png,BSD100/108005.png,BSD100/175043.png]

LR is MATLAB bicubic / 4 of each HR image (as `srgan-jax compare` makes it). The energy is
mean((4 y - its 4 neighbours)^2) over the interior of the Y channel (MATLAB rgb2ycbcr, [16, 235]),
in float64; blur lowers it, texture and noise raise it. Also printed: the mean and largest
|checkpoint - SRResNet| per 8-bit channel value.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import srgan_jax
from srgan_jax import metrics
from srgan_jax.data.images import mod_crop, read_rgb
from srgan_jax.data.imresize import imresize


def laplacian_energy(image: np.ndarray) -> float:
    """Mean squared 4-neighbour Laplacian of the Y channel of a uint8 RGB image."""
    y = metrics.rgb_to_y(image).astype(np.float64)
    lap = 4 * y[1:-1, 1:-1] - y[:-2, 1:-1] - y[2:, 1:-1] - y[1:-1, :-2] - y[1:-1, 2:]
    return float(np.mean(lap ** 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--checkpoint", default="srgan_mse_x4")
    parser.add_argument("--images", default="Set14/baboon.png,BSD100/108005.png,BSD100/175043.png")
    args = parser.parse_args()
    model, srresnet = srgan_jax.load_generator(args.checkpoint), srgan_jax.load_generator("srresnet_x4")
    print("| image | SRResNet | checkpoint | HR | mean / max abs difference |\n|---|---:|---:|---:|---:|")
    for name in args.images.split(","):
        hr = mod_crop(read_rgb(Path(args.data_dir) / name), model.scale)
        lr = imresize(hr, 1.0 / model.scale)
        sr, base = model(lr), srresnet(lr)
        diff = np.abs(sr.astype(np.int16) - base.astype(np.int16))
        print(f"| {name} | {laplacian_energy(base):.1f} | {laplacian_energy(sr):.1f} | {laplacian_energy(hr):.0f} "
              f"| {diff.mean():.2f} / {diff.max()} |")


if __name__ == "__main__":
    main()
