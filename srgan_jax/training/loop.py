"""The training loop: `train_and_evaluate(config, workdir)` builds, restores, trains and saves.

The workdir holds `checkpoints/` (the newest `train.keep_checkpoints`), `best/` (best
validation PSNR, when validation images are configured), `metrics.jsonl` and TensorBoard
events, the final validation samples, `lock` while a run holds it, and `damaged/` for
checkpoints that failed verification.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import math
import signal
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from srgan_jax import checkpoints, models, multihost, parallel
from srgan_jax import config as config_lib
from srgan_jax.data.batches import create_train_iterator
from srgan_jax.errors import UserError
from srgan_jax.training import validation
from srgan_jax.training.state import SRState, create_state, generator_variables
from srgan_jax.training.steps import gan_train_step, generator_train_step
from srgan_jax.training.summary import SummaryWriter
from srgan_jax.training.workdir_lock import WorkdirLock

log = logging.getLogger(__name__)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> SRState:
    """Train per `config` in `workdir`, resuming from its newest intact checkpoint if any.

    Checkpoints every `train.checkpoint_every` steps, on SIGTERM / Ctrl-C, at
    `train.time_limit_s` and at the end; validates every `eval.every` steps. A checkpoint is
    written only once its state has proved finite (parameters, and the loss it gives on the
    next batch). Returns the final state (one host copy); a stop by SIGTERM / Ctrl-C raises
    `Interrupted` (holding that state) once its checkpoint is on disk.
    """
    config_lib.validate(config)
    multihost.initialize(config.distributed)
    parallel.check_batch_size(config.train.batch_size, jax.device_count(), jax.process_count())
    strategy = parallel.create_strategy(config.parallel)
    workdir = Path(workdir)
    # Data, validation images and VGG weights are checked before anything is built or written.
    start_step = checkpoints.latest_step(workdir) or 0
    if config.init_from and not start_step:
        _check_init_from(config)
    batch_size = config.train.batch_size // jax.process_count()
    batches = create_train_iterator(config, batch_size, start_step)
    validator = _create_validator(config)
    train_steps = _wrap_train_steps(config, strategy)
    generator, discriminator = models.create_models(config, strategy.bn_axis_name)

    with _workdir(workdir):
        state, restored_step = _restore_or_initialise(config, workdir, generator, discriminator)
        multihost.barrier("checkpoints read")  # before any process creates checkpoint folders
        if restored_step != start_step:  # a damaged newer checkpoint was set aside
            batches = create_train_iterator(config, batch_size, restored_step)
        latest, best = checkpoints.create_managers(workdir, config.train.keep_checkpoints, validator is not None)
        try:
            return _train(config, workdir, strategy, train_steps, validator, state, restored_step,
                          strategy.place_batches(batches), latest, best)
        finally:  # the async saves in flight land (or fail, in one line) before the managers go
            try:
                checkpoints.close(latest)
            finally:
                if best is not None:
                    checkpoints.close(best)


def _train(config: ml_collections.ConfigDict, workdir: Path, strategy: parallel.Strategy,
           train_steps: dict[str, Callable], validator: validation.Validator | None, state: SRState,
           start_step: int, batches: Any, latest: Any, best: Any | None) -> SRState:
    """The loop from `start_step` to `train.num_steps` (or a stop request); returns the last saved state."""
    state = strategy.place_state(state)
    monitor = _Monitor(config, workdir, start_step)
    step, started, reason = start_step, time.perf_counter(), None
    pending = None  # (step, host state, validation): saved once its loss on the next batch is finite
    final = None
    with _StopRequest(config, started) as stop, monitor:
        try:
            while step < config.train.num_steps and not reason:
                state, step_metrics = train_steps[_step_kind(config, step)](state, next(batches))
                step += 1
                monitor.record(step, step_metrics)
                sync = _is_sync_step(config, step)
                reason = stop.reason(step, sync)
                at_checkpoint = bool(reason) or step % config.train.checkpoint_every == 0 \
                    or step == config.train.num_steps
                if pending or sync or reason:
                    monitor.check(strategy.to_host, write=sync or bool(reason))
                if pending:  # step `step` computed its loss from the pending state: finite
                    with stop.deferred():
                        _save(config, latest, best, *pending, monitor)
                    final, pending = pending[1], None
                val = None
                if validator and (step % config.eval.every == 0 or step == config.train.num_steps):
                    val = monitor.validated(step, validator(generator_variables(strategy.to_host(state))))
                if at_checkpoint:
                    pending = (step, _host_copy(strategy, state), val)
                    if reason or step == config.train.num_steps:  # no next step: probe the loss once
                        # The kind of step just taken: already compiled (the next kind may not be).
                        _, probe = train_steps[_step_kind(config, step - 1)](state, next(batches))
                        monitor.record(step + 1, probe, probe=True)
                        monitor.check(strategy.to_host, write=False)
                        with stop.deferred():
                            _save(config, latest, best, *pending, monitor)
                        final, pending = pending[1], None
            if reason:
                log.warning("%s: checkpoint written at step %d, exiting", reason, step)
        finally:  # never lose an in-flight asynchronous save, whatever stopped the loop
            with stop.deferred():
                try:
                    checkpoints.wait_until_finished(latest)
                finally:
                    if best is not None:
                        checkpoints.wait_until_finished(best)
    monitor.report_speed(step, time.perf_counter() - started)
    final = final if final is not None else _host_copy(strategy, state)
    if reason and stop.signal_number:  # a signal, not the time limit, stopped the loop
        raise Interrupted(stop.signal_number, step, final)
    if validator and step == config.train.num_steps:
        validation.write_samples(workdir, validator(generator_variables(final)), config.model.scale)
    return final


@contextlib.contextmanager
def _workdir(workdir: Path) -> Iterator[None]:
    """Create and lock `workdir` (process 0 holds the lock; the others wait for it)."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise checkpoints.StorageError(f"cannot create --workdir {workdir} ({err.strerror}): "
                                       "choose a writable folder") from None
    with WorkdirLock(workdir) if jax.process_index() == 0 else contextlib.nullcontext():
        multihost.barrier("workdir locked")
        yield


def _host_copy(strategy: parallel.Strategy, state: SRState) -> SRState:
    """The state as numpy arrays: survives the donation of the device buffers to the next step."""
    return jax.device_get(strategy.to_host(state))


def _save(config: ml_collections.ConfigDict, latest: Any, best: Any, step: int, state: SRState,
          val: dict | None, monitor: _Monitor) -> None:
    """Checkpoint a state whose next loss was finite, after checking its own arrays."""
    bad = [jax.tree_util.keystr(path) for path, x in jax.tree_util.tree_flatten_with_path(state)[0]
           if np.issubdtype(np.asarray(x).dtype, np.floating) and not np.isfinite(x).all()]
    if bad:
        monitor.fail(f"state array {bad[0]} is not finite at step {step}")
    checkpoints.save(latest, step, state, generator_variables(state), config)
    if val:
        checkpoints.save(best, step, state, generator_variables(state), config, val)
    monitor.last_good_step = step


def _is_sync_step(config: ml_collections.ConfigDict, step: int) -> bool:
    """Steps where metrics are written and, in a multi-process run, every process agrees on stopping."""
    return step % config.train.log_every == 0 or step % config.train.checkpoint_every == 0 \
        or step == config.train.num_steps


def _wrap_train_steps(config: ml_collections.ConfigDict, strategy: parallel.Strategy) -> dict[str, Callable]:
    """{"g": the content-loss step, "gan": the D + G step}, wrapped by the parallel strategy."""
    content_loss = models.create_content_loss(config)
    return {"g": strategy.wrap_train_step(functools.partial(generator_train_step, content_loss=content_loss)),
            "gan": strategy.wrap_train_step(functools.partial(
                gan_train_step, content_loss=content_loss, adversarial_weight=config.loss.adversarial_weight,
                d_joint_batch=config.train.d_joint_batch))}


def _step_kind(config: ml_collections.ConfigDict, step: int) -> str:
    """"gan" once `train.pretrain_steps` G-only steps are done (SRGAN configs), else "g"."""
    return "gan" if config_lib.uses_gan(config) and step >= config.train.pretrain_steps else "g"


def _create_validator(config: ml_collections.ConfigDict) -> validation.Validator | None:
    """Validation on `eval.*` images with G in inference mode (the config's dtype); None when none are configured."""
    images = validation.load_eval_images(config)
    if not images:
        return None
    generator = models.create_generator(config_lib.GeneratorSpec.from_config(config),
                                        config_lib.compute_dtype(config.dtype))
    return validation.Validator(images, generator, config.model.scale)


def _restore_or_initialise(config: ml_collections.ConfigDict, workdir: Path, generator: Any,
                           discriminator: Any) -> tuple[SRState, int]:
    """(state, step): the newest intact checkpoint's, else fresh weights (G from `init_from` if set) and 0.

    Damaged checkpoints newer than the one restored move to `<workdir>/damaged/`.
    """
    state = create_state(config, jax.random.key(config.seed), generator, discriminator)
    try:
        found, problem = checkpoints.restore_newest_intact(workdir, state), None
    except UserError as err:  # all damaged, or another model: every process must hear of it
        found, problem = None, err
    # Every process makes the same calls from here, whatever it found, then agrees.
    multihost.check_same(found[0] if found else -1 if problem else 0, "the step to resume from")
    if problem:
        raise problem
    if found and jax.process_index() == 0:
        checkpoints.set_aside(workdir, after=found[0])
    multihost.barrier("damaged checkpoints set aside")
    if found:
        step, state = found
        log.info("resuming from %s at step %d", workdir / "checkpoints", step)
        return state, step
    if config.init_from:
        state = _init_generator_from(state, config.init_from)
        log.info("generator initialised from %s", config.init_from)
    elif config_lib.uses_gan(config) and config.train.pretrain_steps == 0:
        log.warning("SRGAN without config.init_from or train.pretrain_steps: G starts from scratch")
    return state, 0


def _check_init_from(config: ml_collections.ConfigDict) -> None:
    """`init_from` exists and holds the generator this config trains (UserError otherwise)."""
    path = config.init_from
    if not Path(path).exists():
        raise UserError(f"config.init_from={path} does not exist: train SRResNet first "
                        "(configs/srresnet.py) and pass its workdir")
    spec, expected = checkpoints.read_generator_spec(path), config_lib.GeneratorSpec.from_config(config)
    if spec != expected:
        raise UserError(f"config.init_from={path} holds a generator {spec.to_dict()}, "
                        f"this config needs {expected.to_dict()}")


def _init_generator_from(state: SRState, path: str) -> SRState:
    """Copy G's params and BatchNorm statistics from an SRResNet checkpoint (SRGAN's init)."""
    variables = checkpoints.load_generator_variables(path, jax.eval_shape(lambda: generator_variables(state)))
    return state.replace(g=state.g.replace(params=variables["params"], batch_stats=variables["batch_stats"]))


class NonFiniteLossError(UserError):
    """A loss or parameter became NaN or Inf; the last good checkpoint is kept."""


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


class _StopRequest:
    """SIGTERM / SIGINT and `train.time_limit_s` as a stop reason the loop asks for after each step.

    In a multi-process run every process must stop at the same step with one checkpoint, so
    the reasons are exchanged at sync steps (`_is_sync_step`) and the first one found wins.
    A second signal stops at once, except while a checkpoint is being written (`deferred`).
    """

    def __init__(self, config: ml_collections.ConfigDict, started: float):
        self._time_limit_s, self._started = config.train.time_limit_s, started
        self._signal_name: str | None = None
        self._signal_number = 0  # of the signal this process received
        self.signal_number = 0  # of the signal behind the stop `reason` gave (in any process); 0: none
        self._deferring = self._interrupted = False
        self._previous = {}

    def __enter__(self) -> _StopRequest:
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


class _Monitor:
    """Step metrics: kept on the device until `check`, then NaN-checked, averaged and written
    (metrics.jsonl, TensorBoard, the progress bar); validation results likewise.

    The bar counts finished steps. Steps are dispatched asynchronously, up to
    `train.log_every` ahead of the device: counted when dispatched, the bar raced ahead, then
    stood still for seconds while the metrics fetch waited for the device to catch up, and its
    ETA swung with it. Now `record` counts the steps found finished (without waiting), and
    `check` counts each one as it finishes while it waits; the rate shown is an average over
    roughly the last 20 refreshes of 0.5 s.
    """

    def __init__(self, config: ml_collections.ConfigDict, workdir: Path, start_step: int):
        self.workdir = workdir
        self.last_good_step = start_step or None  # the newest checkpoint known to be finite
        self._start_step = start_step
        self._history: list[tuple[int, dict, bool]] = []
        self._running: collections.deque[dict] = collections.deque()  # metrics of steps not counted yet
        self._window: list[tuple[int, dict]] = []
        first = jax.process_index() == 0
        self._writer = SummaryWriter(workdir, resume_step=start_step, enabled=first)
        self._progress = tqdm(total=config.train.num_steps, initial=start_step, unit="step", dynamic_ncols=True,
                              smoothing=0.05, mininterval=0.5, disable=not first)

    def __enter__(self) -> _Monitor:
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
        self._count_finished(wait=False)

    def _count_finished(self, wait: bool) -> None:
        """Advance the bar over the steps finished so far (`wait`: over all, each as it finishes)."""
        while self._running and (wait or all(x.is_ready() for x in jax.tree.leaves(self._running[0]))):
            jax.block_until_ready(self._running.popleft())
            self._progress.update(1)

    def check(self, to_host: Callable[[Any], Any], write: bool) -> None:
        """Fetch the recorded metrics; NonFiniteLossError at the first NaN/Inf; `write` their mean."""
        self._count_finished(wait=True)
        values = jax.device_get([m for _, m, _ in self._history])
        fetched = [(step, {k: float(v) for k, v in to_host(m).items()}, probe)
                   for (step, _, probe), m in zip(self._history, values)]
        self._history.clear()
        for step, values, probe in fetched:
            bad = [name for name, value in values.items() if not math.isfinite(value)]
            if bad:
                self.fail(f"{bad[0]} is not finite at step {step} (computed from the state of step {step - 1})")
            if not probe:
                self._window.append((step, values))
        if write and self._window:
            last = self._window[-1]
            averaged = {k: sum(m[k] for _, m in self._window) / len(self._window) for k in last[1]}
            self._writer.scalars(last[0], averaged)
            self._progress.set_postfix({k: f"{v:.4g}" for k, v in averaged.items()}, refresh=False)
            self._window.clear()

    def fail(self, what: str) -> None:
        """Raise NonFiniteLossError: `what` went wrong; names the last good checkpoint."""
        kept = (f"the last good checkpoint (step {self.last_good_step}) is kept in {self.workdir / 'checkpoints'}"
                if self.last_good_step else "no checkpoint was written")
        raise NonFiniteLossError(f"{what}: training stopped; {kept}. Lower train.learning_rate or check the data")

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
