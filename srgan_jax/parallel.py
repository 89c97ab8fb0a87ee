"""Data parallelism: `jax.jit` over a 1-D device mesh (default) or `jax.pmap`.

Both wrap the same pure step `step(state, batch) -> (state, metrics)`:
- mesh: state replicated, batch sharded along axis "data". The step sees the global
  batch as one array, so losses, gradients and BatchNorm statistics are global as written.
- pmap: the step runs per device on its slice with `axis_name="batch"`; the step
  averages gradients and metrics with `pmean`, and BatchNorm averages its statistics
  over the same axis (models built with `bn_axis_name="batch"`).
"""

from __future__ import annotations

import collections
import functools
import itertools
from typing import Any, Callable, Iterator

import jax
import numpy as np
from flax import jax_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from srgan_jax import xla_cpu
from srgan_jax.errors import UserError

DATA_AXIS = "data"
PMAP_AXIS = "batch"

Step = Callable[..., tuple[Any, dict]]


def create_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh over `devices` (default: all devices of all hosts) with axis "data"."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(global_batch: int, num_devices: int, num_processes: int = 1) -> None:
    """Fail early, in the user's terms, when the batch cannot be split evenly."""
    if global_batch % num_devices:
        raise UserError(
            f"train.batch_size={global_batch} is not divisible by the {num_devices} devices: "
            f"use a multiple of {num_devices}"
        )
    if global_batch % num_processes:
        raise UserError(
            f"train.batch_size={global_batch} is not divisible by the {num_processes} processes"
        )


def jit_step(step: Step, mesh: Mesh) -> Callable:
    """`step` jitted over `mesh`: state replicated and donated, batch sharded on "data".

    On CPU it compiles with `xla_cpu.compiler_options()`.
    """
    return jax.jit(
        step,
        in_shardings=(replicated_sharding(mesh), batch_sharding(mesh)),
        out_shardings=(replicated_sharding(mesh), replicated_sharding(mesh)),
        donate_argnums=(0,),
        compiler_options=xla_cpu.compiler_options(),
    )


def pmap_step(step: Step) -> Callable:
    """`step` under `jax.pmap` over local devices; takes replicated state, split batch.

    On one CPU host it compiles with `xla_cpu.compiler_options()`, as `jit_step` does. With
    several processes `jax.pmap` itself is returned: it converts process-local arrays to
    global ones around the call, which a directly compiled executable does not.
    """
    mapped = jax.pmap(functools.partial(step, axis_name=PMAP_AXIS), axis_name=PMAP_AXIS, donate_argnums=(0,))
    options = xla_cpu.compiler_options()
    return mapped if options is None or jax.process_count() > 1 else PmapWithOptions(mapped, options)


class PmapWithOptions:
    """A `jax.pmap` function compiled with XLA compiler options, which `jax.pmap` does not take.

    Like `jax.jit`, it compiles once per input signature (tree, shapes, dtypes) and keeps
    the executable; `lower` gives the pmap's lowering, to compile with `options`.
    """

    def __init__(self, mapped: Callable, options: dict[str, Any]):
        self.mapped, self.options = mapped, options
        self._executables: dict[Any, Callable] = {}

    def lower(self, *args: Any) -> jax.stages.Lowered:
        return self.mapped.lower(*args)

    def __call__(self, *args: Any) -> Any:
        leaves, tree = jax.tree.flatten(args)
        signature = (tree, tuple((x.shape, x.dtype, getattr(x, "weak_type", False)) for x in leaves))
        if signature not in self._executables:
            self._executables[signature] = self.mapped.lower(*args).compile(self.options)
        return self._executables[signature](*args)


def split_for_pmap(batch: dict, num_devices: int) -> dict:
    """[B, ...] -> [num_devices, B / num_devices, ...] for each array of a host batch."""
    return jax.tree.map(lambda x: x.reshape((num_devices, -1) + x.shape[1:]), batch)


def replicate(tree: Any) -> Any:
    """Copy a pytree onto every local device (leading device axis) for pmap."""
    return jax_utils.replicate(tree)


def unreplicate(tree: Any) -> Any:
    """The first device's copy of a pmap-replicated pytree."""
    return jax_utils.unreplicate(tree)


def put_replicated(tree: Any, mesh: Mesh) -> Any:
    """Place a pytree on every device of `mesh` (works across hosts)."""
    sharding = replicated_sharding(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


def put_batch(batch: dict, mesh: Mesh) -> dict:
    """Assemble the global batch from this process's slice, sharded along "data"."""
    sharding = batch_sharding(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


def prefetch_to_mesh(batches: Iterator[dict], mesh: Mesh, size: int = 2) -> Iterator[dict]:
    """Host batches placed on `mesh` (`put_batch`) `size` batches ahead of the consumer.

    With asynchronous dispatch the transfers of the next batches overlap the running step.
    """
    queue = collections.deque()

    def enqueue(count: int) -> None:
        for batch in itertools.islice(batches, count):
            queue.append(put_batch(batch, mesh))

    enqueue(size)
    while queue:
        yield queue.popleft()
        enqueue(1)
