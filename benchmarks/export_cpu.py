"""CPU images/s of every `srgan-jax export` runtime beside JAX, and their parity, in one run.

    python benchmarks/export_cpu.py [--checkpoint srresnet_x4] [--image ../shared/data/Set14/baboon.png]
                                    [--lr-sizes 24,128] [--calls 5] [--json out.json]

Exports the generator in all four formats into a temporary folder, then times, at batch 1 on
each LR size (a crop of --image): JAX as `upscale` runs it (`load_generator`, tile 0: the
XLA:CPU convolution forms) and each export in its own runtime (`export.load_exported`, float32
signature). Images/s is 1 / the median of --calls calls after one warm-up. Parity: the largest
|float SR difference| from JAX, and the fraction of uint8 values that differ from `upscale`'s.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from srgan_jax import export
from srgan_jax.data.images import read_image
from srgan_jax.upscaling import engine


def median_seconds(function: Callable[[np.ndarray], np.ndarray], lr: np.ndarray, calls: int) -> float:
    function(lr)
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        function(lr)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="checkpoint or shipped name (default srresnet_x4)")
    parser.add_argument("--image", default=None, help="image to crop the LR inputs from (default: random)")
    parser.add_argument("--lr-sizes", default="24,128")
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    sizes = [int(s) for s in args.lr_sizes.split(",")]
    if args.image:
        image = read_image(args.image).rgb()
    else:
        image = np.random.default_rng(0).integers(0, 256, (max(sizes), max(sizes), 3), dtype=np.uint8)
    upscaler = engine.load_generator(args.checkpoint, tile=0)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        runtimes: dict[str, tuple[Callable, Callable]] = {}
        files_mib = {}
        export_seconds = {}
        for fmt in export.FORMATS:
            start = time.perf_counter()
            export.export_generator(args.checkpoint, fmt, Path(tmp) / fmt)
            export_seconds[fmt] = round(time.perf_counter() - start, 1)
            files_mib[fmt] = round(sum(f.stat().st_size for f in (Path(tmp) / fmt).rglob("*")
                                       if f.is_file()) / 2**20, 2)
            runtimes[fmt] = (export.load_exported(Path(tmp) / fmt, "float32"),
                             export.load_exported(Path(tmp) / fmt, "uint8"))
        for size in sizes:
            lr_u8 = np.ascontiguousarray(image[:size, :size])[None]
            lr = lr_u8.astype(np.float32) / 255.0

            def jax_float(x: np.ndarray) -> np.ndarray:
                return np.asarray(upscaler.apply(upscaler.variables, x, np.array(x.shape[1:3], np.int32)))

            want, want_u8 = jax_float(lr), upscaler(lr_u8[0])
            seconds = median_seconds(jax_float, lr, args.calls)
            results.append({"runtime": "jax (upscale)", "lr_size": size, "images_per_s": round(1 / seconds, 3)})
            for fmt, (run_float, run_uint8) in runtimes.items():
                seconds = median_seconds(run_float, lr, args.calls)
                diff_u8 = np.abs(run_uint8(lr_u8)[0].astype(np.int16) - want_u8)
                results.append({"runtime": fmt, "lr_size": size, "images_per_s": round(1 / seconds, 3),
                                "max_abs_float_diff": float(np.abs(run_float(lr) - want).max()),
                                "uint8_max_diff": int(diff_u8.max()),
                                "uint8_fraction_differing": float(np.mean(diff_u8 > 0))})
            print(json.dumps(results[-len(runtimes) - 1:]))
    report = {"checkpoint": upscaler.checkpoint, "image": args.image, "batch": 1, "calls": args.calls,
              "machine": {"cpu": cpu_model(), "cores": engine.cpu_cores()}, "versions": export.tool_versions(),
              "file_mib": files_mib, "export_seconds": export_seconds, "results": results}
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
