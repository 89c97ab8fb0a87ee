"""`srgan-jax benchmark`: result schema on tiny models (mesh and pmap), PyTorch comparison, CLI, skips.

Tiny sizes only and no assertions on timings: the numbers depend on the machine and its load.
"""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import srgan_jax.data
from srgan_jax import benchmark, cli, xla_cpu
from srgan_jax.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TORCH_SCRIPT = ROOT / "benchmarks" / "torch_reference.py"
TINY = ["--batch", "2", "--hr-size", "32", "--blocks", "1", "--features", "8", "--steps", "2", "--warmup", "1",
        "--infer-lr-size", "8"]

COMMON = {"benchmark": str, "parallel": str, "dtype": str, "batch": int, "scale": int, "hr_size": int, "lr_size": int,
          "blocks": int, "features": int, "backend": str, "device_kind": str, "device_count": int,
          "cpu_threads": int, "load_avg_1m": float, "jax": str, "jaxlib": str, "flax": str, "xla_flags": str,
          "steps": int, "steps_per_s": float, "images_per_s": float}
TIMED = {"warmup": int, "compile_s": float, "step_s_median": float, "step_s": list,
         "images_per_s_per_device": float, "flops_per_step": float, "flops_per_step_per_device": float,
         "tflops_per_s": float, "xla_temp_bytes": int, "xla_memory_bytes": int, "memory_estimate_bytes": int}


def tiny(parallel="mesh", **overrides):
    values = dict(batch=2, hr_size=32, blocks=1, features=8, dtype="float32", parallel=parallel, steps=2, warmup=1,
                  infer_lr_size=8)
    return benchmark.Settings(**{**values, **overrides})


def check_types(result, schema):
    for key, kind in schema.items():
        assert key in result, key
        assert isinstance(result[key], kind), (key, result[key])


@pytest.mark.parametrize("parallel", ["mesh", "pmap"])
@pytest.mark.parametrize("name", ["g_step", "gan_step", "vgg_gan_step", "infer"])
def test_result_schema(name, parallel):
    result = benchmark.run_benchmark(name, tiny(parallel))
    check_types(result, COMMON | TIMED)
    json.dumps(result)  # plain JSON types only
    assert (result["benchmark"], result["parallel"], result["batch"]) == (name, parallel, 2)
    assert len(result["step_s"]) == 2 and result["step_s_median"] > 0
    assert result["images_per_s"] == pytest.approx(2 * result["steps_per_s"])
    assert result["flops_per_step"] == result["flops_per_step_per_device"] * result["device_count"] > 0
    assert result["peak_memory_bytes"] is None or isinstance(result["peak_memory_bytes"], int)
    # The up-front estimate is never below XLA's own buffer assignment, nor far above it.
    assert result["xla_memory_bytes"] <= result["memory_estimate_bytes"] <= 2.5 * result["xla_memory_bytes"]
    # Recorded in the JSON: the options the steps were compiled with (pmap takes none).
    assert result["compiler_options"] == (xla_cpu.compiler_options() if parallel == "mesh" else None)
    if name == "infer":
        assert (result["lr_size"], result["hr_size"]) == (8, 32)
        assert result["output_megapixels_per_s"] == pytest.approx(result["images_per_s"] * 32 * 32 / 1e6)
    else:
        assert (result["lr_size"], result["hr_size"]) == (8, 32)
        assert result["content_loss"] == ("vgg54" if name == "vgg_gan_step" else "mse")
        assert result["vgg_weights"] == (benchmark.RANDOM_VGG if name == "vgg_gan_step" else None)


def test_two_devices_mesh_and_pmap_count_the_same_flops(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    results = {}
    for parallel in ("mesh", "pmap"):
        out = tmp_path / f"{parallel}.json"
        subprocess.run([sys.executable, "-m", "srgan_jax.cli", "benchmark", "--what", "g_step", *TINY,
                        "--parallel", parallel, "--json", str(out)], cwd=ROOT, env=env, check=True, timeout=600,
                       capture_output=True)
        results[parallel] = json.loads(out.read_text())["g_step"]
    mesh, pmap = results["mesh"], results["pmap"]
    assert mesh["device_count"] == pmap["device_count"] == 2
    assert mesh["flops_per_step"] == pytest.approx(pmap["flops_per_step"], rel=0.02)
    assert mesh["flops_per_step_per_device"] == pytest.approx(mesh["flops_per_step"] / 2)
    assert mesh["images_per_s_per_device"] == pytest.approx(mesh["images_per_s"] / 2)


def test_cli_prints_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cli.main(["benchmark", "--what", "g_step", "--dtype", "bfloat16", *TINY, "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert list(results) == ["g_step"]
    check_types(results["g_step"], COMMON | TIMED)
    assert results["g_step"]["dtype"] == "bfloat16"
    table = capsys.readouterr().out
    assert "images/s" in table and "g_step" in table and "bfloat16" in table


def test_compare_torch_runs_the_projects_reference_by_default(tmp_path):
    pytest.importorskip("torch", reason="torch is not installed")
    assert benchmark.TORCH_REFERENCE == TORCH_SCRIPT and TORCH_SCRIPT.is_file()
    out = tmp_path / "bench.json"
    assert cli.main(["benchmark", "--what", "infer", *TINY, "--compare-torch", "--json", str(out)]) == 0
    result = json.loads(out.read_text())["infer"]
    # The script's LR is hr/4: it was given hr = 4 * the LR size JAX ran, and the same width.
    assert (result["torch"]["mode"], result["torch"]["hr_size"], result["torch"]["batch"]) == ("infer", 32, 2)
    assert (result["torch"]["blocks"], result["torch"]["features"]) == (1, 8)
    assert result["torch_images_per_s"] > 0
    assert result["jax_over_torch"] == pytest.approx(result["images_per_s"] / result["torch_images_per_s"])
    assert "--threads" in result["torch_command"] and "--json" not in result["torch_command"]


def test_compare_torch_skips_with_a_reason(tmp_path, monkeypatch):
    missing = benchmark.run_torch("g_step", tiny(), str(tmp_path / "nope.py"), 1.0)
    assert "not found" in missing["torch_skipped"] and "--torch-script" in missing["torch_skipped"]
    assert "no input mode" in benchmark.run_torch("input", tiny(), str(TORCH_SCRIPT), 1.0)["torch_skipped"]
    monkeypatch.setattr(benchmark.importlib.util, "find_spec", lambda name: None)
    assert "not installed" in benchmark.run_torch("g_step", tiny(), str(TORCH_SCRIPT), 1.0)["torch_skipped"]


def test_compare_torch_skips_a_scale_the_reference_lacks():
    skipped = benchmark.run_torch("infer", tiny(scale=2), str(TORCH_SCRIPT), 1.0)["torch_skipped"]
    assert skipped == "the PyTorch reference is x4 only, this model x2"


@pytest.mark.parametrize("scale", [2, 3])
def test_the_benchmark_times_the_generator_of_its_scale(scale):
    result = benchmark.run_infer(tiny(scale=scale, hr_size=48))  # the train crop a multiple of 3 and 16
    assert result["scale"] == scale and result["lr_size"] * scale == result["hr_size"] and result["images_per_s"] > 0


def test_input_benchmark_and_where_the_tfds_copy_goes(tmp_path, caplog):
    pytest.importorskip("tensorflow_datasets", reason="TensorFlow / tfds are not installed")
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    settings = tiny(image_dir=str(folder), tfds_data_dir=str(tmp_path / "tfds"))
    with caplog.at_level(logging.INFO):
        result = benchmark.run_input(settings)
        benchmark.run_input(settings)
    check_types(result, COMMON | {"startup_s": float, "image_dir": str})
    assert result["images_per_s"] > 0
    # The folder's copy lands outside the workdir: the run says where, once per run.
    said = [r.getMessage() for r in caplog.records if "tfds copy" in r.getMessage()]
    copy = next((tmp_path / "tfds" / "srgan_image_folder").glob("*/*"))
    assert said == [f"{verb} the tfds copy of {folder} in {copy} (config.data.tfds_data_dir moves it)"
                    for verb in ("preparing", "using")]


def test_all_skips_input_without_tensorflow(tmp_path, monkeypatch, capsys):
    # `from srgan_jax.data import tfds_source` fails as it does without TensorFlow.
    monkeypatch.setitem(sys.modules, "srgan_jax.data.tfds_source", None)
    monkeypatch.delattr(srgan_jax.data, "tfds_source", raising=False)
    with pytest.raises(UserError, match="TensorFlow"):
        benchmark.run_input(tiny(image_dir=str(tmp_path)))
    monkeypatch.setattr(benchmark, "BENCHMARKS", ("input",))
    out = tmp_path / "bench.json"
    assert cli.main(["benchmark", "--what", "all", *TINY, "--image-dir", str(tmp_path), "--json", str(out)]) == 0
    assert "TensorFlow" in json.loads(out.read_text())["input"]["skipped"]
    assert "input: skipped" in capsys.readouterr().out


def test_user_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["benchmark", "--what", "gan_step", *TINY[:2], "--hr-size", "40"]) == 2
    assert "multiple of 16" in capsys.readouterr().err
    assert cli.main(["benchmark", "--what", "input", "--image-dir", str(tmp_path / "missing")]) == 2
    assert "--image-dir" in capsys.readouterr().err
    assert cli.main(["benchmark", "--what", "input"]) == 2
    assert "needs --image-dir" in capsys.readouterr().err
    assert cli.main(["benchmark", "--what", "all", "--vgg-weights", str(tmp_path / "vgg19.msgpack")]) == 2
    assert "convert-vgg19" in capsys.readouterr().err
    with pytest.raises(UserError, match="--steps"):
        tiny(steps=0)


@pytest.mark.parametrize("name", ["g_step", "gan_step", "infer"])
def test_a_batch_that_cannot_fit_is_refused_in_one_line_before_anything_is_allocated(name, capsys, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("allocated a batch")

    monkeypatch.setattr(benchmark, "_synthetic_batch", never)
    monkeypatch.setattr(benchmark.host_memory, "available_bytes", lambda: 2**30)
    assert cli.main(["benchmark", "--what", name, *TINY, "--batch", "100000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"srgan-jax benchmark: error: --what {name} --batch 100000: needs about ")
    assert "GiB (" in err[0] and "MiB per image, estimated), 1.0 GiB of host memory available: lower --batch" in err[0]
    fits = int(err[0].rsplit("(about ", 1)[1].split()[0])
    assert fits > 0
    benchmark.check_memory(name, tiny(batch=fits))  # the batch it names fits, one more does not
    with pytest.raises(UserError, match="lower --batch"):
        benchmark.check_memory(name, tiny(batch=fits + 1))


def test_all_checks_every_benchmark_before_running_any(capsys, monkeypatch):
    ran = []
    monkeypatch.setattr(benchmark, "run_benchmark", lambda name, settings: ran.append(name))
    # Enough memory for the generator's step, not for the discriminator's as well.
    fixed, per_image, host = benchmark.memory_needed("g_step", tiny(batch=64))
    monkeypatch.setattr(benchmark.host_memory, "available_bytes", lambda: fixed + 64 * (per_image + host) + 1)
    assert cli.main(["benchmark", "--what", "all", *TINY, "--batch", "64"]) == 2
    assert ran == [] and "--what gan_step --batch 64: needs about" in capsys.readouterr().err
