"""The health of a GAN run, read from every checkpoint of its workdir and from metrics.jsonl.

    python scripts/gan_health.py WORKDIR --data-dir ../shared/data [--init pretrained/srresnet_x4]
        [--image Set14/baboon] [--json OUT.json] [--markdown OUT.md]

One row per checkpoint (the `--init` generator as step 0): the grid measure of
`metrics.shuffle_grid_prominence` on the fixed validation image, SR over HR (1 = as much
period-s grid as the photo itself, s = the scale; the pixel-shuffle checkerboard raises it), its Y-PSNR
(paper protocol), and the means over the steps since the previous row of D(real), D(fake),
the adversarial and the content loss as `metrics.jsonl` logged them. A collapsed run shows
D(real) -> 1 with D(fake) -> 0 throughout, the content loss doubling, or SR that stops
changing (the PSNR column frozen).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import numpy as np

from srgan_jax import checkpoints, metrics
from srgan_jax.data.images import mod_crop, read_rgb
from srgan_jax.evaluate import lr_dir_name
from srgan_jax.upscaling import engine

_LOGGED = ("d_real", "d_fake", "adversarial_loss", "content_loss")


def checkpoint_dirs(workdir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every checkpoint under `workdir/checkpoints`, oldest first."""
    folders = (p for p in (workdir / "checkpoints").iterdir() if p.name.isdigit() and (p / "generator").is_dir())
    return sorted((int(p.name), p) for p in folders)


def logged_means(rows: list[dict], after: int, upto: int) -> dict[str, float | None]:
    """Mean of each logged quantity over the rows with after < step <= upto (None: no rows)."""
    window = [r for r in rows if after < r["step"] <= upto]
    return {k: float(np.mean([r[k] for r in window])) if window else None for k in _LOGGED}


def health_rows(workdir: Path, upscaler: engine.Upscaler, lr: np.ndarray, hr: np.ndarray) -> list[dict]:
    """Rows for step 0 (`upscaler` as loaded) and every checkpoint's weights in it, on (lr, hr)."""
    grid = functools.partial(metrics.shuffle_grid_prominence, period=upscaler.scale, crop_border=upscaler.scale)
    hr_prominence = grid(hr)
    log_file = workdir / "metrics.jsonl"
    logged = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()] if log_file.exists() else []
    rows, previous = [], 0
    for step, folder in [(0, None)] + checkpoint_dirs(workdir):
        if step:
            upscaler.variables = checkpoints.load_generator_variables(folder, upscaler.variables)
        sr = upscaler(lr)
        rows.append({"step": step, "grid_vs_hr": grid(sr) / hr_prominence,
                     "psnr": metrics.psnr(sr, hr, crop_border=upscaler.scale), **logged_means(logged, previous, step)})
        previous = step
    return rows


def to_markdown(rows: list[dict], image: str) -> str:
    def cell(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    lines = [f"| step | grid SR/HR ({image}) | Y-PSNR ({image}) | D(real) | D(fake) | adversarial | content (MSE) |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['step']} | {cell(r['grid_vs_hr'], 2)} | {cell(r['psnr'], 2)} | {cell(r['d_real'], 3)} | "
                     f"{cell(r['d_fake'], 3)} | {cell(r['adversarial_loss'], 3)} | {cell(r['content_loss'], 5)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="folder holding <Set>/ and <Set>_LR_x<scale>/ (the --init generator's scale)")
    parser.add_argument("--init", type=Path, default=Path("pretrained/srresnet_x4"), help="step 0's generator")
    parser.add_argument("--image", default="Set14/baboon", help="<Set>/<name> of the validation image")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    set_name, name = args.image.split("/")
    upscaler = engine.load_generator(args.init, tile=0)
    hr = mod_crop(read_rgb(args.data_dir / set_name / f"{name}.png"), upscaler.scale)
    lr = read_rgb(args.data_dir / lr_dir_name(set_name, upscaler.scale) / f"{name}.png")
    rows = health_rows(args.workdir, upscaler, lr, hr)
    table = to_markdown(rows, name)
    sys.stdout.write(table)
    if args.markdown:
        args.markdown.write_text(table)
    if args.json:
        args.json.write_text(json.dumps({"image": args.image, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
