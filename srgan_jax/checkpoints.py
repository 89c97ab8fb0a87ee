"""Orbax checkpoints: save / resume training, and restore the generator alone for inference.

Layout of a workdir:
  checkpoints/<step>/state      full training state (G and D params, batch_stats, Adam)
  checkpoints/<step>/generator  G's {"params", "batch_stats"} alone, for inference
  checkpoints/<step>/meta       JSON: model config, training config, step
  best/<step>/...               the same items for the best validation PSNR so far

A generator is restored from nothing but such a step folder: `read_generator_spec` reads
what rebuilds it from `meta`, `load_generator_variables` its arrays. This is the only module
that reads or writes `meta`. The package ships trained generators in the same layout, found
by name (`find_generator`: srresnet_x4, the default).

Integrity: `meta` holds a CRC-32 of every array of `state` and `generator`, and every restore
checks them. Training resumes from the newest checkpoint that restores and matches
(`restore_newest_intact`); damaged newer ones move to `<workdir>/damaged/`. Storage failures
(full disk, no permission) surface as one `StorageError` line naming the path and the cause.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import logging
import os
import re
import shutil
import sys
import threading
import zlib
from pathlib import Path
from typing import Any, Iterator

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from srgan_jax.config import GeneratorSpec
from srgan_jax.errors import UserError, first_line

ITEMS = ("state", "generator", "meta")
SHIPPED_GENERATOR = "srresnet_x4"  # the default of `srgan-jax upscale` / `evaluate` / `load_generator`
DAMAGED = "damaged"  # <workdir>/damaged/<step>: checkpoints that failed verification, kept for inspection

log = logging.getLogger(__name__)


class DamagedCheckpointError(UserError):
    """A checkpoint that cannot be read, or whose arrays do not match their checksums."""


class StorageError(UserError):
    """Writing to the workdir failed (full disk, no permission, read-only file system)."""


def quiet_closed_event_loops() -> None:
    """From now on, drop in this process the "Event loop is closed" errors Orbax leaves behind.

    Orbax runs each save and restore in a fresh asyncio loop and closes it as soon as one read
    or write fails; tensorstore operations still in flight then post their results to the
    closed loop from their own threads, which Python reports as unraisable (or thread)
    exceptions, after the failure itself was raised and reported. Exactly those are dropped
    (the hooks are wrapped once); every other exception reaches the hook it did before.
    """
    for module, name in ((sys, "unraisablehook"), (threading, "excepthook")):
        hook = getattr(module, name)
        if not getattr(hook, "drops_closed_loop_errors", False):
            setattr(module, name, _dropping_closed_loop_errors(hook))
    asyncio_log = logging.getLogger("asyncio")
    if not any(isinstance(f, OrbaxOrphanTaskFilter) for f in asyncio_log.filters):
        asyncio_log.addFilter(OrbaxOrphanTaskFilter())


class OrbaxOrphanTaskFilter(logging.Filter):
    """Drops asyncio's "Task exception was never retrieved" for Orbax's own write tasks.

    When one array write fails, Orbax raises that failure (reported as one StorageError line)
    and abandons the sibling writes, which fail with the same cause; asyncio logs each of them,
    with a traceback, when it collects the task, after the one-line error was printed.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()  # names the task's coroutine and the file it is defined in
        return not (message.startswith("Task exception was never retrieved")
                    and f"defined at {os.path.dirname(ocp.__file__)}{os.sep}" in message)


def _dropping_closed_loop_errors(hook: Any) -> Any:
    def dropping(args: Any) -> None:
        if not (args.exc_type is RuntimeError and str(args.exc_value) == "Event loop is closed"):
            hook(args)

    dropping.drops_closed_loop_errors = True
    return dropping


def create_managers(workdir: str | Path, keep: int,
                    validated: bool = True) -> tuple[ocp.CheckpointManager, ocp.CheckpointManager | None]:
    """(latest, best): the last `keep` checkpoints, and the best one by validation PSNR (None, and
    no `best/` folder, unless `validated`)."""
    workdir = Path(workdir).absolute()
    latest = ocp.CheckpointManager(
        workdir / "checkpoints",
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True),
        item_names=ITEMS,
    )
    if not validated:
        return latest, None
    best = ocp.CheckpointManager(
        workdir / "best",
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, best_fn=lambda metrics: metrics["val_psnr"], best_mode="max", create=True,
            cleanup_tmp_directories=True,
        ),
        item_names=ITEMS,
    )
    return latest, best


def all_steps(workdir: str | Path) -> list[int]:
    """The steps of the complete checkpoints in `workdir`, oldest first; creates nothing."""
    folder = Path(workdir).absolute() / "checkpoints"
    if not folder.is_dir():
        return []
    with ocp.CheckpointManager(folder, options=ocp.CheckpointManagerOptions(read_only=True),
                               item_names=ITEMS) as manager:
        return sorted(manager.all_steps())


def latest_step(workdir: str | Path) -> int | None:
    """The step of the newest complete checkpoint in `workdir`, None if there is none; creates nothing."""
    steps = all_steps(workdir)
    return steps[-1] if steps else None


def checksums(tree: Any) -> dict[str, str]:
    """{path of each array in `tree`: CRC-32 of its bytes, 8 hex digits}.

    Python scalars (a step counter never updated) count in JAX's dtype, as Orbax stores them.
    """
    leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
    return {jax.tree_util.keystr(path): f"{zlib.crc32(_canonical(x).tobytes()):08x}" for path, x in leaves}


def _canonical(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=_stored_dtype(x), order="C")


def _stored_dtype(x: Any) -> np.dtype:
    """The dtype Orbax stores `x` with. Arrays (jax or numpy) are asked for theirs: numpy 2.4
    deprecates `np.result_type(jax_array)`; Python scalars take JAX's default."""
    return jax.dtypes.canonicalize_dtype(x.dtype if hasattr(x, "dtype") else np.result_type(x))


def save(manager: ocp.CheckpointManager, step: int, state: Any, generator_variables: Any,
         config: ml_collections.ConfigDict, metrics: dict | None = None, *, sharding: Any = None) -> None:
    """Save the full state, G's inference variables and the metadata (spec, config, step,
    checksums) at `step`; StorageError when the save cannot start (see `wait_until_finished`).

    `sharding`: with several processes, the strategy's replicated sharding over every device of
    every process (`Strategy.checkpoint_sharding`); the host arrays are placed with it, which is
    what Orbax writes once from several processes (every process calls `save`).
    """
    meta = {"model": GeneratorSpec.from_config(config).to_dict(), "config": config.to_dict(), "step": step,
            "checksums": {"state": checksums(state), "generator": checksums(generator_variables)},
            "shapes": {"state": _shapes(state)}}
    quiet_closed_event_loops()
    with _storage_errors(manager.directory, step):
        manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(_placed(state, sharding)),
                generator=ocp.args.StandardSave(_placed(generator_variables, sharding)),
                meta=ocp.args.JsonSave(meta),
            ),
            metrics=metrics,
            force=True,
        )


def close(manager: ocp.CheckpointManager) -> None:
    """Wait for the save in flight and release the manager; StorageError if that save failed."""
    with _storage_errors(manager.directory, None):
        manager.close()


def _placed(tree: Any, sharding: Any) -> Any:
    if jax.process_count() == 1:
        return tree
    if sharding is None:
        raise ValueError("checkpoints.save: several processes need the strategy's checkpoint_sharding")
    return jax.device_put(jax.tree.map(_canonical, tree), sharding)


def wait_until_finished(manager: ocp.CheckpointManager) -> None:
    """Block until the asynchronous save in flight is on disk; StorageError if it failed."""
    with _storage_errors(manager.directory, None):
        manager.wait_until_finished()


@contextlib.contextmanager
def _storage_errors(directory: Path, step: int | None) -> Iterator[None]:
    """Turn a failed write under `directory` into one StorageError line (path, cause, fix)."""
    try:
        yield
    except UserError:
        raise
    except Exception as err:  # Orbax and tensorstore wrap the OS error in their own types
        cause = _storage_cause(err)
        if cause is None:
            raise
        what = f"checkpoint step {step}" if step is not None else "a checkpoint"
        raise StorageError(f"writing {what} to {directory} failed ({cause}): free space or "
                           "fix the permissions; older checkpoints are untouched") from None


def _storage_cause(err: BaseException) -> str | None:
    """The OS-level cause of a failed write (e.g. "No space left on device: /path"); None if it has none."""
    for cause in _chain(err):
        if isinstance(cause, OSError) and cause.strerror:
            return f"{cause.strerror}: {cause.filename}" if cause.filename else cause.strerror
        code = re.search(r"os_error_code='?(\d+)", str(cause))
        if code:  # tensorstore reports the errno in its message
            path = re.search(r'Failed (?:writing|to open|opening)[^"]*"([^"]+)"', str(cause))
            return os.strerror(int(code.group(1))) + (f": {path.group(1)}" if path else "")
    return None


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def restore_newest_intact(workdir: str | Path, target_state: Any) -> tuple[int, Any] | None:
    """(step, state) of the newest checkpoint in `workdir` that restores and matches its checksums.

    Each damaged newer checkpoint is reported in one warning (step and cause). None when
    there are no checkpoints; DamagedCheckpointError when none of them is intact. Damaged
    ones stay where they are: `set_aside` moves them once every process has chosen.
    """
    folder = Path(workdir).absolute() / "checkpoints"
    steps = all_steps(workdir)
    if not steps:
        return None
    abstract = _on_first_local_device(target_state)
    quiet_closed_event_loops()  # a damaged array fails its restore with reads still in flight
    with ocp.CheckpointManager(folder, options=ocp.CheckpointManagerOptions(read_only=True),
                               item_names=ITEMS) as manager:
        for step in reversed(steps):
            try:
                return step, _restore_verified(manager, step, abstract)
            except DamagedCheckpointError as err:
                log.warning("%s: trying the checkpoint before it", err)
    raise DamagedCheckpointError(f"no intact checkpoint in {folder} (steps {steps} are all damaged): "
                                 f"move {folder} away to train from scratch")


def _restore_verified(manager: ocp.CheckpointManager, step: int, abstract: Any) -> Any:
    step_dir = Path(manager.directory) / str(step)
    meta = _read_meta(step_dir)
    _check_same_model(step_dir, meta, abstract)
    try:
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    except Exception as err:  # Orbax, tensorstore and msgpack each raise their own types
        raise DamagedCheckpointError(f"checkpoint step {step} in {step_dir} cannot be read "
                                     f"({first_line(err)})") from None
    _verify(step_dir, "state", restored["state"], meta)
    return restored["state"]


class ModelMismatchError(UserError):
    """The checkpoint holds another model than the config builds (not damage: nothing is moved)."""


def _check_same_model(step_dir: Path, meta: dict, abstract: Any) -> None:
    """ModelMismatchError when the saved state's arrays (names, shapes, as `meta` records them)
    are not those of the state the config builds."""
    saved = {name: tuple(shape) for name, shape in meta.get("shapes", {}).get("state", {}).items()}
    wanted = _shapes(abstract)
    if not saved or saved == wanted:  # no record (older srgan-jax): the restore decides
        return
    names = sorted(set(saved) ^ set(wanted))
    if names:
        difference = f"array {names[0]} is only in the {'checkpoint' if names[0] in saved else 'config'}"
    else:
        names = sorted(k for k in wanted if wanted[k] != saved[k])
        difference = f"array {names[0]} has shape {saved[names[0]]} there, {wanted[names[0]]} here"
    raise ModelMismatchError(f"checkpoint {step_dir} holds another model than this config ({difference}): "
                             "resume with the config it was trained with, or use another --workdir")


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """{"g/params/conv_in/kernel": shape, ...}: each array of a state by name."""
    def name(key: Any) -> str:
        return str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key))))

    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(name(k) for k in path): tuple(np.shape(x)) for path, x in leaves}


def _verify(step_dir: Path, item: str, tree: Any, meta: dict) -> None:
    """DamagedCheckpointError unless every array of `tree` matches the checksum in `meta`."""
    if "checksums" not in meta:
        log.warning("%s has no checksums (written by an older srgan-jax): not verified", step_dir)
        return
    expected = meta["checksums"].get(item) if isinstance(meta["checksums"], dict) else None
    if not isinstance(expected, dict):
        raise DamagedCheckpointError(f"checkpoint {step_dir}: meta/metadata lacks the checksums of {item}")
    got = checksums(tree)
    for path in sorted(set(expected) | set(got)):
        if expected.get(path) != got.get(path):
            raise DamagedCheckpointError(f"checkpoint {step_dir}: array {item}{path} does not match its "
                                         "checksum (the file was changed or damaged on disk)")


def set_aside(workdir: str | Path, after: int) -> None:
    """Move the checkpoints (and best ones) past step `after` to `<workdir>/damaged/`, so training
    can write those steps again; they are kept for inspection."""
    workdir = Path(workdir).absolute()
    for folder in ("checkpoints", "best"):
        for path in sorted((workdir / folder).glob("*")):
            if not (path.is_dir() and path.name.isdigit() and int(path.name) > after):
                continue
            target = workdir / DAMAGED / (path.name if folder == "checkpoints" else f"best-{path.name}")
            suffix = 1
            while target.exists():
                target, suffix = target.with_name(f"{target.name.split('+')[0]}+{suffix}"), suffix + 1
            target.parent.mkdir(exist_ok=True)
            shutil.move(path, target)
            log.warning("checkpoint %s moved to %s", path, target)


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


def _read_meta(step_dir: Path) -> dict:
    meta_file = step_dir / "meta" / "metadata"
    if not meta_file.is_file():
        raise DamagedCheckpointError(f"checkpoint {step_dir} has no meta/metadata: it is incomplete or was "
                                     "not written by srgan-jax")
    try:
        meta = json.loads(meta_file.read_text())
        GeneratorSpec.from_dict(meta["model"])
        return meta
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        raise DamagedCheckpointError(f"{meta_file} is damaged or not srgan-jax metadata ({err}): "
                                     "pass another checkpoint") from None


def read_generator_spec(path: str | Path) -> GeneratorSpec:
    """What rebuilds the generator of the checkpoint that `path` resolves to (from its metadata)."""
    return GeneratorSpec.from_dict(_read_meta(_step_dir(Path(path)))["model"])


def shipped_names() -> list[str]:
    """Names of the generators shipped with the package (`pretrained/<name>/`), e.g. srresnet_x4."""
    try:
        root = importlib.resources.files("srgan_jax.pretrained")
    except ModuleNotFoundError:
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.joinpath("generator").is_dir())


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


def find_generator(checkpoint: str | Path | None = None) -> Path:
    """The folder a `--checkpoint` value means: an existing path, else a shipped generator's name.

    None is the default shipped generator (SRResNet x4). A path that exists always wins, so a
    local folder named like a shipped model is still read from disk.
    """
    if checkpoint is None:
        return shipped_checkpoint()
    path = Path(checkpoint)
    if path.exists():
        return path
    if str(checkpoint) in shipped_names():
        return shipped_checkpoint(str(checkpoint))
    names = ", ".join(shipped_names()) or "none installed"
    raise UserError(f"checkpoint {checkpoint} does not exist: pass a training workdir, its checkpoints/ "
                    f"folder, a step folder, or a shipped generator's name ({names})")


def export_generator(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Copy a checkpoint's generator alone to `out_dir` (the layout of the shipped generators).

    `out_dir/generator` is the checkpoint's generator item, verified against its checksums
    first; `out_dir/meta/metadata` keeps the model, config and step and the generator's
    checksums, without the training state's. The optimiser and D are left behind.
    """
    step_dir, out_dir = _step_dir(Path(checkpoint)).absolute(), Path(out_dir)
    if out_dir.exists():
        raise UserError(f"{out_dir} exists: remove it or pass another folder")
    meta = _read_meta(step_dir)
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            variables = checkpointer.restore(step_dir / "generator")  # the tree as saved
    except Exception as err:  # Orbax, msgpack and tensorstore each raise their own types
        raise DamagedCheckpointError(f"checkpoint {step_dir} is damaged or incomplete ({first_line(err)}): "
                                     "pass another checkpoint") from None
    _verify(step_dir, "generator", variables, meta)
    kept = {"model": meta["model"], "config": meta["config"], "step": meta["step"],
            "checksums": {"generator": meta["checksums"]["generator"]}}
    shutil.copytree(step_dir / "generator", out_dir / "generator")
    (out_dir / "meta").mkdir()
    (out_dir / "meta" / "metadata").write_text(json.dumps(kept))
    return out_dir


def load_generator_variables(path: str | Path, abstract_variables: Any) -> Any:
    """G's {"params", "batch_stats"} from a checkpoint, shaped like `abstract_variables`, checksums verified."""
    step_dir = _step_dir(Path(path)).absolute()
    meta = _read_meta(step_dir)
    abstract = _on_first_local_device(abstract_variables)
    quiet_closed_event_loops()
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            variables = checkpointer.restore(step_dir / "generator", abstract)
    except Exception as err:  # Orbax, msgpack and tensorstore each raise their own types
        raise DamagedCheckpointError(f"checkpoint {step_dir} is damaged or incomplete ({first_line(err)}): "
                                     "pass another checkpoint, e.g. an older step folder") from None
    _verify(step_dir, "generator", variables, meta)
    return variables


def _on_first_local_device(tree: Any) -> Any:
    """Restore targets on this process's first device: the checkpoint may come from another
    machine or another number of processes (e.g. trained by two GPU hosts, restored on a CPU)."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), _stored_dtype(x), sharding=device), tree)


