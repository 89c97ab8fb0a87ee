"""`srgan-jax export`: every format, loaded in its own runtime, against `load_generator`.

A tiny generator (1 block, 8 features, x4, BatchNorm averages away from (0, 1)) is exported
once per format; each export runs a real image (a Set14 crop) at two LR sizes.

The bound, derived. A float32 dot product of n terms, with rounding errors that behave like
independent random variables, is off by about u * sqrt(n) of the size of its terms (u = 2^-24);
each convolution passes on the error it receives and adds its own, so the tail convolution's
output carries about u * sum_l sqrt(n_l) times its scale, over the fan-ins n_l = k*k*C_in of
the network's seven convolutions. tanh only shrinks errors (its slope is at most 1). JAX and
the other runtime (XNNPACK, oneDNN, MLAS) each make such an error, in their own order: the two
outputs may differ by 2 * that, and we allow twice as much again for activations whose terms
are larger than their sum. A uint8 value can only change where the float SR lies within that
bound of a rounding boundary (k + 0.5) / 127.5 - 1: by 1 level at most, on a fraction of the
values of about 2 * 127.5 * ATOL.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from srgan_jax import cli, export
from srgan_jax.data.images import read_image
from srgan_jax.errors import UserError
from srgan_jax.upscaling import engine

BLOCKS, FEATURES = 1, 8
# head 9x9x3, two block convs and the body conv 3x3x8, two upsample convs 3x3x8, tail 9x9x8
FAN_INS = [9 * 9 * 3] + [3 * 3 * FEATURES] * (2 * BLOCKS + 1) + [3 * 3 * FEATURES] * 2 + [9 * 9 * FEATURES]
UNIT_ROUNDOFF = 2.0**-24
LR_SIZES = [(24, 24), (40, 56)]


def _data_dir() -> Path:
    return Path(os.environ.get("SRGAN_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint) -> Path:
    """conftest's generator: BLOCKS blocks of FEATURES features, x4."""
    return tiny_checkpoint


@pytest.fixture(scope="module")
def reference(checkpoint) -> engine.Upscaler:
    return engine.load_generator(checkpoint, tile=0)


@pytest.fixture(scope="module")
def lr_images() -> list[np.ndarray]:
    """uint8 [1, h, w, 3] crops of Set14 baboon, one per LR size."""
    image = read_image(_data_dir() / "Set14" / "baboon.png").rgb()
    return [image[None, 100:100 + h, 200:200 + w] for h, w in LR_SIZES]


def _needs(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install '.[export]')")


_RUNTIME_MODULE = {"stablehlo": "jax", "savedmodel": "tensorflow", "tflite": "ai_edge_litert", "onnx": "onnxruntime"}


@pytest.fixture(scope="module", params=export.FORMATS)
def exported(request, checkpoint, tmp_path_factory) -> tuple[str, Path]:
    fmt = request.param
    _needs(_RUNTIME_MODULE[fmt])
    if fmt != "stablehlo":
        _needs("tensorflow")
    if fmt == "onnx":
        _needs("tf2onnx")
    out = tmp_path_factory.mktemp(fmt) / "export"
    export.export_generator(checkpoint, fmt, out)
    return fmt, out


def _float_bound(sr: np.ndarray) -> float:
    """ATOL of the module docstring, at the scale of the tail convolution's output (arctanh of SR)."""
    scale = max(1.0, float(np.abs(np.arctanh(np.clip(sr, -1 + 1e-7, 1 - 1e-7))).max()))
    return 4 * UNIT_ROUNDOFF * sum(math.sqrt(n) for n in FAN_INS) * scale


def test_float32_signature_matches_load_generator(exported, reference, lr_images):
    fmt, out = exported
    run = export.load_exported(out, "float32")
    for lr in lr_images:
        x = lr.astype(np.float32) / 255.0
        want = np.asarray(reference.apply(reference.variables, x, np.array(x.shape[1:3], np.int32)))
        got = run(x)
        assert got.shape == want.shape == (1, 4 * x.shape[1], 4 * x.shape[2], 3) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=0, atol=_float_bound(want), err_msg=fmt)


def test_uint8_signature_matches_upscale(exported, reference, lr_images):
    fmt, out = exported
    run = export.load_exported(out, "uint8")
    for lr in lr_images:
        want = reference(lr[0])
        got = run(lr)
        assert got.dtype == np.uint8 and got.shape == (1,) + want.shape
        diff = np.abs(got[0].astype(np.int16) - want)
        float_sr = np.asarray(reference.apply(reference.variables, lr.astype(np.float32) / 255.0,
                                              np.array(lr.shape[1:3], np.int32)))
        assert diff.max() <= 1, fmt
        assert np.mean(diff > 0) <= 2 * 127.5 * _float_bound(float_sr), fmt


def test_batch_is_dynamic(exported, reference, lr_images):
    fmt, out = exported
    lr = np.concatenate([lr_images[0], lr_images[0][:, ::-1]]).astype(np.float32) / 255.0
    got = export.load_exported(out, "float32")(lr)
    want = np.asarray(reference.apply(reference.variables, lr, np.array(lr.shape[1:3], np.int32)))
    np.testing.assert_allclose(got, want, rtol=0, atol=_float_bound(want), err_msg=fmt)


def test_metadata_names_the_weights_and_the_contract(exported, checkpoint):
    fmt, out = exported
    metadata = json.loads((out / export.METADATA).read_text())
    assert metadata["format"] == fmt and metadata["scale"] == 4
    assert metadata["dynamic"] == ["batch", "height", "width"] and metadata["layout"] == "NHWC"
    assert all((out / name).exists() for name in metadata["files"])
    want = export.weights_sha256(engine.load_generator(checkpoint).variables)
    assert metadata["source"]["weights_sha256"] == want and len(want) == 64
    assert metadata["versions"]["jax"] == jax.__version__


# What each runtime says to a 4-channel float input and to a uint8 input of the float32 signature
# (README "Exporting" quotes these).
_WRONG_INPUT_ERRORS = {
    "stablehlo": ("Shape mismatch", "Dtype mismatch"),
    "savedmodel": ("XlaCallModule", "expected to be a float tensor"),
    "tflite": ("failed to prepare", "Cannot set tensor"),
    "onnx": ("Got invalid dimensions for input: lr", "Unexpected input data type"),
}


def test_wrong_input_gets_the_runtimes_error(exported):
    fmt, out = exported
    run = export.load_exported(out, "float32")
    channels, dtype = _WRONG_INPUT_ERRORS[fmt]
    with pytest.raises(Exception, match=channels):
        run(np.zeros((1, 8, 8, 4), np.float32))
    with pytest.raises(Exception, match=dtype):
        run(np.zeros((1, 8, 8, 3), np.uint8))


def test_stablehlo_runs_with_jax_alone_and_is_portable(checkpoint, tmp_path, lr_images, reference):
    out = tmp_path / "hlo"
    metadata = export.export_generator(checkpoint, "stablehlo", out)
    assert metadata["platforms"] == ["cpu", "cuda", "tpu"]
    x = lr_images[1].astype(np.float32) / 255.0
    np.save(tmp_path / "lr.npy", x)
    # No srgan_jax import: the artefact carries the whole network.
    script = ("import sys, jax, numpy as np\n"
              f"e = jax.export.deserialize(bytearray(open({str(out / 'float32.stablehlo')!r}, 'rb').read()))\n"
              f"np.save({str(tmp_path / 'sr.npy')!r}, np.asarray(e.call(np.load({str(tmp_path / 'lr.npy')!r}))))\n"
              "assert not any(m.startswith('srgan_jax') for m in sys.modules)\n")
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path)
    want = np.asarray(reference.apply(reference.variables, x, np.array(x.shape[1:3], np.int32)))
    np.testing.assert_allclose(np.load(tmp_path / "sr.npy"), want, rtol=0, atol=_float_bound(want))
    # The portable network: one convolution per nn.Conv and platform, none of xla_cpu's split forms.
    exported = jax.export.deserialize(bytearray((out / "float32.stablehlo").read_bytes()))
    assert exported.mlir_module().count("stablehlo.convolution") == len(FAN_INS) * len(export.STABLEHLO_PLATFORMS)


def test_bad_requests_are_one_line_user_errors(checkpoint, tmp_path):
    with pytest.raises(UserError, match="not one of stablehlo, savedmodel, tflite, onnx"):
        export.export_generator(checkpoint, "coreml", tmp_path / "a")
    (tmp_path / "taken").mkdir()
    with pytest.raises(UserError, match="exists: remove it"):
        export.export_generator(checkpoint, "stablehlo", tmp_path / "taken")
    with pytest.raises(UserError, match="export.json is missing or damaged"):
        export.load_exported(tmp_path / "taken")
    with pytest.raises(UserError, match="does not exist"):
        export.export_generator(tmp_path / "nothing", "stablehlo", tmp_path / "b")


def test_a_failed_export_leaves_nothing(checkpoint, tmp_path, monkeypatch):
    def full_disk(model, out):
        (out / "float32.stablehlo").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setitem(export._WRITERS, "stablehlo", full_disk)
    with pytest.raises(OSError):
        export.export_generator(checkpoint, "stablehlo", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_cli_exports_and_reports(checkpoint, tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli.main(["export", "--checkpoint", str(checkpoint), "--format", "stablehlo", "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out and (out / "uint8.stablehlo").is_file()
    assert cli.main(["export", "--checkpoint", str(checkpoint), "--format", "stablehlo", "-o", str(out)]) == 2
    assert "exists" in capsys.readouterr().err


def test_cli_offers_every_format():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["export"]
    assert tuple(next(a for a in sub._actions if a.dest == "format").choices) == export.FORMATS
