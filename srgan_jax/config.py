"""Interpreting a training config (`configs/*.py`): validation, compute dtype, generator spec.

The only module that knows what the config fields mean beyond reading them: training reads
the `RunSpec` that `run_spec` resolves; the rest of the package asks `compute_dtype`,
`GeneratorSpec.from_config`, `uses_gan` and `vgg_layer` instead of interpreting fields itself.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from typing import Any, Mapping

import jax.numpy as jnp
import ml_collections

from srgan_jax.errors import UserError
from srgan_jax.networks.generator import SCALES
from srgan_jax.networks.vgg19 import LAYER_NAMES

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
CONTENT_LOSSES = ("mse", "vgg22", "vgg54")
PARALLEL = ("mesh", "pmap")


@dataclasses.dataclass(frozen=True)
class GeneratorSpec:
    """What rebuilds a trained generator; stored in the metadata of every checkpoint."""

    num_blocks: int = 16
    features: int = 64
    scale: int = 4

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> GeneratorSpec:
        return cls(num_blocks=config.model.num_blocks, features=config.model.features, scale=config.model.scale)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> GeneratorSpec:
        """The inverse of `to_dict`; ValueError naming the fields when they do not match."""
        names = {field.name for field in dataclasses.fields(cls)}
        if set(values) != names:
            raise ValueError(f"a generator spec has the fields {sorted(names)}, got {sorted(values)}")
        return cls(**{name: int(values[name]) for name in names})

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Which step is which: G-only or GAN, sync (metrics written, stop agreed), checkpoint, validation."""

    num_steps: int
    pretrain_steps: int
    gan: bool  # a discriminator is trained (an adversarial weight above 0)
    log_every: int
    checkpoint_every: int
    eval_every: int
    time_limit_s: float  # 0: none

    def is_gan_step(self, step: int) -> bool:
        """Whether the step taken from `step` trains D and G (else G alone on the content loss)."""
        return self.gan and step >= self.pretrain_steps

    def is_checkpoint_step(self, step: int) -> bool:
        return step % self.checkpoint_every == 0 or step == self.num_steps

    def is_sync_step(self, step: int) -> bool:
        return step % self.log_every == 0 or self.is_checkpoint_step(step)

    def is_eval_step(self, step: int) -> bool:
        return step % self.eval_every == 0 or step == self.num_steps


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """Adam with a piecewise-constant learning rate; G's output stage may take smaller steps."""

    learning_rate: float
    boundaries: tuple[int, ...]  # steps where the rate is multiplied by `decay`
    decay: float
    b1: float
    b2: float
    g_tail_lr_scale: float  # G's 9x9 output conv (0 freezes it)
    g_upsample_lr_scale: float  # G's pixel-shuffle stages (0 freezes them)


@dataclasses.dataclass(frozen=True)
class ImageSource:
    """Images decoded into memory: scikit-image samples by name, else the files of a folder."""

    skimage_names: tuple[str, ...] = ()
    folder: str = ""


@dataclasses.dataclass(frozen=True)
class TfdsSource:
    """The tf.data pipeline's images: a folder (prepared once as a tfds dataset), else the tfds
    dataset `tfds_name`."""

    folder: str = ""
    tfds_name: str = "div2k/bicubic_x4"
    tfds_data_dir: str | None = None  # None: tfds's default
    split: str = "train"
    use_dataset_lr: bool = False  # the dataset's own LR images instead of MATLAB bicubic
    shuffle_buffer: int = 1024
    cache: bool = False


@dataclasses.dataclass(frozen=True)
class Distributed:
    """Several processes as one run; None fields come from the cluster manager."""

    enabled: bool
    coordinator_address: str | None
    num_processes: int | None
    process_id: int | None
    timeout_s: float


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """A training config, checked and resolved once (`run_spec`); the loop and its parts read this.

    Exactly one of `train_images` (decoded into memory) and `train_tfds` (the tf.data
    pipeline) is set; `eval_images` are the validation images (None: no validation).
    """

    generator: GeneratorSpec
    dtype: Any
    schedule: Schedule
    optimizer: Optimizer
    batch_size: int  # global, over every device of every process
    keep_checkpoints: int  # the newest this many stay in checkpoints/
    seed: int
    hr_size: int
    augment: bool
    train_images: ImageSource | None
    train_tfds: TfdsSource | None
    eval_images: ImageSource | None
    init_from: str
    pmap: bool  # jax.pmap instead of jit over a mesh
    d_joint_batch: bool
    adversarial_weight: float
    content_layer: str | None  # the VGG19 layer of the content loss (e.g. "relu5_4"); None: pixel MSE
    vgg_weights: str  # the VGG19 file, for a VGG content loss
    distributed: Distributed

    @property
    def train_folder(self) -> str:
        """The training images' folder, for either source ("": scikit-image samples or a tfds dataset)."""
        return (self.train_images or self.train_tfds).folder


def run_spec(config: ml_collections.ConfigDict) -> RunSpec:
    """`validate(config)`, then the resolved spec."""
    validate(config)
    train, data = config.train, config.data
    train_images = ImageSource(tuple(data.skimage_images), data.image_dir) if data.in_memory else None
    train_tfds = None if data.in_memory else TfdsSource(
        folder=data.image_dir, tfds_name=data.tfds_name, tfds_data_dir=data.tfds_data_dir or None, split=data.split,
        use_dataset_lr=data.use_dataset_lr, shuffle_buffer=data.shuffle_buffer, cache=data.cache)
    eval_images = None
    if config.eval.skimage_images or config.eval.image_dir:
        eval_images = ImageSource(tuple(config.eval.skimage_images), config.eval.image_dir)
    return RunSpec(
        generator=GeneratorSpec.from_config(config), dtype=DTYPES[config.dtype],
        schedule=Schedule(num_steps=train.num_steps, pretrain_steps=train.pretrain_steps, gan=uses_gan(config),
                          log_every=train.log_every, checkpoint_every=train.checkpoint_every,
                          eval_every=config.eval.every, time_limit_s=float(train.time_limit_s)),
        optimizer=Optimizer(learning_rate=train.learning_rate, boundaries=tuple(int(b) for b in train.lr_boundaries),
                            decay=train.lr_decay, b1=train.b1, b2=train.b2, g_tail_lr_scale=train.g_tail_lr_scale,
                            g_upsample_lr_scale=train.g_upsample_lr_scale),
        batch_size=train.batch_size, keep_checkpoints=train.keep_checkpoints, seed=config.seed,
        hr_size=data.hr_size, augment=data.augment,
        train_images=train_images, train_tfds=train_tfds, eval_images=eval_images, init_from=config.init_from,
        pmap=config.parallel == "pmap", d_joint_batch=train.d_joint_batch,
        adversarial_weight=config.loss.adversarial_weight,
        content_layer=None if config.loss.content == "mse" else vgg_layer(config.loss.content),
        vgg_weights=config.vgg_weights, distributed=_distributed(config.distributed))


def _distributed(distributed: ml_collections.ConfigDict) -> Distributed:
    """0 processes and process id -1 mean "from the cluster manager" (None), as does an empty address."""
    return Distributed(enabled=distributed.enabled, coordinator_address=distributed.coordinator_address or None,
                       num_processes=distributed.num_processes or None,
                       process_id=None if distributed.process_id < 0 else distributed.process_id,
                       timeout_s=float(distributed.timeout_s))


def compute_dtype(name: str) -> Any:
    """'float32' | 'bfloat16' -> the jnp dtype; UserError naming the choices otherwise."""
    if name not in DTYPES:
        raise UserError(f"dtype {name!r} is not one of {', '.join(DTYPES)}: pick one of them")
    return DTYPES[name]


def uses_gan(config: ml_collections.ConfigDict) -> bool:
    """Whether the config trains a discriminator (an adversarial weight above 0)."""
    return config.loss.adversarial_weight > 0


def vgg_layer(content: str) -> str:
    """Content-loss name -> VGG layer: "vgg22" -> "relu2_2", "vgg54" -> "relu5_4" (phi_ij after ReLU)."""
    match = re.fullmatch(r"vgg(\d)(\d)", content.lower())
    layer = f"relu{match.group(1)}_{match.group(2)}" if match else None
    if layer not in LAYER_NAMES:
        raise UserError(f"content loss {content!r} is not a VGG loss: expected vggIJ such as vgg22 or vgg54")
    return layer


def field_paths(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
    """{"train.num_steps": 1000000, "train": <ConfigDict>, ...}: every field and group by dotted path."""
    paths = {}
    for name, value in config.items():
        paths[prefix + name] = value
        if isinstance(value, ml_collections.ConfigDict):
            paths.update(field_paths(value, f"{prefix}{name}."))
    return paths


def closest_field(path: str, config: ml_collections.ConfigDict) -> str | None:
    """The field or group of `config` whose dotted path is nearest to `path` (a misspelling), if any is close."""
    matches = difflib.get_close_matches(path, field_paths(config), n=1, cutoff=0.6)
    return matches[0] if matches else None


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise one UserError listing every value that cannot work, before anything is compiled."""
    train, model, data, loss = config.train, config.model, config.data, config.loss
    problems = []
    if loss.content not in CONTENT_LOSSES:
        problems.append(f"loss.content={loss.content!r} is not one of {CONTENT_LOSSES}")
    elif loss.content != "mse" and not config.vgg_weights:
        problems.append(f"loss.content={loss.content!r} needs config.vgg_weights, a VGG19 file made by "
                        "`srgan-jax convert-vgg19` (pretrained/README.md)")
    if data.in_memory and not (data.skimage_images or data.image_dir):
        problems.append("data.in_memory needs data.image_dir or data.skimage_images")
    if data.use_dataset_lr and (data.in_memory or data.image_dir):
        problems.append("data.use_dataset_lr needs a tfds dataset with LR images (data.tfds_name): "
                        "set it False for a folder or in-memory images")
    elif data.use_dataset_lr and _dataset_scale(data.tfds_name) not in (None, model.scale):
        problems.append(f"data.use_dataset_lr: data.tfds_name={data.tfds_name!r} holds "
                        f"x{_dataset_scale(data.tfds_name)} LR images, model.scale={model.scale}: pick the "
                        f"dataset of that scale (e.g. div2k/bicubic_x{model.scale})")
    if data.shuffle_buffer < 1:
        problems.append(f"data.shuffle_buffer={data.shuffle_buffer} must be >= 1")
    if config.eval.every < 1:
        problems.append(f"eval.every={config.eval.every} must be >= 1")
    if config.dtype not in DTYPES:
        problems.append(f"dtype={config.dtype!r} is not one of {tuple(DTYPES)}")
    if config.parallel not in PARALLEL:
        problems.append(f"parallel={config.parallel!r} is not one of {PARALLEL}")
    if loss.adversarial_weight < 0:
        problems.append(f"loss.adversarial_weight={loss.adversarial_weight} must be >= 0")
    if train.time_limit_s < 0:
        problems.append(f"train.time_limit_s={train.time_limit_s} must be >= 0 (0: no limit)")
    for name in ("batch_size", "checkpoint_every", "log_every", "keep_checkpoints"):
        if train[name] < 1:
            problems.append(f"train.{name}={train[name]} must be >= 1")
    if train.num_steps < 1:
        problems.append(f"train.num_steps={train.num_steps} must be >= 1 (the step to train to)")
    if train.pretrain_steps < 0:
        problems.append(f"train.pretrain_steps={train.pretrain_steps} must be >= 0")
    boundaries = tuple(train.lr_boundaries)
    steps = all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in boundaries)
    if not steps or list(boundaries) != sorted(set(boundaries)):
        problems.append(f"train.lr_boundaries={boundaries} must be increasing step numbers, e.g. (100000,)")
    if not train.learning_rate > 0:
        problems.append(f"train.learning_rate={train.learning_rate} must be > 0")
    for name in ("g_tail_lr_scale", "g_upsample_lr_scale"):
        if not train[name] >= 0:
            problems.append(f"train.{name}={train[name]} must be >= 0 (0 freezes those layers)")
    if model.num_blocks < 1 or model.features < 1:
        problems.append("model.num_blocks and model.features must be >= 1")
    if model.scale not in SCALES:
        problems.append(f"model.scale={model.scale} must be one of {SCALES} (4 in the paper)")
    elif data.hr_size % model.scale or data.hr_size < model.scale:
        problems.append(f"data.hr_size={data.hr_size} must be a multiple of model.scale={model.scale}")
    if uses_gan(config) and data.hr_size % 16:
        problems.append(f"data.hr_size={data.hr_size} must be a multiple of 16 for the discriminator")
    problems += _distributed_problems(config.distributed)
    if problems:
        raise UserError("bad config: " + "; ".join(problems))


def _dataset_scale(tfds_name: str) -> int | None:
    """The LR factor a tfds dataset name states ("div2k/bicubic_x3" -> 3), None if it states none."""
    match = re.search(r"_x(\d+)$", tfds_name)
    return int(match.group(1)) if match else None


def _distributed_problems(distributed: ml_collections.ConfigDict) -> list[str]:
    problems = []
    if distributed.num_processes < 0:
        problems.append(f"distributed.num_processes={distributed.num_processes} must be >= 0 (0: auto-detect)")
    if distributed.process_id < -1 or 0 < distributed.num_processes <= distributed.process_id:
        problems.append(f"distributed.process_id={distributed.process_id} must be in [0, num_processes) "
                        "(-1: auto-detect)")
    if distributed.coordinator_address and not re.fullmatch(r"\S+:\d+", distributed.coordinator_address):
        problems.append(f"distributed.coordinator_address={distributed.coordinator_address!r} must be host:port")
    if not distributed.timeout_s > 0:
        problems.append(f"distributed.timeout_s={distributed.timeout_s} must be > 0")
    return problems
