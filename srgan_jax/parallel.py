"""Data parallelism as one strategy object: `jax.jit` over a device mesh (default) or `jax.pmap`.

Both run the same pure step `step(state, batch, axis_name=None) -> (state, metrics)`:
- `MeshStrategy`: state replicated, batch sharded along mesh axis "data". The step sees the
  global batch as one array, so losses, gradients and BatchNorm statistics are global as
  written (`bn_axis_name` None).
- `PmapStrategy`: the step runs per device on its slice with `axis_name="batch"`; it
  averages gradients and metrics with `pmean`, and BatchNorm averages its statistics over
  the same axis (models built with `bn_axis_name="batch"`).

A strategy compiles every function of training: a train step (`wrap_train_step`, state
donated), an eval function (`wrap_eval`), a model's `init` (`wrap_init`) and validation on
one image (`wrap_validation`); it places state and batches on the devices, gives the
sharding a multi-process checkpoint is written with (`checkpoint_sharding`), and brings
state and metrics back as one host copy (`to_host`). Training and the benchmark use it alike.
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


def check_batch_size(global_batch: int, num_devices: int, num_processes: int = 1) -> None:
    """Fail early, in the user's terms, when the batch cannot be split evenly."""
    if global_batch % num_devices:
        raise UserError(f"train.batch_size={global_batch} is not divisible by the {num_devices} devices: "
                        f"use a multiple of {num_devices}")
    if global_batch % num_processes:
        raise UserError(f"train.batch_size={global_batch} is not divisible by the {num_processes} processes")


def prefetch(batches: Iterator[dict], place: Callable[[dict], dict], size: int = 2) -> Iterator[dict]:
    """`place(batch)` for each host batch, `size` batches ahead of the consumer.

    With asynchronous dispatch the transfers of the next batches overlap the running step.
    """
    queue = collections.deque()

    def enqueue(count: int) -> None:
        for batch in itertools.islice(batches, count):
            queue.append(place(batch))

    enqueue(size)
    while queue:
        yield queue.popleft()
        enqueue(1)


class MeshStrategy:
    """`jax.jit` over a 1-D mesh of `devices` (default: all devices of all hosts), axis "data"."""

    bn_axis_name = None

    def __init__(self, devices: list | None = None):
        self.mesh = Mesh(np.asarray(jax.devices() if devices is None else devices), (DATA_AXIS,))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.sharded = NamedSharding(self.mesh, PartitionSpec(DATA_AXIS))

    def wrap_train_step(self, step: Step) -> Callable:
        """`step` jitted (XLA:CPU options on the CPU): state replicated and donated, batch sharded."""
        return xla_cpu.jit(step, in_shardings=(self.replicated, self.sharded),
                           out_shardings=(self.replicated, self.replicated), donate_argnums=(0,))

    def wrap_eval(self, fn: Callable) -> Callable:
        """`fn(variables, batch)` jitted: variables replicated, batch sharded, nothing donated."""
        return xla_cpu.jit(fn, in_shardings=(self.replicated, self.sharded))

    def wrap_init(self, fn: Callable) -> Callable:
        """`fn(rng, *inputs)` (a model's `init`) jitted: one compilation, not one per operation."""
        return xla_cpu.jit(fn)

    def wrap_validation(self, fn: Callable) -> Callable:
        """`fn(variables, lr)` on one image over the mesh: `variables` as placed by `place_state`
        (or host arrays), `lr` a host array; returns the output replicated."""
        compiled = xla_cpu.jit(fn, in_shardings=(self.replicated, self.replicated), out_shardings=self.replicated)
        return lambda variables, lr: compiled(variables, self.place_state(lr))

    @property
    def checkpoint_sharding(self) -> NamedSharding:
        """Replicated over every device of every process: what a multi-process save writes once."""
        return self.replicated

    def place_state(self, tree: Any) -> Any:
        """Place a pytree on every device of the mesh (works across hosts)."""
        return jax.device_put(jax.tree.map(np.asarray, tree), self.replicated)

    def place_batch(self, batch: Any) -> Any:
        """Assemble the global batch from this process's slice, sharded along "data"."""
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self.sharded, x), batch)

    def place_batches(self, batches: Iterator[dict]) -> Iterator[dict]:
        return prefetch(batches, self.place_batch)

    @property
    def compiler_options(self) -> dict[str, Any] | None:
        """The options `wrap_train_step` / `wrap_eval` compile with (`xla_cpu.jit`)."""
        return xla_cpu.compiler_options()

    def to_host(self, tree: Any) -> Any:
        """One copy of replicated state or metrics (under jit there is one already)."""
        return tree


class PmapStrategy:
    """`jax.pmap` over this process's devices, axis "batch"; each host feeds its own slice."""

    bn_axis_name = PMAP_AXIS

    def __init__(self):
        # Moves split host arrays onto the devices exactly as pmap itself would.
        self._to_devices = jax.pmap(lambda x: x)

    def wrap_train_step(self, step: Step) -> Callable:
        """`step` under pmap with `axis_name="batch"`; takes replicated state, split batch; state donated.

        `jax.pmap` takes no compiler options, so on the CPU it compiles with XLA's defaults.
        """
        return jax.pmap(functools.partial(step, axis_name=PMAP_AXIS), axis_name=PMAP_AXIS, donate_argnums=(0,))

    def wrap_eval(self, fn: Callable) -> Callable:
        """`fn(variables, batch)` under pmap: replicated variables, split batch."""
        return jax.pmap(fn, axis_name=PMAP_AXIS)

    def wrap_init(self, fn: Callable) -> Callable:
        """`fn(rng, *inputs)` (a model's `init`) jitted on the default device; `place_state` replicates it."""
        return xla_cpu.jit(fn)

    def wrap_validation(self, fn: Callable) -> Callable:
        """`fn(variables, lr)` on one image, the same on every local device: `variables` as placed
        by `place_state`, `lr` a host array; returns the first device's output."""
        mapped = jax.pmap(fn)
        return lambda variables, lr: self.to_host(mapped(variables, self.place_state(lr)))

    @functools.cached_property
    def checkpoint_sharding(self) -> NamedSharding:
        """Replicated over every device of every process: what a multi-process save writes once."""
        return NamedSharding(Mesh(np.asarray(jax.devices()), (PMAP_AXIS,)), PartitionSpec())

    def place_state(self, tree: Any) -> Any:
        """Copy a pytree onto every local device (leading device axis)."""
        return jax_utils.replicate(tree)

    def place_batch(self, batch: Any) -> Any:
        """[B, ...] -> [local devices, B / local devices, ...] on the devices, one slice per device."""
        return self._to_devices(self._split(batch))

    def place_batches(self, batches: Iterator[dict]) -> Iterator[dict]:
        """Host batches split per device; the pmapped step moves them itself (no extra program)."""
        return map(self._split, batches)

    @staticmethod
    def _split(batch: Any) -> Any:
        devices = jax.local_device_count()
        return jax.tree.map(lambda x: np.reshape(x, (devices, -1) + np.shape(x)[1:]), batch)

    compiler_options = None  # jax.pmap takes none: XLA's defaults

    def to_host(self, tree: Any) -> Any:
        """The first device's copy of replicated state or `pmean`-ed metrics."""
        return jax_utils.unreplicate(tree)


Strategy = MeshStrategy | PmapStrategy


def create_strategy(pmap: bool, global_batch: int | None = None) -> Strategy:
    """`jax.pmap` over this process's devices, else (the default) jit over a mesh of all devices.

    `global_batch` (training): checked to split evenly over the devices and processes first.
    """
    if global_batch is not None:
        check_batch_size(global_batch, jax.device_count(), jax.process_count())
    return PmapStrategy() if pmap else MeshStrategy()
