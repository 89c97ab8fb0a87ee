"""The training loop: `train_and_evaluate(config, workdir)`, one way through.

validate -> strategy -> restore or initialise (the step is now known) -> the input pipeline,
built once from that step -> the loop. The workdir holds `checkpoints/`, `best/` (best
validation PSNR, with validation images), `metrics.jsonl` and TensorBoard events, the final
validation samples, `lock` while a run holds it, and `damaged/` (checkpoints that failed
verification).
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Iterator

import jax
import ml_collections

from srgan_jax import checkpoints, models, multihost, parallel
from srgan_jax import config as config_lib
from srgan_jax.data.batches import check_source, create_train_iterator
from srgan_jax.errors import UserError
from srgan_jax.training import validation
from srgan_jax.training.checkpointing import CheckpointPolicy, NonFiniteLossError
from srgan_jax.training.monitor import Monitor
from srgan_jax.training.state import SRState, create_state, generator_variables
from srgan_jax.training.steps import TrainSteps, bind_train_steps
from srgan_jax.training.stop import Interrupted, StopRequest
from srgan_jax.training.workdir_lock import WorkdirLock

__all__ = ["Interrupted", "NonFiniteLossError", "train_and_evaluate"]

log = logging.getLogger(__name__)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> SRState:
    """Train per `config` in `workdir`, resuming from its newest intact checkpoint if any.

    Checkpoints every `train.checkpoint_every` steps, on SIGTERM / Ctrl-C, at
    `train.time_limit_s` and at the end; validates every `eval.every` steps. A checkpoint is
    written only once its state has proved finite (`CheckpointPolicy`). Returns the final
    state (one host copy); a stop by SIGTERM / Ctrl-C raises `Interrupted` (holding that
    state) once its checkpoint is on disk.
    """
    spec = config_lib.run_spec(config)
    multihost.initialize(spec.distributed)
    strategy = parallel.create_strategy(spec.pmap, spec.batch_size)
    workdir = Path(workdir)
    # The inputs are checked before anything is built or written.
    if spec.init_from and not checkpoints.latest_step(workdir):
        _check_init_from(spec)
    check_source(spec)
    validator = _create_validator(spec, strategy)
    train_steps = _wrap_train_steps(spec, strategy)
    generator, discriminator = models.create_models(spec, strategy.bn_axis_name)
    with _workdir(workdir):
        state, step = _restore_or_initialise(spec, workdir, strategy, generator, discriminator)
        multihost.barrier("checkpoints read")  # before any process creates checkpoint folders
        batches = create_train_iterator(spec, spec.batch_size // jax.process_count(), step)
        with CheckpointPolicy(workdir, spec, config, strategy, step) as saver:
            return _train(spec, workdir, strategy, train_steps, validator, saver, state, step,
                          strategy.place_batches(batches))


def _train(spec: config_lib.RunSpec, workdir: Path, strategy: parallel.Strategy, train_steps: TrainSteps,
           validator: validation.Validator | None, saver: CheckpointPolicy, state: SRState, step: int,
           batches: Iterator[dict]) -> SRState:
    """From `step` to `num_steps` or a stop; returns the newest saved state (host copy)."""
    schedule, started, reason = spec.schedule, time.perf_counter(), None
    num_steps = schedule.num_steps
    state = strategy.place_state(state)
    with StopRequest(schedule.time_limit_s, started) as stop, Monitor(num_steps, workdir, step) as monitor:
        try:
            while step < num_steps and not reason:
                train_step = train_steps.gan if schedule.is_gan_step(step) else train_steps.g
                state, step_metrics = train_step(state, next(batches))
                step += 1
                monitor.record(step, step_metrics)
                sync = schedule.is_sync_step(step)
                reason = stop.reason(step, sync)
                if saver.holding or sync or reason:
                    saver.check(monitor, write=sync or bool(reason))
                    with stop.deferred():  # step `step` computed its loss from the held state: finite
                        saver.save_held()
                val = None
                if validator and schedule.is_eval_step(step):
                    val = monitor.validated(step, validator(generator_variables(state)))
                if reason or schedule.is_checkpoint_step(step):
                    saver.hold(step, state, val)
                if saver.holding and (reason or step == num_steps):  # no next step to test it
                    saver.probe(train_step, state, next(batches), monitor)
                    with stop.deferred():
                        saver.save_held()
            if reason:
                log.warning("%s: checkpoint written at step %d, exiting", reason, step)
        finally:  # never lose an in-flight asynchronous save, whatever stopped the loop
            with stop.deferred():
                saver.wait()
    monitor.report_speed(step, time.perf_counter() - started)
    final = saver.saved_state if saver.saved_state is not None else jax.device_get(strategy.to_host(state))
    if reason and stop.signal_number:  # a signal, not the time limit, stopped the loop
        raise Interrupted(stop.signal_number, step, final)
    if validator and step == num_steps:
        results = validator(strategy.place_state(generator_variables(final)))
        validation.write_samples(workdir, results, spec.generator.scale)
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


def _wrap_train_steps(spec: config_lib.RunSpec, strategy: parallel.Strategy) -> TrainSteps:
    """Both kinds of step, wrapped by the parallel strategy (each compiles when first taken)."""
    return TrainSteps(*(strategy.wrap_train_step(step)
                        for step in bind_train_steps(spec, models.create_content_loss(spec))))


def _create_validator(spec: config_lib.RunSpec, strategy: parallel.Strategy) -> validation.Validator | None:
    """Validation on the eval images with G in inference mode (the run's dtype); None without them."""
    images = validation.load_eval_images(spec)
    if not images:
        return None
    return validation.Validator(images, models.create_generator(spec.generator, spec.dtype), spec.generator.scale,
                                strategy)


def _restore_or_initialise(spec: config_lib.RunSpec, workdir: Path, strategy: parallel.Strategy,
                           generator: Any, discriminator: Any) -> tuple[SRState, int]:
    """(state, step): the newest intact checkpoint's, else fresh weights (G from `init_from` if set) and 0.

    Damaged checkpoints newer than the one restored move to `<workdir>/damaged/`.
    """
    state = create_state(spec, jax.random.key(spec.seed), generator, discriminator, strategy.wrap_init)
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
    if spec.init_from:
        state = _init_generator_from(state, spec.init_from)
        log.info("generator initialised from %s", spec.init_from)
    elif spec.schedule.gan and spec.schedule.pretrain_steps == 0:
        log.warning("SRGAN without config.init_from or train.pretrain_steps: G starts from scratch")
    return state, 0


def _check_init_from(spec: config_lib.RunSpec) -> None:
    """`init_from` exists and holds the generator this run trains (UserError otherwise)."""
    path = spec.init_from
    if not Path(path).exists():
        raise UserError(f"config.init_from={path} does not exist: train SRResNet first "
                        "(configs/srresnet.py) and pass its workdir")
    found = checkpoints.read_generator_spec(path)
    if found != spec.generator:
        raise UserError(f"config.init_from={path} holds a generator {found.to_dict()}, "
                        f"this config needs {spec.generator.to_dict()}")


def _init_generator_from(state: SRState, path: str) -> SRState:
    """Copy G's params and BatchNorm statistics from an SRResNet checkpoint (SRGAN's init)."""
    variables = checkpoints.load_generator_variables(path, jax.eval_shape(lambda: generator_variables(state)))
    return state.replace(g=state.g.replace(params=variables["params"], batch_stats=variables["batch_stats"]))
