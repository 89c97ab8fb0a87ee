"""Orbax checkpoints: save / resume training, and restore the generator alone for inference.

Layout of a workdir:
  checkpoints/<step>/state      full training state (G and D params, batch_stats, Adam)
  checkpoints/<step>/generator  G's {"params", "batch_stats"} alone, for inference
  checkpoints/<step>/meta       JSON: model config, training config, step
  best/<step>/...               the same items for the best validation PSNR so far

A generator is restored from nothing but such a step folder: `read_generator_spec` reads
what rebuilds it from `meta`, `load_generator_variables` its arrays. This is the only module
that reads or writes `meta`. The package ships a trained generator in the same layout
(`shipped_checkpoint`).
"""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from srgan_jax.config import GeneratorSpec
from srgan_jax.errors import UserError

ITEMS = ("state", "generator", "meta")
SHIPPED_GENERATOR = "srresnet_x4"  # the default of `srgan-jax upscale` / `evaluate` / `load_generator`


def create_managers(workdir: str | Path, keep: int) -> tuple[ocp.CheckpointManager, ocp.CheckpointManager]:
    """(latest, best): the last `keep` checkpoints, and the best one by validation PSNR."""
    workdir = Path(workdir).absolute()
    latest = ocp.CheckpointManager(
        workdir / "checkpoints",
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        item_names=ITEMS,
    )
    best = ocp.CheckpointManager(
        workdir / "best",
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, best_fn=lambda metrics: metrics["val_psnr"], best_mode="max", create=True
        ),
        item_names=ITEMS,
    )
    return latest, best


def latest_step(workdir: str | Path) -> int | None:
    """The step of the newest complete checkpoint in `workdir`, None if there is none; creates nothing."""
    folder = Path(workdir).absolute() / "checkpoints"
    if not folder.is_dir():
        return None
    with ocp.CheckpointManager(folder, options=ocp.CheckpointManagerOptions(read_only=True),
                               item_names=ITEMS) as manager:
        return manager.latest_step()


def save(manager: ocp.CheckpointManager, step: int, state: Any, generator_variables: Any,
         config: ml_collections.ConfigDict, metrics: dict | None = None) -> None:
    """Save the full state, G's inference variables and the metadata (spec, config, step) at `step`."""
    meta = {"model": GeneratorSpec.from_config(config).to_dict(), "config": config.to_dict(), "step": step}
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            generator=ocp.args.StandardSave(generator_variables),
            meta=ocp.args.JsonSave(meta),
        ),
        metrics=metrics,
        force=True,
    )


def restore_state(manager: ocp.CheckpointManager, target_state: Any, step: int) -> Any:
    """The full state saved at `step`, shaped like `target_state`."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target_state)
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    return restored["state"]


def _step_dir(path: Path) -> Path:
    """Resolve a workdir, a checkpoints folder or a step folder to one step folder."""
    if (path / "generator").is_dir():
        return path
    for folder in (path / "checkpoints", path):
        steps = [p for p in folder.glob("*") if p.is_dir() and p.name.isdigit() and (p / "generator").is_dir()]
        if steps:
            return max(steps, key=lambda p: int(p.name))
    raise UserError(
        f"no generator checkpoint in {path}: pass a training workdir, its checkpoints/ folder or a step folder"
    )


def read_generator_spec(path: str | Path) -> GeneratorSpec:
    """What rebuilds the generator of the checkpoint that `path` resolves to (from its metadata)."""
    step_dir = _step_dir(Path(path))
    meta_file = step_dir / "meta" / "metadata"
    if not meta_file.is_file():
        raise UserError(f"checkpoint {step_dir} has no meta/metadata: it was not written by srgan-jax")
    try:
        return GeneratorSpec.from_dict(json.loads(meta_file.read_text())["model"])
    except (ValueError, KeyError, TypeError) as err:  # JSONDecodeError is a ValueError
        raise UserError(f"{meta_file} is damaged or not srgan-jax metadata ({err}): pass another checkpoint") from None


def shipped_checkpoint(name: str = SHIPPED_GENERATOR) -> Path:
    """The folder of a generator shipped with the package (`pretrained/<name>` in a source checkout).

    Found through the installed package's data (`srgan_jax.pretrained`), so it works from any
    directory and for a wheel; UserError when that package data is missing.
    """
    try:
        folder = Path(str(importlib.resources.files("srgan_jax.pretrained") / name))
    except ModuleNotFoundError:
        folder = None
    if folder is None or not folder.is_dir():
        raise UserError(f"the shipped generator {name} is not installed with this copy of srgan-jax: "
                        "pass --checkpoint WORKDIR, or reinstall the package (pip install .)")
    return folder


def load_generator_variables(path: str | Path, abstract_variables: Any) -> Any:
    """G's {"params", "batch_stats"} from a checkpoint, shaped like `abstract_variables`."""
    step_dir = _step_dir(Path(path)).absolute()
    # Place every array on this process's first device: the checkpoint may come from
    # another machine (e.g. trained on a GPU, restored on a CPU).
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract_variables)
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            return checkpointer.restore(step_dir / "generator", abstract)
    except Exception as err:  # Orbax, msgpack and tensorstore each raise their own types
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise UserError(f"checkpoint {step_dir} is damaged or incomplete ({type(err).__name__}: {first_line}): "
                        "pass another checkpoint, e.g. an older step folder") from None
