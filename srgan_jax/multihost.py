"""Several processes as one run (`jax.distributed`): start-up, agreement, barriers, failure.

With one process every function here is a no-op or returns its local answer, so the
training loop calls them unconditionally.

A dead peer: a collective with it fails at once with an error (the entry point then exits
this process with one line, `exit_now`); a peer that hangs, or a dead coordinator (process
0), is found by JAX's heartbeat after `distributed.timeout_s`, and JAX ends the process.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import jax
import numpy as np
from jax.experimental import multihost_utils

from srgan_jax.config import Distributed
from srgan_jax.errors import UserError, first_line


def initialize(distributed: Distributed) -> None:
    """`jax.distributed.initialize` with the spec's settings (None: the cluster manager's values)."""
    if not distributed.enabled:
        return
    kwargs = {name: value for name, value in (("coordinator_address", distributed.coordinator_address),
                                               ("num_processes", distributed.num_processes),
                                               ("process_id", distributed.process_id)) if value is not None}
    timeout = max(1, int(distributed.timeout_s))
    try:
        jax.distributed.initialize(**kwargs, heartbeat_timeout_seconds=timeout, shutdown_timeout_seconds=timeout)
    except (RuntimeError, ValueError) as err:
        raise UserError(f"jax.distributed.initialize failed ({first_line(err)}): outside a cluster manager set "
                        "config.distributed.coordinator_address, num_processes and process_id") from None


def first_reason(local: str | None, step: int, signal_number: int = 0) -> tuple[str | None, int]:
    """(a stop reason every process agrees on, the signal behind any process's stop, 0 if none).

    The reason is this process's, or that some other process asked to stop; `signal_number`
    is this process's (0 for a stop that is not a signal, e.g. a time limit).
    """
    codes = np.asarray(multihost_utils.process_allgather(np.int32(-1 if local is None else signal_number))).ravel()
    if not np.any(codes >= 0):
        return None, 0
    return local or f"process {int(np.argmax(codes >= 0))} stopping at step {step}", max(int(codes.max()), 0)


def check_same(value: int, what: str) -> None:
    """UserError unless every process holds the same `value`."""
    if jax.process_count() == 1:
        return
    values = np.asarray(multihost_utils.process_allgather(np.int64(value))).ravel()
    if np.any(values != values[0]):
        raise UserError(f"the processes disagree on {what} ({values.tolist()}): they must all see the same "
                        "workdir (a shared file system)")


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier `name`."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def exit_now(code: int) -> NoReturn:
    """End a multi-process run's process at once, without JAX's exit barrier.

    That barrier waits for every peer, so after an error in one process (or a dead peer)
    a normal exit would hang until the heartbeat timeout. Checkpoints are written
    atomically, so an unfinished one is simply absent.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
