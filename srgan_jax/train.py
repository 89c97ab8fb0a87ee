"""Train states, pure train steps, and the training loop (`train_and_evaluate`).

SRResNet trains G alone on a content loss (`generator_train_step`); SRGAN alternates
one D update and one G update per step (`gan_train_step`, k = 1). Steps are pure
functions `step(state, batch) -> (state, metrics)`; `srgan_jax.parallel` wraps them
for a device mesh or pmap, and `axis_name` is set only under pmap.
"""

from __future__ import annotations

import functools
import logging
import math
import signal
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state

from srgan_jax import checkpoints, losses, metrics, parallel, xla_cpu
from srgan_jax.errors import UserError
from srgan_jax.models import Discriminator, Generator

log = logging.getLogger(__name__)

ContentLoss = Callable[[jax.Array, jax.Array], jax.Array]

CONTENT_LOSSES = ("mse", "vgg22", "vgg54")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class TrainState(train_state.TrainState):
    """One network's params, Adam state and BatchNorm running statistics."""

    batch_stats: Any


@flax.struct.dataclass
class SRState:
    """Generator state and, for SRGAN, discriminator state (None for SRResNet)."""

    g: TrainState
    d: TrainState | None


# --------------------------------------------------------------------------- config


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raise UserError for values that cannot work, before anything is compiled."""
    train, model, data = config.train, config.model, config.data
    problems = []
    if config.loss.content not in CONTENT_LOSSES:
        problems.append(f"loss.content={config.loss.content!r} is not one of {CONTENT_LOSSES}")
    if config.dtype not in DTYPES:
        problems.append(f"dtype={config.dtype!r} is not one of {tuple(DTYPES)}")
    if config.parallel not in ("mesh", "pmap"):
        problems.append(f"parallel={config.parallel!r} is not 'mesh' or 'pmap'")
    if config.loss.adversarial_weight < 0:
        problems.append(f"loss.adversarial_weight={config.loss.adversarial_weight} must be >= 0")
    if train.time_limit_s < 0:
        problems.append(f"train.time_limit_s={train.time_limit_s} must be >= 0 (0: no limit)")
    for name in ("batch_size", "checkpoint_every", "log_every", "keep_checkpoints"):
        if train[name] < 1:
            problems.append(f"train.{name}={train[name]} must be >= 1")
    if train.num_steps < 0 or train.pretrain_steps < 0:
        problems.append("train.num_steps and train.pretrain_steps must be >= 0")
    if not train.learning_rate > 0:
        problems.append(f"train.learning_rate={train.learning_rate} must be > 0")
    if model.num_blocks < 1 or model.features < 1:
        problems.append("model.num_blocks and model.features must be >= 1")
    if model.scale < 2 or model.scale & (model.scale - 1):
        problems.append(f"model.scale={model.scale} must be a power of 2 (4 in the paper)")
    elif data.hr_size % model.scale or data.hr_size < model.scale:
        problems.append(f"data.hr_size={data.hr_size} must be a multiple of model.scale={model.scale}")
    if config.loss.adversarial_weight > 0 and data.hr_size % 16:
        problems.append(f"data.hr_size={data.hr_size} must be a multiple of 16 for the discriminator")
    if problems:
        raise UserError("bad config: " + "; ".join(problems))


def model_config(config: ml_collections.ConfigDict) -> dict:
    """What `load_generator` needs to rebuild G: stored beside every checkpoint."""
    return {"num_blocks": config.model.num_blocks, "features": config.model.features,
            "scale": config.model.scale}


def uses_gan(config: ml_collections.ConfigDict) -> bool:
    return config.loss.adversarial_weight > 0


# --------------------------------------------------------------------------- states


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """Constant `learning_rate`, multiplied by `lr_decay` at each of `lr_boundaries`."""
    boundaries = {int(b): config.train.lr_decay for b in config.train.lr_boundaries}
    return optax.piecewise_constant_schedule(config.train.learning_rate, boundaries)


def _optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    return optax.adam(learning_rate_schedule(config), b1=config.train.b1, b2=config.train.b2)


def create_models(config: ml_collections.ConfigDict, bn_axis_name: str | None = None
                  ) -> tuple[Generator, Discriminator | None]:
    """G (and D when the config has an adversarial loss) with the config's compute dtype."""
    dtype = DTYPES[config.dtype]
    generator = Generator(num_blocks=config.model.num_blocks, features=config.model.features,
                          scale=config.model.scale, dtype=dtype, bn_axis_name=bn_axis_name)
    discriminator = Discriminator(dtype=dtype, bn_axis_name=bn_axis_name) if uses_gan(config) else None
    return generator, discriminator


def create_state(config: ml_collections.ConfigDict, rng: jax.Array, generator: Generator,
                 discriminator: Discriminator | None) -> SRState:
    """Fresh parameters and Adam states for G (and D), on the default device."""
    g_rng, d_rng = jax.random.split(rng)
    lr_size = config.data.hr_size // config.model.scale
    g_vars = generator.init(g_rng, jnp.zeros((1, lr_size, lr_size, 3)), train=False)
    g = TrainState.create(apply_fn=generator.apply, params=g_vars["params"],
                          batch_stats=g_vars["batch_stats"], tx=_optimizer(config))
    d = None
    if discriminator is not None:
        hr = config.data.hr_size
        d_vars = discriminator.init(d_rng, jnp.zeros((1, hr, hr, 3)), train=False)
        d = TrainState.create(apply_fn=discriminator.apply, params=d_vars["params"],
                              batch_stats=d_vars["batch_stats"], tx=_optimizer(config))
    return SRState(g=g, d=d)


def generator_variables(state: SRState) -> dict:
    """G's inference variables: {"params", "batch_stats"}."""
    return {"params": state.g.params, "batch_stats": state.g.batch_stats}


# --------------------------------------------------------------------------- steps


def _pmean(tree: Any, axis_name: str | None) -> Any:
    return tree if axis_name is None else jax.lax.pmean(tree, axis_name)


def generator_train_step(state: SRState, batch: dict, *, content_loss: ContentLoss,
                         axis_name: str | None = None) -> tuple[SRState, dict]:
    """One Adam step of G on the content loss (SRResNet; also SRGAN's pretraining steps).

    batch: {"lr": [B, h, w, 3] in [0, 1], "hr": [B, h*s, w*s, 3] in [-1, 1]}.
    """

    def loss_fn(params):
        sr, updates = state.g.apply_fn({"params": params, "batch_stats": state.g.batch_stats},
                                       batch["lr"], train=True, mutable=["batch_stats"])
        return content_loss(sr, batch["hr"]), (sr, updates["batch_stats"])

    (loss, (sr, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.g.params)
    grads = _pmean(grads, axis_name)
    g = state.g.apply_gradients(grads=grads, batch_stats=batch_stats)
    step_metrics = {"g_loss": loss, "content_loss": loss, "psnr": metrics.batch_psnr(sr, batch["hr"])}
    return state.replace(g=g), _pmean(step_metrics, axis_name)


def gan_train_step(state: SRState, batch: dict, *, content_loss: ContentLoss, adversarial_weight: float,
                   axis_name: str | None = None) -> tuple[SRState, dict]:
    """One D update then one G update (k = 1), SPEC "Losses".

    D: BCE on logits of HR (real) and of G(LR) held constant (fake). G: content loss +
    adversarial_weight * -log D(G(LR)), with D after its update. G runs forward once; its
    backward pass reuses that forward through `jax.vjp`.
    """
    hr = batch["hr"]

    def generate(params):
        sr, updates = state.g.apply_fn({"params": params, "batch_stats": state.g.batch_stats},
                                       batch["lr"], train=True, mutable=["batch_stats"])
        return sr, updates["batch_stats"]

    sr, g_vjp, g_batch_stats = jax.vjp(generate, state.g.params, has_aux=True)
    fake = jax.lax.stop_gradient(sr)

    def d_loss_fn(params):
        real_logits, updates = state.d.apply_fn({"params": params, "batch_stats": state.d.batch_stats},
                                                hr, train=True, mutable=["batch_stats"])
        fake_logits, updates = state.d.apply_fn({"params": params, "batch_stats": updates["batch_stats"]},
                                                fake, train=True, mutable=["batch_stats"])
        loss = losses.discriminator_loss(real_logits, fake_logits)
        return loss, (real_logits, fake_logits, updates["batch_stats"])

    (d_loss, (real_logits, fake_logits, d_batch_stats)), d_grads = jax.value_and_grad(
        d_loss_fn, has_aux=True)(state.d.params)
    d = state.d.apply_gradients(grads=_pmean(d_grads, axis_name), batch_stats=d_batch_stats)

    def g_loss_fn(sr):
        content = content_loss(sr, hr)
        # D in training mode (batch statistics), as in the D update; its running
        # statistics are left to the D update.
        logits, _ = d.apply_fn({"params": d.params, "batch_stats": d.batch_stats}, sr, train=True,
                               mutable=["batch_stats"])
        adversarial = losses.generator_adversarial_loss(logits)
        return content + adversarial_weight * adversarial, (content, adversarial)

    (g_loss, (content, adversarial)), sr_grad = jax.value_and_grad(g_loss_fn, has_aux=True)(sr)
    (g_grads,) = g_vjp(sr_grad)
    g = state.g.apply_gradients(grads=_pmean(g_grads, axis_name), batch_stats=g_batch_stats)
    step_metrics = {
        "g_loss": g_loss, "content_loss": content, "adversarial_loss": adversarial, "d_loss": d_loss,
        "d_real": jnp.mean(jax.nn.sigmoid(real_logits)), "d_fake": jnp.mean(jax.nn.sigmoid(fake_logits)),
        "psnr": metrics.batch_psnr(sr, hr),
    }
    return SRState(g=g, d=d), _pmean(step_metrics, axis_name)


def make_content_loss(config: ml_collections.ConfigDict) -> ContentLoss:
    """MSE, or the VGG i.j loss with the converted weights at `config.vgg_weights`."""
    if config.loss.content == "mse":
        return losses.mse_loss
    from srgan_jax import vgg  # only VGG configs need the feature extractor

    layer = vgg.vgg_layer_for(config.loss.content)
    features = vgg.load_feature_extractor(config.vgg_weights, layers=(layer,), dtype=DTYPES[config.dtype])
    return functools.partial(losses.vgg_content_loss, features, layer=layer)


def eval_step(variables: dict, lr: jax.Array, *, generator: Generator) -> jax.Array:
    """G in inference mode (running BatchNorm averages): LR [0, 1] -> SR [-1, 1]."""
    return generator.apply(variables, lr, train=False)


# --------------------------------------------------------------------------- loop


class _StopRequest:
    """Turns SIGTERM / SIGINT into a flag the loop checks, so it can checkpoint and exit."""

    def __init__(self):
        self.signal_name: str | None = None
        self._previous = {}

    def __enter__(self):
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


class NonFiniteLossError(UserError):
    """A loss became NaN or Inf; the last good checkpoint is kept."""


def _first_nonfinite(history: list[tuple[int, dict]]) -> tuple[int, str] | None:
    for step, values in history:
        for name, value in values.items():
            if not math.isfinite(value):
                return step, name
    return None


def _init_generator_from(state: SRState, path: str, generator: Generator) -> SRState:
    """Copy G's params and BatchNorm statistics from an SRResNet checkpoint (SRGAN's init)."""
    if not Path(path).exists():
        raise UserError(f"config.init_from={path} does not exist: train SRResNet first "
                        "(configs/srresnet.py) and pass its workdir")
    meta = checkpoints.read_meta(path)
    expected = {k: getattr(generator, k) for k in ("num_blocks", "features", "scale")}
    if meta["model"] != expected:
        raise UserError(f"config.init_from={path} holds a generator {meta['model']}, this config needs {expected}")
    variables = checkpoints.load_generator_variables(path, jax.eval_shape(lambda: generator_variables(state)))
    g = state.g.replace(params=variables["params"], batch_stats=variables["batch_stats"])
    return state.replace(g=g)


def create_train_iterator(config: ml_collections.ConfigDict, batch_size: int, start_step: int
                          ) -> Iterator[dict]:
    """This process's batches from step `start_step` on: in-memory or tfds source."""
    data = config.data
    if data.in_memory:
        from srgan_jax import memory_source

        if data.skimage_images:
            images = memory_source.load_skimage_samples(data.skimage_images)
        elif data.image_dir:
            images = memory_source.load_folder(data.image_dir)
        else:
            raise UserError("data.in_memory needs data.image_dir or data.skimage_images")
        sampler = memory_source.CropSampler(
            list(images.values()), hr_size=data.hr_size, scale=config.model.scale, batch_size=batch_size,
            seed=config.seed, augment=data.augment, process_index=jax.process_index())
        return sampler(start_step)
    from srgan_jax import input_pipeline

    return input_pipeline.create_train_iterator(
        data, scale=config.model.scale, batch_size=batch_size, seed=config.seed, start_step=start_step)


def load_eval_images(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
    """Validation HR images (uint8 RGB), mod-cropped to a multiple of the scale."""
    from srgan_jax import memory_source

    if config.eval.skimage_images:
        images = memory_source.load_skimage_samples(config.eval.skimage_images)
    elif config.eval.image_dir:
        images = memory_source.load_folder(config.eval.image_dir)
    else:
        return {}
    s = config.model.scale
    return {name: im[: im.shape[0] - im.shape[0] % s, : im.shape[1] - im.shape[1] % s]
            for name, im in images.items()}


def evaluate_images(upscale: Callable[[jax.Array], jax.Array], images: dict[str, np.ndarray], scale: int
                    ) -> dict[str, dict[str, float]]:
    """Y-channel PSNR (border crop = scale) of G and of MATLAB bicubic on each HR image."""
    from srgan_jax.imresize import imresize

    results = {}
    for name, hr in images.items():
        lr = imresize(hr, 1.0 / scale)
        sr = metrics.sr_to_uint8(upscale(jnp.asarray(lr[None], jnp.float32) / 255.0))[0]
        bicubic = imresize(lr, float(scale))
        results[name] = {"psnr": metrics.psnr(sr, hr, crop_border=scale),
                         "bicubic_psnr": metrics.psnr(bicubic, hr, crop_border=scale), "sr": sr}
    return results


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> SRState:
    """Train per `config` in `workdir`, resuming from its latest checkpoint if any.

    Writes checkpoints (every `train.checkpoint_every` steps, on SIGTERM/Ctrl-C and at the
    end), `metrics.jsonl` + TensorBoard scalars, validation PSNR and a sample SR image.
    """
    validate_config(config)
    if config.distributed:
        jax.distributed.initialize()
    workdir_path = Path(workdir)
    workdir_path.mkdir(parents=True, exist_ok=True)
    num_devices = jax.device_count()
    parallel.check_batch_size(config.train.batch_size, num_devices, jax.process_count())
    local_batch = config.train.batch_size // jax.process_count()
    use_pmap = config.parallel == "pmap"

    generator, discriminator = create_models(config, parallel.PMAP_AXIS if use_pmap else None)
    eval_generator, _ = create_models(config)
    content_loss = make_content_loss(config)
    state = create_state(config, jax.random.key(config.seed), generator, discriminator)

    latest_manager, best_manager = checkpoints.create_managers(workdir_path, config.train.keep_checkpoints)
    restored = checkpoints.restore_state(latest_manager, state)
    if restored is not None:
        state, start_step = restored
        log.info("resumed from %s at step %d", workdir_path / "checkpoints", start_step)
    else:
        start_step = 0
        if config.init_from:
            state = _init_generator_from(state, config.init_from, generator)
            log.info("generator initialised from %s", config.init_from)
        elif uses_gan(config) and config.train.pretrain_steps == 0:
            log.warning("SRGAN without config.init_from or train.pretrain_steps: G starts from scratch")

    g_step = functools.partial(generator_train_step, content_loss=content_loss)
    gan_step = functools.partial(gan_train_step, content_loss=content_loss,
                                 adversarial_weight=config.loss.adversarial_weight)
    if use_pmap:
        steps = {"g": parallel.pmap_step(g_step), "gan": parallel.pmap_step(gan_step)}
        state = parallel.replicate(state)
        local_devices = jax.local_device_count()
        place_batches = lambda it: (parallel.split_for_pmap(b, local_devices) for b in it)  # noqa: E731
        host_state = parallel.unreplicate
    else:
        mesh = parallel.create_mesh()
        steps = {"g": parallel.jit_step(g_step, mesh), "gan": parallel.jit_step(gan_step, mesh)}
        state = parallel.put_replicated(state, mesh)
        place_batches = functools.partial(parallel.prefetch_to_mesh, mesh=mesh)
        host_state = lambda s: s  # noqa: E731
    upscale = jax.jit(functools.partial(eval_step, generator=eval_generator),
                      compiler_options=xla_cpu.compiler_options())

    from srgan_jax.summary import SummaryWriter

    writer = SummaryWriter(workdir_path, enabled=jax.process_index() == 0)
    meta = {"model": model_config(config), "config": config.to_dict()}
    eval_images = load_eval_images(config)
    batches = place_batches(create_train_iterator(config, local_batch, start_step))

    def save(step: int, current: SRState, val_metrics: dict | None = None) -> None:
        current = host_state(current)
        step_meta = dict(meta, step=step)
        checkpoints.save(latest_manager, step, current, generator_variables(current), step_meta)
        if val_metrics is not None:
            checkpoints.save(best_manager, step, current, generator_variables(current), step_meta, val_metrics)

    def validate(step: int, current: SRState) -> dict | None:
        if not eval_images:
            return None
        variables = jax.device_get(generator_variables(host_state(current)))
        results = evaluate_images(functools.partial(upscale, variables), eval_images, config.model.scale)
        val = {"val_psnr": float(np.mean([r["psnr"] for r in results.values()])),
               "val_bicubic_psnr": float(np.mean([r["bicubic_psnr"] for r in results.values()]))}
        writer.scalars(step, val)
        first = next(iter(results.values()))
        writer.image(step, "val_sr", first["sr"])
        return val

    history: list[tuple[int, dict]] = []
    last_good_step = start_step

    def check_history() -> None:
        fetched = [(s, {k: float(v) for k, v in jax.device_get(m).items()}) for s, m in history]
        history.clear()
        bad = _first_nonfinite(fetched)
        if bad is not None:
            raise NonFiniteLossError(
                f"{bad[1]} is not finite at step {bad[0]}: training stopped; the last good checkpoint "
                f"(step {last_good_step}) is kept in {workdir_path / 'checkpoints'}. Lower "
                "train.learning_rate or check the data")
        if fetched:
            averaged = {k: float(np.mean([m[k] for _, m in fetched])) for k in fetched[-1][1]}
            writer.scalars(fetched[-1][0], averaged)
            progress.set_postfix({k: f"{v:.4g}" for k, v in averaged.items()}, refresh=False)

    from tqdm import tqdm

    progress = tqdm(total=config.train.num_steps, initial=start_step, unit="step", dynamic_ncols=True,
                    disable=jax.process_index() != 0)
    step = start_step
    with _StopRequest() as stop:
        try:
            started = time.perf_counter()
            while step < config.train.num_steps:
                kind = "gan" if uses_gan(config) and step >= config.train.pretrain_steps else "g"
                state, step_metrics = steps[kind](state, next(batches))
                history.append((step + 1, step_metrics))
                step += 1
                progress.update(1)
                at_checkpoint = step % config.train.checkpoint_every == 0 or step == config.train.num_steps
                out_of_time = 0 < config.train.time_limit_s <= time.perf_counter() - started
                if step % config.train.log_every == 0 or at_checkpoint or stop.signal_name or out_of_time:
                    check_history()
                val = None
                if eval_images and (step % config.eval.every == 0 or step == config.train.num_steps):
                    val = validate(step, state)
                if at_checkpoint or stop.signal_name or out_of_time:
                    save(step, state, val)
                    last_good_step = step
                if stop.signal_name or out_of_time:
                    reason = stop.signal_name or f"time limit {config.train.time_limit_s} s reached"
                    log.warning("%s: checkpoint written at step %d, exiting", reason, step)
                    break
        finally:
            # Never lose an in-flight asynchronous save, whatever stopped the loop.
            latest_manager.wait_until_finished()
            best_manager.wait_until_finished()
            progress.close()
    elapsed = time.perf_counter() - started
    if step > start_step:
        log.info("%d steps in %.1f s (%.2f steps/s)", step - start_step, elapsed, (step - start_step) / elapsed)
    final = host_state(state)
    if eval_images and step == config.train.num_steps:
        _report_sample(workdir_path, final, upscale, eval_images, config.model.scale)
    writer.close()
    return final


def _report_sample(workdir: Path, state: SRState, upscale: Callable, images: dict, scale: int) -> None:
    """Write the first validation image's SR output and print PSNR vs bicubic."""
    from PIL import Image

    variables = jax.device_get(generator_variables(state))
    results = evaluate_images(functools.partial(upscale, variables), images, scale)
    for name, result in results.items():
        out = workdir / f"sample_{Path(name).stem}_x{scale}.png"
        Image.fromarray(result["sr"]).save(out)
        print(f"{name}: SR {result['psnr']:.2f} dB vs bicubic {result['bicubic_psnr']:.2f} dB "
              f"(Y, crop {scale}); wrote {out}")
