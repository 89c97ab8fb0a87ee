"""`srgan-jax benchmark`: throughput of the train steps, inference and the input pipeline.

The train steps are training's own (`srgan_jax.training.steps`), built by `srgan_jax.models`
from the paper defaults (`configs/default.py`, shipped as `srgan_jax.configs.default`) and
wrapped by the same `srgan_jax.parallel` strategy as in `train_and_evaluate` (mesh: jit with
the state replicated and donated, the batch sharded; pmap: per-device slices). Batches are
synthetic (LR uniform in [0, 1], HR uniform in [-1, 1]) and placed on the devices once, so
no input pipeline runs inside the timed loop; `input` times the tf.data pipeline alone.

Each benchmark gives one dict (see `run_benchmark`): compile time (lower + compile), the
median of `steps` timed calls after `warmup` untimed ones (each call waited for with
`jax.block_until_ready`), XLA's FLOP count, memory and the software/device versions.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from srgan_jax import config as config_lib
from srgan_jax import host_memory, models, parallel
from srgan_jax.errors import UserError, first_line
from srgan_jax.networks import vgg19
from srgan_jax.networks.losses import ContentLoss
from srgan_jax.training.state import create_state, generator_variables
from srgan_jax.training.steps import bind_train_steps, eval_step

TRAIN_BENCHMARKS = ("g_step", "gan_step", "vgg_gan_step")
BENCHMARKS = TRAIN_BENCHMARKS + ("infer", "input")
# Modes of the project's PyTorch reference (benchmarks/torch_reference.py).
TORCH_MODES = {"g_step": "g", "gan_step": "gan", "vgg_gan_step": "vgg_gan", "infer": "infer"}
TORCH_SCALE = 4  # the reference's SCALE: its LR side is hr_size / 4
ADVERSARIAL_WEIGHT = 1e-3  # SPEC "Losses": l_SR = content + 1e-3 * adversarial
# benchmarks/ of the source checkout the package runs from (an installed wheel has none).
_CHECKOUT = Path(__file__).resolve().parents[1]
TORCH_REFERENCE = _CHECKOUT / "benchmarks" / "torch_reference.py" if (_CHECKOUT / "setup.cfg").is_file() else None
RANDOM_VGG = "random (same FLOPs as ImageNet VGG19)"


@dataclasses.dataclass(frozen=True)
class Settings:
    """What to measure. `hr_size` is the train crop; inference runs on `infer_lr_size` LR inputs."""

    batch: int
    hr_size: int
    blocks: int
    features: int
    dtype: str
    parallel: str
    steps: int
    warmup: int
    infer_lr_size: int
    scale: int = 4
    vgg_weights: str | None = None
    image_dir: str | None = None
    tfds_data_dir: str | None = None

    def __post_init__(self):
        if self.parallel not in config_lib.PARALLEL:
            raise UserError(f"--parallel {self.parallel}: use one of {', '.join(config_lib.PARALLEL)}")
        if self.steps < 1 or self.warmup < 0:
            raise UserError(f"--steps={self.steps} --warmup={self.warmup}: need steps >= 1 and warmup >= 0")
        if self.batch < 1 or self.infer_lr_size < 1:
            raise UserError(f"--batch={self.batch} --infer-lr-size={self.infer_lr_size}: both must be >= 1")


def _content(name: str) -> str:
    """The content loss a benchmark trains with (`config.loss.content`)."""
    return "vgg54" if name == "vgg_gan_step" else "mse"


def benchmark_config(name: str, settings: Settings) -> ml_collections.ConfigDict:
    """The default config with the benchmark's model, batch, precision, parallelism and losses
    (checked by `benchmark_spec`)."""
    from srgan_jax.configs import default  # the paper defaults, shipped with the package

    config = default.get_config()
    config.model.num_blocks = settings.blocks
    config.model.features = settings.features
    config.model.scale = settings.scale
    config.data.hr_size = settings.hr_size
    config.train.batch_size = settings.batch
    config.dtype = settings.dtype
    config.parallel = settings.parallel
    config.loss.content = _content(name)
    config.loss.adversarial_weight = ADVERSARIAL_WEIGHT if name in ("gan_step", "vgg_gan_step") else 0.0
    if settings.vgg_weights and name == "vgg_gan_step" and not Path(settings.vgg_weights).is_file():
        raise UserError(f"--vgg-weights {settings.vgg_weights} not found: convert them with srgan-jax "
                        "convert-vgg19, or leave the flag out to time random weights (same FLOPs)")
    config.vgg_weights = settings.vgg_weights or RANDOM_VGG
    return config


def benchmark_spec(name: str, settings: Settings) -> config_lib.RunSpec:
    """`benchmark_config`, resolved once (`config.run_spec`)."""
    return config_lib.run_spec(benchmark_config(name, settings))


# --------------------------------------------------------------------------- measuring


def _flops(analysis: Any) -> float | None:
    """The "flops" entry of an XLA cost analysis (a dict, or a list of dicts on some JAX versions)."""
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    flops = (analysis or {}).get("flops")
    return float(flops) if flops is not None and flops >= 0 else None


def _step_flops(lowered: jax.stages.Lowered, compiled: jax.stages.Compiled, per_device_program: bool
                ) -> tuple[float | None, float | None]:
    """(FLOPs of one step on all devices, per device) from XLA's cost analysis.

    Counted on the lowered program, before backend rewrites: on GPU the compiled program's
    convolutions are cuDNN calls that its cost analysis counts as nearly free. A mesh lowers
    the global program, pmap one device's. Falls back to the compiled program's count.
    """
    devices = jax.device_count()
    flops = _flops(lowered.cost_analysis())
    if flops is None:
        flops, per_device_program = _flops(compiled.cost_analysis()), True  # compiled: one device's
    if flops is None:
        return None, None
    return (flops * devices, flops) if per_device_program else (flops, flops / devices)


def _peak_memory_bytes() -> int | None:
    """Largest `peak_bytes_in_use` over local devices since the process started; None if unreported."""
    peaks = []
    for device in jax.local_devices():
        stats = device.memory_stats()
        if not stats or "peak_bytes_in_use" not in stats:
            return None
        peaks.append(int(stats["peak_bytes_in_use"]))
    return max(peaks)


def _cpu_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def environment() -> dict:
    """Device, software versions, XLA_FLAGS and machine load, recorded with every result."""
    import flax
    import jaxlib

    return {"backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
            "device_count": jax.device_count(), "cpu_threads": _cpu_threads(),
            "load_avg_1m": os.getloadavg()[0], "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "flax": flax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", "")}


def _compile(function: Callable, *args: Any) -> tuple[jax.stages.Lowered, jax.stages.Compiled, float]:
    """Lower and compile a strategy-wrapped function (with the options it was wrapped with)."""
    start = time.perf_counter()
    lowered = function.lower(*args)
    compiled = lowered.compile()
    return lowered, compiled, time.perf_counter() - start


def _timed(call: Callable[[Any], Any], carry: Any, steps: int, warmup: int) -> list[float]:
    """Seconds of each of `steps` calls `carry = call(carry)`, after `warmup` untimed ones."""
    for _ in range(warmup):
        carry = jax.block_until_ready(call(carry))
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        carry = jax.block_until_ready(call(carry))
        seconds.append(time.perf_counter() - start)
    return seconds


def _summary(lowered: jax.stages.Lowered, compiled: jax.stages.Compiled, compile_s: float, seconds: list[float],
             batch: int, use_pmap: bool) -> dict:
    median = statistics.median(seconds)
    flops, per_device = _step_flops(lowered, compiled, per_device_program=use_pmap)
    memory = compiled.memory_analysis()
    return {
        "compile_s": compile_s, "step_s_median": median, "step_s": seconds,
        "steps_per_s": 1.0 / median, "images_per_s": batch / median,
        "images_per_s_per_device": batch / median / jax.device_count(),
        "flops_per_step": flops, "flops_per_step_per_device": per_device,
        "tflops_per_s": None if flops is None else flops / median / 1e12,
        "peak_memory_bytes": _peak_memory_bytes(),
        "xla_temp_bytes": None if memory is None else int(memory.temp_size_in_bytes),
        "xla_memory_bytes": None if memory is None else int(
            memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes
            - memory.alias_size_in_bytes),
    }


def _synthetic_batch(batch: int, hr_size: int, scale: int) -> dict:
    """LR uniform in [0, 1] and HR uniform in [-1, 1], the training batch layout."""
    rng = np.random.default_rng(0)
    lr_size = hr_size // scale
    return {"lr": rng.random((batch, lr_size, lr_size, 3), dtype=np.float32),
            "hr": rng.random((batch, hr_size, hr_size, 3), dtype=np.float32) * 2.0 - 1.0}


def _content_loss(spec: config_lib.RunSpec, vgg_weights: str | None) -> tuple[ContentLoss, str | None]:
    """Training's content loss (`models.create_content_loss`); VGG on random weights without a file."""
    if spec.content_layer is None:
        return models.create_content_loss(spec), None
    if vgg_weights:
        return models.create_content_loss(spec), vgg_weights
    features = vgg19.random_feature_extractor((spec.content_layer,), seed=0, dtype=spec.dtype)
    return models.create_content_loss(spec, features), RANDOM_VGG


def _describe(name: str, settings: Settings, hr_size: int, scale: int) -> dict:
    options = parallel.create_strategy(settings.parallel == "pmap").compiler_options
    return {"benchmark": name, "parallel": settings.parallel, "dtype": settings.dtype, "batch": settings.batch,
            "scale": scale, "hr_size": hr_size, "lr_size": hr_size // scale, "blocks": settings.blocks,
            "features": settings.features, **environment(), "compiler_options": options}


# --------------------------------------------------------------------------- memory

# Training steps keep every layer's output for the backward pass and make a gradient of each:
# 2 x the float32 outputs of all modules (convs, BatchNorms, PReLUs) of G, of D on three
# batches (real and fake for its update, SR for G's) and of VGG on two (SR and HR). Output
# resolution adds workspace that no module outputs (the tail convolution's row products, the
# loss and their gradients): 1.5 KB per HR pixel. Inference frees each layer after the next:
# XLA holds two activations of the largest layer, plus the tail's workspace (256 B per HR
# pixel). Checked against XLA's own buffer assignment (`memory_analysis`: arguments + outputs
# + temporaries - aliased) on CPU: estimate / XLA = 1.47 for the paper-size g_step (batch 16
# and 32), 2.0 for gan_step and vgg_gan_step, 1.1-1.8 for 1-4 blocks of 8-64 features, 1.35-1.55
# for inference; never below 1 (tests/test_benchmark.py checks small models; results record both).
_TRAIN_ACTIVATION_COPIES = 2
_TRAIN_HR_PIXEL_BYTES = 1536
_INFER_LARGEST_COPIES = 2
_INFER_HR_PIXEL_BYTES = 256


def _tree_bytes(tree: Any) -> int:
    return sum(int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(tree))


def _module_outputs(module: Any, image: jax.ShapeDtypeStruct, **kwargs: Any) -> tuple[int, int]:
    """(total, largest) float32 bytes of the outputs of `module` and every submodule on one
    image, from shapes only (`jax.eval_shape`)."""
    _, variables = jax.eval_shape(lambda x: module.init_with_output(jax.random.key(0), x, capture_intermediates=True,
                                                                     **kwargs), image)
    sizes = [int(np.prod(leaf.shape)) * 4 for leaf in jax.tree.leaves(variables["intermediates"])]
    return sum(sizes), max(sizes)


def memory_needed(name: str, settings: Settings) -> tuple[int, int, int]:
    """(fixed bytes per device, bytes per image on its device, bytes per image on the host) of
    benchmark `name`, estimated from shapes alone (nothing is allocated; approximate).

    Fixed: the state (or inference variables) twice, itself and its gradients and updates;
    for VGG losses also VGG19's weights. Per image on the device: its activations
    (`_TRAIN_ACTIVATION_COPIES` and the other factors above) and float32 LR and HR. On the
    host: the synthetic batch's numpy copy of LR and HR.
    """
    spec = benchmark_spec(name, settings)
    scale = spec.generator.scale
    hr = settings.infer_lr_size * scale if name == "infer" else settings.hr_size
    lr = hr // scale
    generator, discriminator = models.create_models(spec)
    image_bytes = 4 * 3 * (hr * hr + lr * lr)
    lr_image = jax.ShapeDtypeStruct((1, lr, lr, 3), np.float32)
    hr_image = jax.ShapeDtypeStruct((1, hr, hr, 3), np.float32)
    if name == "infer":
        state = jax.eval_shape(lambda: create_state(spec, jax.random.key(0), generator, None))
        activations = _INFER_LARGEST_COPIES * _module_outputs(generator, lr_image)[1] + _INFER_HR_PIXEL_BYTES * hr * hr
        return 2 * _tree_bytes(generator_variables(state)), activations + image_bytes, image_bytes
    state = jax.eval_shape(lambda: create_state(spec, jax.random.key(0), generator, discriminator))
    fixed = 2 * _tree_bytes(state)
    outputs = _module_outputs(generator, lr_image, train=True)[0]
    if discriminator is not None:
        outputs += 3 * _module_outputs(discriminator, hr_image, train=True)[0]
    if spec.content_layer is not None:
        features = vgg19.VGG19(layers=(spec.content_layer,))
        outputs += 2 * _module_outputs(features, hr_image)[0]
        fixed += _tree_bytes(jax.eval_shape(lambda x: features.init(jax.random.key(0), x), hr_image))
    activations = _TRAIN_ACTIVATION_COPIES * outputs + _TRAIN_HR_PIXEL_BYTES * hr * hr
    return fixed, activations + image_bytes, image_bytes


def _device_memory_bytes() -> int | None:
    """The smallest memory limit of the local accelerators; None if unreported."""
    limits = [(device.memory_stats() or {}).get("bytes_limit") for device in jax.local_devices()]
    return None if None in limits else min(limits)


def check_memory(name: str, settings: Settings) -> None:
    """Raise UserError (the numbers and the largest batch that fits) if benchmark `name` needs
    more memory than is available: `memory_needed` against the host's available memory on the
    CPU (its devices, forced host devices too, share it), else per device against the
    accelerator's limit. Silent where availability is unknown."""
    if name == "input":
        return
    fixed, per_image, host_per_image = memory_needed(name, settings)
    devices = jax.device_count()
    if jax.default_backend() == "cpu":
        per_image += host_per_image
        need, available, where = devices * fixed + settings.batch * per_image, host_memory.available_bytes(), "host"
        fits = None if available is None else (available - devices * fixed) // per_image
    else:
        need, available, where = fixed + -(-settings.batch // devices) * per_image, _device_memory_bytes(), "device"
        fits = None if available is None else (available - fixed) // per_image * devices
    if available is not None and need > available:
        raise UserError(f"--what {name} --batch {settings.batch}: needs about {need / 2**30:,.1f} GiB "
                        f"({per_image / 2**20:,.1f} MiB per image, estimated), {available / 2**30:,.1f} GiB of "
                        f"{where} memory available: lower --batch (about {max(fits, 0)} fits)")


# --------------------------------------------------------------------------- benchmarks


def run_train_step(name: str, settings: Settings) -> dict:
    """Time `g_step` (SRResNet), `gan_step` (SRGAN-MSE) or `vgg_gan_step` (SRGAN-VGG54) as training runs it."""
    spec = benchmark_spec(name, settings)
    strategy = parallel.create_strategy(spec.pmap, spec.batch_size)
    generator, discriminator = models.create_models(spec, strategy.bn_axis_name)
    content_loss, vgg_weights = _content_loss(spec, settings.vgg_weights)
    steps = bind_train_steps(spec, content_loss)
    function = strategy.wrap_train_step(steps.g if name == "g_step" else steps.gan)
    state = strategy.place_state(create_state(spec, jax.random.key(spec.seed), generator, discriminator,
                                              strategy.wrap_init))
    batch = strategy.place_batch(_synthetic_batch(settings.batch, settings.hr_size, spec.generator.scale))
    lowered, compiled, compile_s = _compile(function, state, batch)
    # The state is donated: each call consumes the previous call's state, as in training.
    seconds = _timed(lambda current: compiled(current, batch)[0], state, settings.steps, settings.warmup)
    return {**_describe(name, settings, settings.hr_size, spec.generator.scale), "steps": settings.steps,
            "warmup": settings.warmup, "content_loss": _content(name), "vgg_weights": vgg_weights,
            **_summary(lowered, compiled, compile_s, seconds, settings.batch, settings.parallel == "pmap")}


def run_infer(settings: Settings) -> dict:
    """Time `eval_step` (G with running BatchNorm averages) on `infer_lr_size` LR inputs."""
    spec = benchmark_spec("infer", settings)
    scale = spec.generator.scale
    strategy = parallel.create_strategy(spec.pmap, spec.batch_size)
    generator, _ = models.create_models(spec)
    variables = generator_variables(create_state(spec, jax.random.key(spec.seed), generator, None,
                                                 strategy.wrap_init))
    function = strategy.wrap_eval(functools.partial(eval_step, generator=generator))
    variables = strategy.place_state(variables)
    lr = strategy.place_batch(_synthetic_batch(settings.batch, settings.infer_lr_size * scale, scale)["lr"])
    lowered, compiled, compile_s = _compile(function, variables, lr)
    seconds = _timed(lambda _: compiled(variables, lr), None, settings.steps, settings.warmup)
    hr_size = settings.infer_lr_size * scale
    summary = _summary(lowered, compiled, compile_s, seconds, settings.batch, settings.parallel == "pmap")
    summary["output_megapixels_per_s"] = summary["images_per_s"] * hr_size * hr_size / 1e6
    return {**_describe("infer", settings, hr_size, scale), "steps": settings.steps, "warmup": settings.warmup,
            **summary}


def run_input(settings: Settings) -> dict:
    """HR/LR pairs per second of the tf.data folder pipeline on `image_dir` (required)."""
    if not settings.image_dir:
        raise UserError("the input benchmark needs --image-dir, a folder of training images (e.g. T91)")
    image_dir = Path(settings.image_dir).expanduser()
    if not image_dir.is_dir():
        raise UserError(f"image folder {image_dir} not found: pass --image-dir with a folder of PNG/JPEG images")
    try:
        from srgan_jax.data import tfds_source
    except ImportError as err:
        raise UserError(f"the input benchmark needs TensorFlow and tensorflow-datasets ({err}): "
                        "pip install -e '.[data]'") from err
    config = benchmark_config("input", settings)
    config.data.image_dir = str(image_dir)
    config.data.tfds_data_dir = settings.tfds_data_dir or ""
    spec = config_lib.run_spec(config)
    measured = tfds_source.measure_throughput(spec.train_tfds, hr_size=spec.hr_size, scale=spec.generator.scale,
                                              batch_size=settings.batch, num_batches=settings.steps, seed=spec.seed)
    return {**_describe("input", settings, settings.hr_size, settings.scale), "steps": settings.steps,
            "image_dir": str(image_dir), "startup_s": measured["startup_s"],
            "steps_per_s": measured["pairs_per_s"] / settings.batch, "images_per_s": measured["pairs_per_s"],
            "images_per_s_per_device": None}


def run_benchmark(name: str, settings: Settings) -> dict:
    """One benchmark of `BENCHMARKS` -> its result dict (`check_memory` first is the caller's).

    Step benchmarks also record `memory_estimate_bytes`, `memory_needed` per device, beside
    XLA's own count for the compiled step (`xla_memory_bytes`).
    """
    if name == "input":
        return run_input(settings)
    if name not in TRAIN_BENCHMARKS + ("infer",):
        raise UserError(f"unknown benchmark {name!r}: use one of {', '.join(BENCHMARKS)}")
    result = run_infer(settings) if name == "infer" else run_train_step(name, settings)
    fixed, per_image, _ = memory_needed(name, settings)
    result["memory_estimate_bytes"] = fixed + -(-settings.batch // jax.device_count()) * per_image
    return result


# --------------------------------------------------------------------------- PyTorch reference


def run_torch(name: str, settings: Settings, script: str | None, jax_images_per_s: float) -> dict:
    """The PyTorch reference (`script`, default `TORCH_REFERENCE`) on the same device type, mode, batch and sizes.

    Returns {"torch": its JSON, "torch_command", "torch_images_per_s", "jax_over_torch"} or
    {"torch_skipped": why}. The script's model is x`TORCH_SCALE` (its LR is hr / 4): another
    scale is skipped. Inference passes `--hr-size scale * infer_lr_size`; on CPU the script gets
    as many threads as JAX uses (all the CPUs this process may use).
    """
    if name not in TORCH_MODES:
        return {"torch_skipped": f"the PyTorch reference has no {name} mode"}
    scale = settings.scale
    if scale != TORCH_SCALE:
        return {"torch_skipped": f"the PyTorch reference is x{TORCH_SCALE} only, this model x{scale}"}
    if importlib.util.find_spec("torch") is None:
        return {"torch_skipped": "torch is not installed here (pip install torch)"}
    path = Path(script).expanduser() if script else TORCH_REFERENCE
    if path is None or not path.is_file():
        return {"torch_skipped": f"PyTorch reference {path} not found (it ships with the source checkout, "
                                 "not the wheel): pass --torch-script benchmarks/torch_reference.py"}
    device = "cuda" if jax.default_backend() == "gpu" else "cpu"
    hr_size = settings.infer_lr_size * scale if name == "infer" else settings.hr_size
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "torch.json"
        command = [sys.executable, str(path), "--mode", TORCH_MODES[name], "--batch", str(settings.batch),
                   "--hr-size", str(hr_size), "--blocks", str(settings.blocks), "--features", str(settings.features),
                   "--steps", str(settings.steps),
                   "--warmup", str(settings.warmup), "--device", device, "--json", str(out)]
        if settings.dtype == "bfloat16":
            command.append("--amp")
        if device == "cpu":
            command += ["--threads", str(_cpu_threads())]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode or not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            return {"torch_skipped": f"PyTorch reference failed (exit {proc.returncode}): {tail[0]}"}
        result = json.loads(out.read_text())
    shown = command[: command.index("--json")] + command[command.index("--json") + 2:]
    return {"torch": result, "torch_command": shlex.join(shown), "torch_images_per_s": result["images_per_s"],
            "jax_over_torch": jax_images_per_s / result["images_per_s"]}


# --------------------------------------------------------------------------- report


def _cell(value: Any, scale: float = 1.0, digits: int = 2) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def format_table(results: dict[str, dict]) -> str:
    """A plain-text table of the results, one row per benchmark, notes for skipped ones."""
    header = ("benchmark", "parallel", "dtype", "batch", "size", "compile s", "steps/s", "images/s", "img/s/dev",
              "GFLOP/step", "TFLOP/s", "peak MiB", "torch img/s", "jax/torch")
    rows, notes = [header], []
    for name, result in results.items():
        if "skipped" in result:
            notes.append(f"{name}: skipped: {result['skipped']}")
            continue
        torch_ips = result.get("torch_images_per_s")
        size = f"{result['lr_size']}->{result['hr_size']}" if name == "infer" else str(result["hr_size"])
        rows.append((name, result["parallel"], result["dtype"], str(result["batch"]), size,
                     _cell(result.get("compile_s", result.get("startup_s"))), _cell(result["steps_per_s"], digits=3),
                     _cell(result["images_per_s"]), _cell(result.get("images_per_s_per_device")),
                     _cell(result.get("flops_per_step"), 1e-9, 1), _cell(result.get("tflops_per_s"), digits=3),
                     _cell(result.get("peak_memory_bytes"), 2.0**-20, 0), _cell(torch_ips),
                     _cell(result.get("jax_over_torch"))))
        if "torch_skipped" in result:
            notes.append(f"{name}: PyTorch comparison skipped: {result['torch_skipped']}")
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines + notes)


def run_benchmarks(what: str, settings: Settings, *, compare_torch: bool = False, torch_script: str | None = None,
                   json_path: str | Path | None = None) -> dict[str, dict]:
    """`srgan-jax benchmark`: run `what` (one of BENCHMARKS, or "all"), print a table, optionally write JSON.

    With `compare_torch`, each benchmark the PyTorch reference has (`TORCH_MODES`) also runs
    there (`run_torch`, `torch_script`). Returns {name: `run_benchmark` result}; with "all",
    an input benchmark that cannot run is {"benchmark", "skipped": why} instead of an error.
    """
    if what != "all" and what not in BENCHMARKS:
        raise UserError(f"unknown benchmark {what!r}: use one of {', '.join(BENCHMARKS)} or all")
    names = list(BENCHMARKS) if what == "all" else [what]
    for name in names:
        benchmark_spec(name, settings)  # bad sizes fail here, before anything compiles
    for name in names:
        check_memory(name, settings)  # and batches that cannot fit, before anything is allocated
    results = {}
    for name in names:
        print(f"benchmark: {name} ...", file=sys.stderr, flush=True)
        try:
            results[name] = run_benchmark(name, settings)
        except UserError as err:
            if name != "input" or what != "all":
                raise
            results[name] = {"benchmark": name, "skipped": str(err)}  # e.g. no TensorFlow on a GPU host
            continue
        except (MemoryError, jax.errors.JaxRuntimeError) as err:
            # Past check_memory's estimate: say so in one line rather than a traceback.
            if not isinstance(err, MemoryError) and "RESOURCE_EXHAUSTED" not in str(err):
                raise
            raise UserError(f"--what {name} --batch {settings.batch}: out of memory ({first_line(err)}): "
                            "lower --batch") from None
        if compare_torch and name in TORCH_MODES:
            print(f"benchmark: {name} (PyTorch reference) ...", file=sys.stderr, flush=True)
            results[name].update(run_torch(name, settings, torch_script, results[name]["images_per_s"]))
    print(format_table(results))
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {json_path}")
    return results
