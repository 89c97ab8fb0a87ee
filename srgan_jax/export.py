"""Exporting a trained generator to run outside Python-JAX: StableHLO, SavedModel, TFLite, ONNX.

What is exported is the portable network (`models.create_portable_generator`: plain `lax`
convolutions, none of `xla_cpu`'s forms) in inference mode, as two functions ("signatures"):
- float32: lr float32 [batch, height, width, 3] RGB in [0, 1] -> sr float32
  [batch, height * scale, width * scale, 3] in [-1, 1];
- uint8: lr uint8 [batch, height, width, 3] RGB -> sr uint8, quantised as `upscale` and
  `evaluate` do: round((sr + 1) * 127.5) (half to even), clipped to [0, 255].
Batch, height and width are dynamic in every format; the 3 channels are fixed. Layout NHWC.

`export_generator(checkpoint, format, out)` writes, under the folder `out`, `export.json`
(format, files, scale, signatures, the weights' SHA-256, the tools' versions) and:
- stablehlo: float32.stablehlo, uint8.stablehlo, `jax.export` serialisations lowered for
  cpu, cuda and tpu; `jax.export.deserialize(data).call(lr)` runs one with JAX alone;
- savedmodel: saved_model/, jax2tf's native serialisation (the StableHLO inside TF's
  XlaCallModule op, weights as variables), signatures float32 (also serving_default) and uint8;
- tflite: model.tflite, those two signatures through the TFLite converter (builtin ops);
- onnx: float32.onnx, uint8.onnx, each signature's TFLite graph through tf2onnx, opset 17,
  input "lr", output "sr".
`load_exported(out, signature)` opens an export in its own runtime (JAX, TensorFlow, LiteRT,
onnxruntime) as a numpy function. TensorFlow, LiteRT, tf2onnx and onnxruntime come with the
`export` extra and are imported only for the formats that need them.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from srgan_jax import models
from srgan_jax.errors import UserError, first_line
from srgan_jax.networks.generator import Generator
from srgan_jax.upscaling import engine

FORMATS = ("stablehlo", "savedmodel", "tflite", "onnx")
SIGNATURES = ("float32", "uint8")
STABLEHLO_PLATFORMS = ("cpu", "cuda", "tpu")
ONNX_OPSET = 17
METADATA = "export.json"
_EXTRA_HINT = "pip install 'srgan-jax[export]'"
_VERSIONED = ("jax", "jaxlib", "tensorflow-cpu", "tensorflow", "ai-edge-litert", "tf2onnx", "onnx", "onnxruntime")


@dataclasses.dataclass(frozen=True)
class PortableModel:
    """A restored generator ready to export: the portable network and its verified variables."""

    generator: Generator
    variables: Any
    scale: int
    checkpoint: str

    def function(self, signature: str) -> Callable[[Any, jax.Array], jax.Array]:
        """(variables, lr) -> sr of one signature (see the module docstring)."""
        return functools.partial(sr_uint8 if signature == "uint8" else sr_float32, self.generator)


def sr_float32(generator: Generator, variables: Any, lr: jax.Array) -> jax.Array:
    """G in inference mode: lr float32 [B, h, w, 3] in [0, 1] -> sr float32 [B, h*s, w*s, 3] in [-1, 1]."""
    return generator.apply(variables, lr, train=False)


def sr_uint8(generator: Generator, variables: Any, lr: jax.Array) -> jax.Array:
    """lr uint8 [B, h, w, 3] -> sr uint8 [B, h*s, w*s, 3]: lr / 255 in, `metrics.sr_to_uint8` out."""
    sr = sr_float32(generator, variables, lr.astype(jnp.float32) / 255.0)
    return jnp.clip(jnp.round((sr + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def load_portable(checkpoint: str | Path | None) -> PortableModel:
    """The generator of a checkpoint (or shipped name; None: srresnet_x4), checksums verified."""
    upscaler = engine.load_generator(checkpoint)
    return PortableModel(models.create_portable_generator(upscaler.spec), upscaler.variables, upscaler.scale,
                         upscaler.checkpoint)


def weights_sha256(variables: Any) -> str:
    """SHA-256 of the arrays (path, dtype, shape and bytes, in path order): names the weights exported."""
    digest = hashlib.sha256()
    for path, x in sorted(jax.tree_util.tree_flatten_with_path(jax.device_get(variables))[0],
                          key=lambda item: jax.tree_util.keystr(item[0])):
        x = np.ascontiguousarray(x)
        digest.update(f"{jax.tree_util.keystr(path)}|{x.dtype.str}|{x.shape}|".encode())
        digest.update(x.tobytes())
    return digest.hexdigest()


def export_generator(checkpoint: str | Path | None, fmt: str, out: str | Path) -> dict:
    """Write the generator of `checkpoint` as `fmt` under the new folder `out`; returns export.json's content.

    The files are written to `<out>.part` and renamed at the end, so a failed export leaves no
    half-written `out`. UserError for an unknown format, an existing `out` or a missing tool.
    """
    if fmt not in FORMATS:
        raise UserError(f"export format {fmt!r} is not one of {', '.join(FORMATS)}: pick one of them")
    out = Path(out)
    if out.exists():
        raise UserError(f"{out} exists: remove it or pass another folder")
    model = load_portable(checkpoint)
    part = out.with_name(out.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    try:
        files, details = _WRITERS[fmt](model, part)
        metadata = {
            "format": fmt,
            "files": files,
            "scale": model.scale,
            "signatures": {
                "float32": "lr float32 [batch, height, width, 3] RGB in [0, 1] -> sr float32 "
                           "[batch, height*scale, width*scale, 3] in [-1, 1]",
                "uint8": "lr uint8 [batch, height, width, 3] RGB -> sr uint8 [batch, height*scale, "
                         "width*scale, 3] = round((sr + 1) * 127.5) clipped to [0, 255]",
            },
            "dynamic": ["batch", "height", "width"],
            "layout": "NHWC",
            "source": {"checkpoint": model.checkpoint, "weights_sha256": weights_sha256(model.variables)},
            "versions": tool_versions(),
            **details,
        }
        (part / METADATA).write_text(json.dumps(metadata, indent=1) + "\n")
        part.rename(out)
    except BaseException:
        shutil.rmtree(part, ignore_errors=True)
        raise
    return metadata


def tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def _write_stablehlo(model: PortableModel, out: Path) -> tuple[list[str], dict]:
    files = []
    for signature in SIGNATURES:
        exported = _jax_export(model, signature)
        (out / f"{signature}.stablehlo").write_bytes(exported.serialize())
        files.append(f"{signature}.stablehlo")
    return files, {"platforms": list(STABLEHLO_PLATFORMS),
                   "calling_convention_version": exported.calling_convention_version}


def _jax_export(model: PortableModel, signature: str) -> Any:
    """`jax.export.Exported` of one signature, weights embedded, batch / height / width symbolic."""
    fun = jax.jit(functools.partial(model.function(signature), model.variables))
    shape = jax.export.symbolic_shape("batch, height, width, 3")
    return jax.export.export(fun, platforms=STABLEHLO_PLATFORMS)(jax.ShapeDtypeStruct(shape, np.dtype(signature)))


def _import_tensorflow() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter, not errors
    try:
        import tensorflow as tf
    except ImportError:
        raise UserError(f"exporting a SavedModel, TFLite or ONNX needs TensorFlow: {_EXTRA_HINT}") from None
    return tf


def _save_tensorflow(model: PortableModel, path: Path) -> None:
    """A SavedModel at `path` with signatures float32, uint8 and serving_default (= float32)."""
    tf = _import_tensorflow()
    from jax.experimental import jax2tf

    module = tf.Module()
    module.weights = jax.tree.map(lambda x: tf.Variable(np.asarray(x), trainable=False), model.variables)
    signatures = {}
    for signature in SIGNATURES:
        converted = jax2tf.convert(model.function(signature), polymorphic_shapes=[None, "(b, h, w, 3)"],
                                   with_gradient=False)
        spec = tf.TensorSpec([None, None, None, 3], getattr(tf, signature), name="lr")
        signatures[signature] = tf.function(
            functools.partial(lambda fn, lr: {"sr": fn(module.weights, lr)}, converted),
            input_signature=[spec], autograph=False).get_concrete_function()
    signatures["serving_default"] = signatures["float32"]
    tf.saved_model.save(module, str(path), signatures=signatures)


def _write_savedmodel(model: PortableModel, out: Path) -> tuple[list[str], dict]:
    _save_tensorflow(model, out / "saved_model")
    return ["saved_model"], {"saved_model_signatures": ["float32", "uint8", "serving_default"]}


def _tflite_bytes(saved_model: Path, signatures: tuple[str, ...]) -> bytes:
    tf = _import_tensorflow()
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=list(signatures))
    try:
        return converter.convert()
    except Exception as err:  # the converter raises ConverterError and friends
        raise UserError(f"the TFLite converter failed ({first_line(err)}): report it with export.json's "
                        "versions") from None


def _write_tflite(model: PortableModel, out: Path) -> tuple[list[str], dict]:
    with tempfile.TemporaryDirectory() as tmp:
        _save_tensorflow(model, Path(tmp) / "saved_model")
        (out / "model.tflite").write_bytes(_tflite_bytes(Path(tmp) / "saved_model", SIGNATURES))
    return ["model.tflite"], {"tflite_signatures": list(SIGNATURES)}


def _write_onnx(model: PortableModel, out: Path) -> tuple[list[str], dict]:
    try:
        import onnx
        import tf2onnx
    except ImportError:
        raise UserError(f"exporting ONNX needs tf2onnx and onnx: {_EXTRA_HINT}") from None
    files = []
    with tempfile.TemporaryDirectory() as tmp:
        _save_tensorflow(model, Path(tmp) / "saved_model")
        for signature in SIGNATURES:
            flatbuffer = Path(tmp) / f"{signature}.tflite"
            flatbuffer.write_bytes(_tflite_bytes(Path(tmp) / "saved_model", (signature,)))
            proto, _ = tf2onnx.convert.from_tflite(str(flatbuffer), opset=ONNX_OPSET)
            _rename_io(proto.graph, "lr", "sr")
            onnx.checker.check_model(proto)
            onnx.save(proto, str(out / f"{signature}.onnx"))
            files.append(f"{signature}.onnx")
    return files, {"onnx_opset": ONNX_OPSET, "onnx_io": {"input": "lr", "output": "sr"}}


def _rename_io(graph: Any, input_name: str, output_name: str) -> None:
    """Give the one graph input and output of an ONNX graph plain names (tf2onnx keeps TFLite's)."""
    renames = {graph.input[0].name: input_name, graph.output[0].name: output_name}
    for node in graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
        node.output[:] = [renames.get(name, name) for name in node.output]
    graph.input[0].name, graph.output[0].name = input_name, output_name


_WRITERS = {"stablehlo": _write_stablehlo, "savedmodel": _write_savedmodel, "tflite": _write_tflite,
            "onnx": _write_onnx}


def read_metadata(out: str | Path) -> dict:
    """export.json of an export folder; UserError when it is missing or damaged."""
    path = Path(out) / METADATA
    try:
        metadata = json.loads(path.read_text())
        if metadata["format"] not in FORMATS:
            raise ValueError(f"unknown format {metadata['format']!r}")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path} is missing or damaged ({first_line(err)}): pass a folder written by "
                        "srgan-jax export") from None
    return metadata


def load_exported(out: str | Path, signature: str = "float32") -> Callable[[np.ndarray], np.ndarray]:
    """An export opened in its own runtime: numpy lr [B, h, w, 3] -> numpy sr, as `signature` defines.

    stablehlo: `jax.export.deserialize`; savedmodel: `tf.saved_model.load`; tflite: LiteRT's
    interpreter (`ai_edge_litert`, one thread per CPU core); onnx: onnxruntime on the CPU. None
    of them uses this package's model code. The input goes to the runtime as given, so a wrong dtype or channel
    count gets that runtime's own error (README "Exporting").
    """
    if signature not in SIGNATURES:
        raise UserError(f"signature {signature!r} is not one of {', '.join(SIGNATURES)}")
    out = Path(out)
    fmt = read_metadata(out)["format"]
    if fmt == "stablehlo":
        exported = jax.export.deserialize(bytearray((out / f"{signature}.stablehlo").read_bytes()))
        return lambda lr: np.asarray(exported.call(lr))
    if fmt == "savedmodel":
        tf = _import_tensorflow()
        function = tf.saved_model.load(str(out / "saved_model")).signatures[signature]
        return lambda lr: function(lr=tf.constant(lr))["sr"].numpy()
    if fmt == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(out / "model.tflite"), num_threads=engine.cpu_cores())
        runner = interpreter.get_signature_runner(signature)
        return lambda lr: runner(lr=lr)["sr"]
    import onnxruntime

    session = onnxruntime.InferenceSession(str(out / f"{signature}.onnx"), providers=["CPUExecutionProvider"])
    return lambda lr: session.run(["sr"], {"lr": lr})[0]
