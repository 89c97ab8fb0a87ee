"""Why training stops early: SIGTERM / SIGINT or `train.time_limit_s`, agreed by every process."""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from typing import Iterator

import jax

from srgan_jax import multihost
from srgan_jax.training.state import SRState

log = logging.getLogger(__name__)


class Interrupted(Exception):
    """SIGTERM / SIGINT stopped training after its checkpoint at `step` was written.

    `state` is that checkpoint's; `exit_code` is the shell's for the signal (128 + its number:
    130 for SIGINT, 143 for SIGTERM), so a script can tell an interrupted run from a finished one.
    """

    def __init__(self, signal_number: int, step: int, state: SRState):
        name = signal.Signals(signal_number).name
        super().__init__(f"stopped by {name} at step {step}, after writing its checkpoint; rerun to resume")
        self.signal_number, self.step, self.state = signal_number, step, state
        self.exit_code = 128 + signal_number


class StopRequest:
    """SIGTERM / SIGINT and `train.time_limit_s` as a stop reason the loop asks for after each step.

    In a multi-process run every process must stop at the same step with one checkpoint, so
    the reasons are exchanged at sync steps (`Schedule.is_sync_step`) and the first one found wins.
    A second signal stops at once, except while a checkpoint is being written (`deferred`).
    """

    def __init__(self, time_limit_s: float, started: float):
        self._time_limit_s, self._started = time_limit_s, started  # a limit of 0: none
        self._signal_name: str | None = None
        self._signal_number = 0  # of the signal this process received
        self.signal_number = 0  # of the signal behind the stop `reason` gave (in any process); 0: none
        self._deferring = self._interrupted = False
        self._previous = {}

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self._signal_name is None:
            self._signal_name, self._signal_number = name, signum
            log.warning("%s: stopping with a checkpoint (send it again to stop without one)", name)
        elif self._deferring:
            log.warning("%s: a checkpoint is being written; exiting as soon as it is on disk", name)
            self._interrupted = True
        else:
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def reason(self, step: int, sync: bool) -> str | None:
        """Why to stop after `step` (None: go on); the same on every process."""
        local = self._signal_name
        number = self._signal_number if local else 0  # the handler sets both before this line runs
        if not local and 0 < self._time_limit_s <= time.perf_counter() - self._started:
            local = f"time limit {self._time_limit_s} s reached"
        if jax.process_count() == 1:
            self.signal_number = number
            return local
        if not sync:
            return None
        agreed, self.signal_number = multihost.first_reason(local, step, number)
        return agreed

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """A second signal inside this block waits for its end (a checkpoint being written)."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        if self._interrupted:
            raise KeyboardInterrupt
