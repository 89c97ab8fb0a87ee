"""When a training state is checkpointed: only once it has proved finite.

`checkpoints.py` owns the files (writing, verifying, restoring); this module owns the policy.
A state reached at a checkpoint step is held as a host copy; the next step computes its loss
from that state, and once that loss is checked finite the held state is saved (its own
arrays checked too). With no next step (the last step, a stop) one step is taken on the next
batch only to check that loss: the probe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, NoReturn

import jax
import ml_collections
import numpy as np

from srgan_jax import checkpoints, parallel
from srgan_jax import config as config_lib
from srgan_jax.errors import UserError
from srgan_jax.training.monitor import Monitor
from srgan_jax.training.state import SRState, generator_variables


class NonFiniteLossError(UserError):
    """A loss or parameter became NaN or Inf; the last good checkpoint is kept."""


class CheckpointPolicy:
    """The deferred save, the probe, "last good", and the managers of `checkpoints/` and `best/`.

    Use as a context manager: leaving it closes the managers once the save in flight is on
    disk (a failed save raises there, in one line).
    """

    def __init__(self, workdir: Path, spec: config_lib.RunSpec, config: ml_collections.ConfigDict,
                 strategy: parallel.Strategy, start_step: int):
        """`config` is written into each checkpoint's metadata, as the run's record; `best/` is
        kept when the run validates."""
        self._workdir, self._config, self._strategy = workdir, config, strategy
        self._latest, self._best = checkpoints.create_managers(workdir, spec.keep_checkpoints,
                                                               spec.eval_images is not None)
        self.last_good_step = start_step or None  # the newest checkpoint known to be finite
        self._held: tuple[int, SRState, dict | None] | None = None
        self.saved_state: SRState | None = None  # host copy of the newest state saved by this run

    def __enter__(self) -> CheckpointPolicy:
        return self

    def __exit__(self, *exc):
        try:
            checkpoints.close(self._latest)
        finally:
            if self._best is not None:
                checkpoints.close(self._best)

    def wait(self) -> None:
        """Block until the saves in flight are on disk; StorageError if one failed."""
        try:
            checkpoints.wait_until_finished(self._latest)
        finally:
            if self._best is not None:
                checkpoints.wait_until_finished(self._best)

    @property
    def holding(self) -> bool:
        """Whether a state waits for the next step's loss before it is saved."""
        return self._held is not None

    def hold(self, step: int, state: SRState, validation: dict | None) -> None:
        """Keep a host copy of the state after `step` (it survives the next step's buffer donation)."""
        self._held = (step, jax.device_get(self._strategy.to_host(state)), validation)

    def check(self, monitor: Monitor, write: bool) -> None:
        """The monitor's recorded metrics, checked; NonFiniteLossError naming the last good checkpoint."""
        problem = monitor.check(self._strategy.to_host, write)
        if problem:
            self.fail(problem)

    def save_held(self) -> None:
        """Save the held state: call once a loss computed from it was checked finite."""
        if self._held is None:
            return
        step, state, validation = self._held
        bad = [jax.tree_util.keystr(path) for path, x in jax.tree_util.tree_flatten_with_path(state)[0]
               if np.issubdtype(np.asarray(x).dtype, np.floating) and not np.isfinite(x).all()]
        if bad:
            self.fail(f"state array {bad[0]} is not finite at step {step}")
        sharding = self._strategy.checkpoint_sharding
        checkpoints.save(self._latest, step, state, generator_variables(state), self._config, sharding=sharding)
        if validation:
            checkpoints.save(self._best, step, state, generator_variables(state), self._config, validation,
                             sharding=sharding)
        self._held, self.saved_state, self.last_good_step = None, state, step

    def probe(self, train_step: Callable, state: SRState, batch: Any, monitor: Monitor) -> None:
        """No next step will test the held state: take one on `batch` for its loss only, and check
        it (NonFiniteLossError); `save_held` may follow."""
        _, metrics = train_step(state, batch)
        monitor.record(self._held[0] + 1, metrics, probe=True)
        self.check(monitor, write=False)

    def fail(self, what: str) -> NoReturn:
        """Raise NonFiniteLossError: `what` went wrong; names the last good checkpoint."""
        kept = (f"the last good checkpoint (step {self.last_good_step}) is kept in {self._workdir / 'checkpoints'}"
                if self.last_good_step else "no checkpoint was written")
        raise NonFiniteLossError(f"{what}: training stopped; {kept}. Lower train.learning_rate or check the data")
