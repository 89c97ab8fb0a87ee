"""Which layers of a GAN-trained generator carry its pixel-shuffle grid: put the init's back, one group at a time.

    python scripts/grid_layers.py CHECKPOINT --data-dir ../shared/data [--init pretrained/srresnet_x4]
        [--image Set14/baboon]

For each group of layers (the trunk, each upsample stage, both, the tail conv, the output
stage, and the biases of the output stage alone), the grid measure of `scripts/gan_health.py`
(`metrics.shuffle_grid_prominence` of SR over HR's) of CHECKPOINT with that group's variables
taken from --init instead. Also how far each top-level conv kernel moved from --init (norm of
the change over the norm). pretrained/README.md, SRGAN-MSE, shows a run of it.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import jax
import numpy as np

from srgan_jax import checkpoints, metrics
from srgan_jax.data.images import mod_crop, read_rgb
from srgan_jax.evaluate import lr_dir_name
from srgan_jax.upscaling import engine

GROUPS = {
    "trunk (head, blocks, body)": ("head_", "block_", "body_"),
    "upsample_0 conv": ("upsample_0_conv",),
    "upsample_1 conv": ("upsample_1_conv",),
    "both upsample stages (convs and PReLUs)": ("upsample_0", "upsample_1"),
    "tail_conv": ("tail_conv",),
    "both upsample stages and tail_conv": ("upsample_0", "upsample_1", "tail_conv"),
}
OUTPUT_CONVS = ("upsample_0_conv", "upsample_1_conv", "tail_conv")


def with_layers_from(init: dict, trained: dict, prefixes: tuple[str, ...]) -> dict:
    """`trained` with every top-level layer whose name starts with one of `prefixes` taken from `init`."""
    mixed = copy.deepcopy(trained)
    for collection in mixed:
        for name in mixed[collection]:
            if name.startswith(prefixes):
                mixed[collection][name] = copy.deepcopy(init[collection][name])
    return mixed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--init", default="pretrained/srresnet_x4")
    parser.add_argument("--image", default="Set14/baboon")
    args = parser.parse_args()
    set_name, stem = args.image.split("/")
    upscaler = engine.load_generator(args.init, tile=0)
    scale = upscaler.scale
    hr = mod_crop(read_rgb(Path(args.data_dir) / set_name / f"{stem}.png"), scale)
    lr = read_rgb(Path(args.data_dir) / lr_dir_name(set_name, scale) / f"{stem}.png")
    init = jax.device_get(upscaler.variables)
    trained = jax.device_get(checkpoints.load_generator_variables(args.checkpoint, upscaler.variables))
    hr_prominence = metrics.shuffle_grid_prominence(hr, period=scale)

    def grid(variables: dict) -> float:
        upscaler.variables = variables
        return metrics.shuffle_grid_prominence(upscaler(lr), period=scale) / hr_prominence

    print(f"{'as trained':45s} grid {grid(trained):8.2f}")
    for label, prefixes in GROUPS.items():
        print(f"{label:45s} grid {grid(with_layers_from(init, trained, prefixes)):8.2f}")
    biases = copy.deepcopy(trained)
    for name in OUTPUT_CONVS:
        biases["params"][name]["bias"] = init["params"][name]["bias"]
    print(f"{'biases of the upsample and tail convs':45s} grid {grid(biases):8.2f}")
    for name in sorted(trained["params"]):
        kernel = trained["params"][name].get("kernel")
        if kernel is not None:
            start = init["params"][name]["kernel"]
            moved = np.linalg.norm(kernel - start) / np.linalg.norm(start)
            print(f"{name:20s} kernel moved {100 * moved:6.1f} %  mean |w| at init {np.abs(start).mean():.4f}")


if __name__ == "__main__":
    main()
