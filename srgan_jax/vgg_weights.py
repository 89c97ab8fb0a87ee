"""ImageNet VGG19 weight files for the VGG content loss: reading, checking and converting them.

Pre-trained weights come from torchvision or Keras and are converted once to a Flax
msgpack file plus a JSON sidecar (`<file>.json`) that records where they came from and
the input preprocessing they expect (`networks.vgg19.PREPROCESSING`).
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from srgan_jax.errors import UserError, first_line
from srgan_jax.networks.vgg19 import CONVS, PREPROCESSING, Dtype, Params, VGGFeatures, check_layers

# torchvision `vgg19().features` indices of the 16 convs (ReLUs and pools sit between them).
_TORCHVISION_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)

_LAYOUT_PREPROCESSING = {"torchvision": "torchvision", "keras": "caffe"}
_TORCH_SUFFIXES = (".pth", ".pt", ".safetensors", ".npz")
_KERAS_SUFFIXES = (".h5", ".hdf5", ".keras")
_CONVERT_HINT = ("srgan-jax convert-vgg19 vgg19-dcbb9e9d.pth --from torchvision --out vgg19.msgpack"
                 " (see pretrained/README.md)")


def sidecar_path(path: str | Path) -> Path:
    """The JSON sidecar that goes with a converted weights file: `<path>.json`."""
    return Path(f"{path}.json")


def _check_params(params: Mapping[str, Any], origin: str) -> Params:
    """Every conv present with the VGG19 shapes; returns float32 numpy params (extra entries dropped)."""
    checked = {}
    for name, in_ch, out_ch in CONVS:
        entry = params.get(name)
        if not isinstance(entry, Mapping) or "kernel" not in entry or "bias" not in entry:
            raise UserError(f"{origin}: no weights for VGG19 layer {name}: expected the 16-conv VGG19 body; "
                            f"make the file with: {_CONVERT_HINT}")
        kernel, bias = np.asarray(entry["kernel"]), np.asarray(entry["bias"])
        if kernel.shape != (3, 3, in_ch, out_ch) or bias.shape != (out_ch,):
            raise UserError(f"{origin}: {name} has kernel {kernel.shape} / bias {bias.shape}, VGG19 needs "
                            f"{(3, 3, in_ch, out_ch)} / {(out_ch,)}; make the file with: {_CONVERT_HINT}")
        if kernel.dtype.kind not in "fiu" or bias.dtype.kind not in "fiu":
            raise UserError(f"{origin}: {name} holds {kernel.dtype} / {bias.dtype} values, not numbers; "
                            f"make the file with: {_CONVERT_HINT}")
        kernel, bias = kernel.astype(np.float32), bias.astype(np.float32)
        if not (np.isfinite(kernel).all() and np.isfinite(bias).all()):
            raise UserError(f"{origin}: {name} holds NaN or Inf weights: the file is damaged; download or "
                            "convert it again")
        checked[name] = {"kernel": kernel, "bias": bias}
    return checked


def load_params(path: str | Path) -> tuple[Params, dict]:
    """Read a converted file -> (params as numpy, sidecar metadata). Raises UserError on anything off."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"VGG19 weights not found at {path}; make them with: {_CONVERT_HINT}")
    if path.suffix.lower() in _TORCH_SUFFIXES + _KERAS_SUFFIXES:
        layout = "torchvision" if path.suffix.lower() in _TORCH_SUFFIXES else "keras"
        raise UserError(f"{path} is an unconverted {layout} file; convert it first: "
                        f"srgan-jax convert-vgg19 {path} --from {layout} --out vgg19.msgpack")
    meta_path = sidecar_path(path)
    if not meta_path.is_file():
        raise UserError(f"{path} has no sidecar {meta_path} (its preprocessing is unknown); "
                        f"re-run the conversion: {_CONVERT_HINT}")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UserError(f"{meta_path} cannot be read as JSON ({first_line(err)}); "
                        f"re-run the conversion: {_CONVERT_HINT}") from None
    if not isinstance(meta, dict):
        raise UserError(f"{meta_path} holds a JSON {type(meta).__name__}, not a sidecar object; "
                        f"re-run the conversion: {_CONVERT_HINT}")
    if meta.get("preprocessing") not in PREPROCESSING:
        raise UserError(f"{meta_path} names preprocessing {meta.get('preprocessing')!r}, expected one of "
                        f"{sorted(PREPROCESSING)}; re-run the conversion: {_CONVERT_HINT}")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserError(f"cannot read {path} ({err.strerror}): check its permissions") from None
    if meta.get("sha256") != hashlib.sha256(data).hexdigest():
        raise UserError(f"{meta_path} describes a different file than {path} (sha256 mismatch); "
                        f"re-run the conversion: {_CONVERT_HINT}")
    try:
        state = flax.serialization.msgpack_restore(data)
    except Exception as err:  # msgpack raises several unrelated types on garbage
        raise UserError(f"{path} is not a Flax msgpack file ({first_line(err)}); make it with: "
                        f"{_CONVERT_HINT}") from None
    if not isinstance(state, Mapping) or not isinstance(state.get("params"), Mapping):
        raise UserError(f"{path} holds no 'params' tree; make it with: {_CONVERT_HINT}")
    return _check_params(state["params"], str(path)), meta


def load_feature_extractor(path: str | Path, layers: Sequence[str] = ("relu5_4",),
                           dtype: Dtype = jnp.float32) -> VGGFeatures:
    """Converted VGG19 weights at `path` -> frozen features of [-1, 1] RGB NHWC images.

    The preprocessing (torchvision or caffe) is the one recorded in the sidecar
    `<path>.json` by `srgan-jax convert-vgg19`. `dtype` is the compute dtype; params stay float32.
    """
    try:
        check_layers(layers)
    except ValueError as err:
        raise UserError(str(err)) from None
    params, meta = load_params(path)
    return VGGFeatures(params=jax.tree_util.tree_map(jnp.asarray, params), layers=tuple(layers),
                       preprocessing=meta["preprocessing"], dtype=dtype)


# --------------------------------------------------------------------------- conversion


def _damaged(path: Path, what: str, err: BaseException) -> UserError:
    return UserError(f"{path} cannot be read as {what} ({first_line(err)}): it is damaged or incomplete; "
                     "download or save it again")


def _read_pth(path: Path) -> dict[str, np.ndarray]:
    """A torch state dict (.pth / .pt) -> {key: float32 / integer array}, without running pickled code."""
    try:
        import torch
    except ImportError as err:
        raise UserError(f"reading {path} needs PyTorch, which is not installed: install torch, or save the "
                        "state dict as .safetensors or .npz on a machine that has it") from err
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message would advise weights_only=False, i.e. running whatever the pickle holds.
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        what = f" ({found.group(1)})" if found else ""
        raise UserError(f"{path} holds objects other than tensors{what} and is refused, as loading them could run "
                        "code: use torchvision's vgg19-dcbb9e9d.pth, or save the weights alone with "
                        "torch.save(model.state_dict(), path)") from None
    except Exception as err:  # torch raises OSError, RuntimeError, EOFError, KeyError ... on damaged files
        raise _damaged(path, "a PyTorch file", err) from None
    if not isinstance(state, Mapping):
        raise UserError(f"{path} holds a {type(state).__name__}, not a state dict: expected torchvision's "
                        "vgg19-dcbb9e9d.pth")
    # bfloat16 / float16 tensors have no (or a lossy) numpy view: float32 is what the conversion keeps.
    return {key: (value.float() if value.is_floating_point() else value).numpy()
            for key, value in state.items() if isinstance(value, torch.Tensor)}


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    try:
        from safetensors.numpy import load_file
    except ImportError as err:
        raise UserError(f"reading {path} needs the safetensors package: pip install safetensors") from err
    try:
        return load_file(path)
    except Exception as err:  # SafetensorError (header, truncation), OSError, unsupported dtypes
        raise _damaged(path, "a safetensors file", err) from None


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not zipfile.is_zipfile(path):  # truncated, or another format (an .npy, a pickle)
        raise UserError(f"{path} is not a complete .npz archive (no zip directory at its end): it is damaged, "
                        "incomplete or another format; save it with np.savez(path, **{name: tensor.numpy()})")
    try:
        with np.load(path) as archive:  # allow_pickle=False: object arrays raise instead of unpickling
            return {key: archive[key] for key in archive.files}
    except ValueError as err:
        if "allow_pickle" not in str(err):
            raise _damaged(path, "an .npz archive", err) from None
        raise UserError(f"{path} holds object arrays (pickled Python objects) and is refused, as loading them "
                        "could run code: save plain arrays, np.savez(path, **{name: tensor.numpy()})") from None
    except Exception as err:  # BadZipFile (a CRC mismatch), a zlib error, EOFError, OSError
        raise _damaged(path, "an .npz archive", err) from None


def _read_torchvision(path: Path) -> Params:
    """torchvision state dict (`features.N.weight` OIHW / `.bias`) -> Flax params (HWIO)."""
    suffix = path.suffix.lower()
    readers = {".pth": _read_pth, ".pt": _read_pth, ".safetensors": _read_safetensors, ".npz": _read_npz}
    state = readers[suffix](path)
    params = {}
    for (name, _, _), index in zip(CONVS, _TORCHVISION_INDICES):
        weight, bias = state.get(f"features.{index}.weight"), state.get(f"features.{index}.bias")
        if weight is None or bias is None:
            raise UserError(f"{path} has no features.{index}.weight/bias ({name}): expected the state dict of "
                            "torchvision.models.vgg19 (not vgg19_bn, not the classifier alone), e.g. vgg19-dcbb9e9d.pth")
        weight = np.asarray(weight)
        params[name] = {"kernel": weight.transpose(2, 3, 1, 0) if weight.ndim == 4 else weight, "bias": bias}
    return _check_params(params, str(path))


def _keras_conv_name(layer_name: str) -> str | None:
    match = re.fullmatch(r"block(\d)_conv(\d)", layer_name)
    return f"conv{match.group(1)}_{match.group(2)}" if match else None


def _kernel_and_bias(group: Any) -> dict[str, np.ndarray]:
    """The 4-D and the 1-D dataset under an h5 layer group (names differ between Keras versions)."""
    import h5py

    arrays = []
    group.visititems(lambda _, item: arrays.append(item[()]) if isinstance(item, h5py.Dataset) else None)
    kernels = [a for a in arrays if a.ndim == 4]
    biases = [a for a in arrays if a.ndim == 1]
    return {"kernel": kernels[0] if len(kernels) == 1 else None, "bias": biases[0] if len(biases) == 1 else None}


def _read_keras_h5(h5: Any, origin: str) -> Params:
    """Keras weights in an open h5py file: named layers (`blockB_convC`, Keras 2 / legacy .h5)
    or Keras 3 `.weights.h5` (`layers/conv2d[_N]/vars/{0,1}`, N = order in the model)."""
    root = h5["model_weights"] if "model_weights" in h5 else h5
    params = {}
    for layer_name in root:
        conv = _keras_conv_name(layer_name)
        if conv is not None:
            params[conv] = _kernel_and_bias(root[layer_name])
    if not params and "layers" in root:
        numbered = {}
        for layer_name in root["layers"]:
            match = re.fullmatch(r"conv2d(?:_(\d+))?", layer_name)
            if match:
                numbered[int(match.group(1) or 0)] = root["layers"][layer_name]
        if len(numbered) != len(CONVS):
            raise UserError(f"{origin} holds {len(numbered)} Conv2D layers, VGG19 has {len(CONVS)}: expected "
                            "keras.applications.VGG19 weights")
        for (conv, _, _), index in zip(CONVS, sorted(numbered)):
            params[conv] = _kernel_and_bias(numbered[index])
    if not params:
        raise UserError(f"{origin} has no VGG19 conv layers (block1_conv1 ...): expected "
                        "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5 or keras.applications.VGG19 weights")
    return _check_params(params, origin)


def _read_keras(path: Path) -> Params:
    """Keras `.h5` (legacy notop file, full model, or `.weights.h5`) or `.keras` -> Flax params."""
    try:
        import h5py
    except ImportError as err:
        raise UserError(f"reading {path} needs the h5py package: pip install h5py") from err

    if path.suffix.lower() == ".keras":
        if not zipfile.is_zipfile(path):
            raise UserError(f"{path} is not a .keras archive: expected a file written by keras model.save()")
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                data = archive.read("model.weights.h5") if "model.weights.h5" in names else None
        except Exception as err:  # BadZipFile (a CRC mismatch), a zlib error, EOFError, OSError
            raise _damaged(path, "a .keras archive", err) from None
        if data is None:
            raise UserError(f"{path} has no model.weights.h5 inside: expected a file written by keras model.save()")
        return _read_h5(io.BytesIO(data), path)
    if not h5py.is_hdf5(path):
        raise UserError(f"{path} is not an HDF5 file: expected a Keras .h5 weights file")
    return _read_h5(path, path)


def _read_h5(file: Any, origin: Path) -> Params:
    """The Keras weights in an HDF5 file (a path or a file object); a damaged file is one UserError."""
    import h5py

    try:
        with h5py.File(file, "r") as h5:
            return _read_keras_h5(h5, str(origin))
    except (OSError, RuntimeError, KeyError) as err:  # h5py's errors on truncated or damaged files
        raise _damaged(origin, "HDF5", err) from None


def convert_vgg19(source: str | Path, layout: str, out: str | Path) -> dict:
    """torchvision or Keras ImageNet VGG19 weights -> `out` (Flax msgpack) + `out`.json; returns the sidecar.

    layout "torchvision": .pth / .pt (needs torch), .safetensors or .npz state dict; classifier
    keys are ignored. layout "keras": .h5 (notop, full model or .weights.h5) or .keras; dense
    layers are ignored. The sidecar records the source, its sha256, the layout and the
    preprocessing the weights expect.
    """
    source, out = Path(source), Path(out)
    if layout not in _LAYOUT_PREPROCESSING:
        raise UserError(f"unknown VGG19 layout {layout!r}: use --from torchvision or --from keras")
    if not source.is_file():
        raise UserError(f"VGG19 source {source} not found: download it as pretrained/README.md describes")
    suffix = source.suffix.lower()
    expected = _TORCH_SUFFIXES if layout == "torchvision" else _KERAS_SUFFIXES
    if suffix not in expected:
        other = "keras" if suffix in _KERAS_SUFFIXES else "torchvision" if suffix in _TORCH_SUFFIXES else None
        fix = f"use --from {other}" if other else f"give a {'/'.join(expected)} file"
        raise UserError(f"{source} is not a {layout} weights file (expected {'/'.join(expected)}): {fix}")
    if source.stat().st_size == 0:
        raise UserError(f"{source} is empty (0 bytes): an interrupted download? Download it again")
    params = _read_torchvision(source) if layout == "torchvision" else _read_keras(source)
    data = flax.serialization.msgpack_serialize({"params": params})
    preprocessing = _LAYOUT_PREPROCESSING[layout]
    meta = {
        "format": "srgan-jax VGG19 params (Flax msgpack, conv kernels HWIO)",
        "sha256": hashlib.sha256(data).hexdigest(),
        "layers": len(params),
        "source": source.name,
        "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "layout": layout,
        "preprocessing": preprocessing,
        **PREPROCESSING[preprocessing],
    }
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        sidecar_path(out).write_text(json.dumps(meta, indent=2) + "\n")
    except OSError as err:
        raise UserError(f"cannot write {err.filename or out} ({err.strerror}): choose a writable --out") from None
    return meta
