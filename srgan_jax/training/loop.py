"""The training loop: `train_and_evaluate(config, workdir)` builds, restores, trains and saves.

The workdir holds `checkpoints/` (the newest `train.keep_checkpoints`), `best/` (best
validation PSNR), `metrics.jsonl` and TensorBoard events, and the final validation samples.
"""

from __future__ import annotations

import functools
import logging
import math
import signal
import time
from pathlib import Path
from typing import Any, Callable

import jax
import ml_collections
from tqdm import tqdm

from srgan_jax import checkpoints, models, parallel
from srgan_jax import config as config_lib
from srgan_jax.data.batches import create_train_iterator
from srgan_jax.errors import UserError
from srgan_jax.training import validation
from srgan_jax.training.state import SRState, create_state, generator_variables
from srgan_jax.training.steps import gan_train_step, generator_train_step
from srgan_jax.training.summary import SummaryWriter

log = logging.getLogger(__name__)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> SRState:
    """Train per `config` in `workdir`, resuming from its latest checkpoint if any.

    Checkpoints every `train.checkpoint_every` steps, on SIGTERM / Ctrl-C, at
    `train.time_limit_s` and at the end; validates every `eval.every` steps. Returns the
    final state (one host copy).
    """
    config_lib.validate(config)
    if config.distributed:
        jax.distributed.initialize()
    parallel.check_batch_size(config.train.batch_size, jax.device_count(), jax.process_count())
    strategy = parallel.create_strategy(config.parallel)
    workdir = Path(workdir)
    # Data, validation images and VGG weights are checked before anything is built or written.
    start_step = checkpoints.latest_step(workdir) or 0
    if config.init_from and not start_step:
        _check_init_from(config)
    batches = create_train_iterator(config, config.train.batch_size // jax.process_count(), start_step)
    validator = _create_validator(config)
    train_steps = _wrap_train_steps(config, strategy)

    workdir.mkdir(parents=True, exist_ok=True)
    latest, best = checkpoints.create_managers(workdir, config.train.keep_checkpoints)
    generator, discriminator = models.create_models(config, strategy.bn_axis_name)
    state = _restore_or_initialise(config, latest, start_step, generator, discriminator)

    batches = strategy.place_batches(batches)
    state = strategy.place_state(state)
    monitor = _Monitor(config, workdir, start_step)
    step, started = start_step, time.perf_counter()
    with _StopRequest() as stop, monitor:
        try:
            while step < config.train.num_steps:
                state, step_metrics = train_steps[_step_kind(config, step)](state, next(batches))
                step += 1
                monitor.record(step, step_metrics)
                reason = stop.signal_name or _time_is_up(config, started)
                at_checkpoint = reason or step % config.train.checkpoint_every == 0 or step == config.train.num_steps
                if at_checkpoint or step % config.train.log_every == 0:
                    monitor.check(strategy.to_host)
                val = None
                if validator and (step % config.eval.every == 0 or step == config.train.num_steps):
                    val = monitor.validated(step, validator(generator_variables(strategy.to_host(state))))
                if at_checkpoint:
                    current = strategy.to_host(state)
                    checkpoints.save(latest, step, current, generator_variables(current), config)
                    if val:
                        checkpoints.save(best, step, current, generator_variables(current), config, val)
                    monitor.last_good_step = step
                if reason:
                    log.warning("%s: checkpoint written at step %d, exiting", reason, step)
                    break
        finally:  # never lose an in-flight asynchronous save, whatever stopped the loop
            latest.wait_until_finished()
            best.wait_until_finished()
    monitor.report_speed(step, time.perf_counter() - started)
    final = strategy.to_host(state)
    if validator and step == config.train.num_steps:
        validation.write_samples(workdir, validator(generator_variables(final)), config.model.scale)
    return final


def _wrap_train_steps(config: ml_collections.ConfigDict, strategy: parallel.Strategy) -> dict[str, Callable]:
    """{"g": the content-loss step, "gan": the D + G step}, wrapped by the parallel strategy."""
    content_loss = models.create_content_loss(config)
    return {"g": strategy.wrap_train_step(functools.partial(generator_train_step, content_loss=content_loss)),
            "gan": strategy.wrap_train_step(functools.partial(
                gan_train_step, content_loss=content_loss, adversarial_weight=config.loss.adversarial_weight))}


def _step_kind(config: ml_collections.ConfigDict, step: int) -> str:
    """"gan" once `train.pretrain_steps` G-only steps are done (SRGAN configs), else "g"."""
    return "gan" if config_lib.uses_gan(config) and step >= config.train.pretrain_steps else "g"


def _time_is_up(config: ml_collections.ConfigDict, started: float) -> str | None:
    if 0 < config.train.time_limit_s <= time.perf_counter() - started:
        return f"time limit {config.train.time_limit_s} s reached"
    return None


def _create_validator(config: ml_collections.ConfigDict) -> validation.Validator | None:
    """Validation on `eval.*` images with G in inference mode (the config's dtype); None when none are configured."""
    images = validation.load_eval_images(config)
    if not images:
        return None
    generator = models.create_generator(config_lib.GeneratorSpec.from_config(config),
                                        config_lib.compute_dtype(config.dtype))
    return validation.Validator(images, generator, config.model.scale)


def _restore_or_initialise(config: ml_collections.ConfigDict, manager: Any, step: int, generator: Any,
                           discriminator: Any) -> SRState:
    """The state of checkpoint `step` (0: none), else fresh weights (G from `init_from` if set)."""
    state = create_state(config, jax.random.key(config.seed), generator, discriminator)
    if step:
        log.info("resuming from %s at step %d", manager.directory, step)
        return checkpoints.restore_state(manager, state, step)
    if config.init_from:
        state = _init_generator_from(state, config.init_from)
        log.info("generator initialised from %s", config.init_from)
    elif config_lib.uses_gan(config) and config.train.pretrain_steps == 0:
        log.warning("SRGAN without config.init_from or train.pretrain_steps: G starts from scratch")
    return state


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
    """A loss became NaN or Inf; the last good checkpoint is kept."""


class _StopRequest:
    """Turns SIGTERM / SIGINT into a flag the loop checks, so it can checkpoint and exit."""

    def __init__(self):
        self.signal_name: str | None = None
        self._previous = {}

    def __enter__(self) -> _StopRequest:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal_name is not None:  # second signal: stop now
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _Monitor:
    """Step metrics: kept on the device until `check`, then NaN-checked, averaged and written
    (metrics.jsonl, TensorBoard, the progress bar); validation results likewise."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: Path, start_step: int):
        self.workdir, self.last_good_step = workdir, start_step
        self._start_step = start_step
        self._history: list[tuple[int, dict]] = []
        first = jax.process_index() == 0
        self._writer = SummaryWriter(workdir, enabled=first)
        self._progress = tqdm(total=config.train.num_steps, initial=start_step, unit="step", dynamic_ncols=True,
                              disable=not first)

    def __enter__(self) -> _Monitor:
        return self

    def __exit__(self, *exc):
        self._progress.close()
        self._writer.close()

    def record(self, step: int, step_metrics: dict) -> None:
        self._history.append((step, step_metrics))
        self._progress.update(1)

    def check(self, to_host: Callable[[Any], Any]) -> None:
        """Fetch the recorded metrics; NonFiniteLossError at the first NaN/Inf, else write their mean."""
        fetched = [(step, {k: float(v) for k, v in to_host(jax.device_get(m)).items()}) for step, m in self._history]
        self._history.clear()
        for step, values in fetched:
            bad = [name for name, value in values.items() if not math.isfinite(value)]
            if bad:
                raise NonFiniteLossError(
                    f"{bad[0]} is not finite at step {step}: training stopped; the last good checkpoint "
                    f"(step {self.last_good_step}) is kept in {self.workdir / 'checkpoints'}. Lower "
                    "train.learning_rate or check the data")
        if fetched:
            averaged = {k: sum(m[k] for _, m in fetched) / len(fetched) for k in fetched[-1][1]}
            self._writer.scalars(fetched[-1][0], averaged)
            self._progress.set_postfix({k: f"{v:.4g}" for k, v in averaged.items()}, refresh=False)

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
