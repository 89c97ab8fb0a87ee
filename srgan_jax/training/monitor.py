"""Step metrics during training: kept on the device, NaN-checked, averaged and written.

Writers: `metrics.jsonl` and TensorBoard (`SummaryWriter`, process 0) and the progress bar.
"""

from __future__ import annotations

import collections
import logging
import math
from pathlib import Path
from typing import Any, Callable

import jax
from tqdm import tqdm

from srgan_jax.training import validation
from srgan_jax.training.summary import SummaryWriter

log = logging.getLogger(__name__)

# Steps dispatched and not yet finished. The host would otherwise run up to a logging
# interval ahead of the device, and a stop (time limit, signal) asked for after a step is
# only seen when that step is dispatched: 25 steps of 3 s made a time limit 75 s late.
# Two keep the device fed (the next step is queued while one runs).
MAX_IN_FLIGHT = 2


class Monitor:
    """`record` each step's metrics, `check` them (first NaN/Inf) and write their mean.

    The bar counts finished steps: `record` counts those found finished without waiting (and
    waits for the oldest while more than MAX_IN_FLIGHT are running), `check` counts each one as
    it finishes while it waits. The rate shown averages roughly the last 20 refreshes of 0.5 s.
    """

    def __init__(self, num_steps: int, workdir: Path, start_step: int):
        self._start_step = start_step
        self._history: list[tuple[int, dict, bool]] = []
        self._running: collections.deque[dict] = collections.deque()  # metrics of steps not counted yet
        self._window: list[tuple[int, dict]] = []
        first = jax.process_index() == 0
        self._writer = SummaryWriter(workdir, resume_step=start_step, enabled=first)
        self._progress = tqdm(total=num_steps, initial=start_step, unit="step", dynamic_ncols=True,
                              smoothing=0.05, mininterval=0.5, disable=not first)

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc):
        self._progress.close()
        self._writer.close()

    def record(self, step: int, step_metrics: dict, probe: bool = False) -> None:
        """Keep a step's metrics; a probe (the loss of the last state, not a step taken) is only checked."""
        self._history.append((step, step_metrics, probe))
        if probe:
            return
        self._running.append(step_metrics)
        while len(self._running) > MAX_IN_FLIGHT:
            self._count_oldest()
        while self._running and all(x.is_ready() for x in jax.tree.leaves(self._running[0])):
            self._count_oldest()

    def _count_oldest(self) -> None:
        jax.block_until_ready(self._running.popleft())
        self._progress.update(1)

    def check(self, to_host: Callable[[Any], Any], write: bool) -> str | None:
        """Fetch the recorded metrics; the first non-finite one, described (None: all finite).

        With `write`, the mean of the finite steps since the last write goes to the writers.
        """
        while self._running:
            self._count_oldest()
        values = jax.device_get([m for _, m, _ in self._history])
        fetched = [(step, {k: float(v) for k, v in to_host(m).items()}, probe)
                   for (step, _, probe), m in zip(self._history, values)]
        self._history.clear()
        for step, values, probe in fetched:
            bad = [name for name, value in values.items() if not math.isfinite(value)]
            if bad:
                return f"{bad[0]} is not finite at step {step} (computed from the state of step {step - 1})"
            if not probe:
                self._window.append((step, values))
        if write and self._window:
            last = self._window[-1]
            averaged = {k: sum(m[k] for _, m in self._window) / len(self._window) for k in last[1]}
            self._writer.scalars(last[0], averaged)
            self._progress.set_postfix({k: f"{v:.4g}" for k, v in averaged.items()}, refresh=False)
            self._window.clear()
        return None

    def validated(self, step: int, results: validation.Results) -> dict[str, float]:
        """Write validation PSNR and the first image's SR; returns {"val_psnr", "val_bicubic_psnr"}."""
        val = validation.mean_psnr(results)
        self._writer.scalars(step, val)
        self._writer.image(step, "val_sr", next(iter(results.values()))["sr"])
        return val

    def report_speed(self, step: int, seconds: float) -> None:
        if step > self._start_step:
            steps = step - self._start_step
            log.info("%d steps in %.1f s (%.2f steps/s)", steps, seconds, steps / seconds)
