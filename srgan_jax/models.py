"""Factories: the networks and the content loss a run asks for, built for this backend.

The one place where networks meet the backend: on the CPU the generator's output
convolution and the discriminator's strided ones get the faster forms of `xla_cpu` as
module fields (same parameters, so checkpoints move freely between backends). Exported
artefacts take the portable generator, which never has them.
"""

from __future__ import annotations

import functools
from typing import Any

from srgan_jax import config as config_lib
from srgan_jax import xla_cpu
from srgan_jax.config import GeneratorSpec
from srgan_jax.networks import losses
from srgan_jax.networks.losses import ContentLoss
from srgan_jax.networks.discriminator import Discriminator
from srgan_jax.networks.generator import Generator
from srgan_jax.networks.vgg19 import VGGFeatures


def create_generator(spec: GeneratorSpec, dtype: Any = None, bn_axis_name: str | None = None) -> Generator:
    """G of `spec`, computing in `dtype` (default float32), BatchNorm synchronised over `bn_axis_name`."""
    return Generator(num_blocks=spec.num_blocks, features=spec.features, scale=spec.scale,
                     dtype=dtype or config_lib.DTYPES["float32"], bn_axis_name=bn_axis_name,
                     tail_conv=xla_cpu.tail_conv())


def create_portable_generator(spec: GeneratorSpec) -> Generator:
    """G of `spec` in float32 with plain `lax` convolutions only: for artefacts that leave XLA:CPU
    (`export`), whatever backend this process runs on."""
    return Generator(num_blocks=spec.num_blocks, features=spec.features, scale=spec.scale,
                     dtype=config_lib.DTYPES["float32"])


def create_discriminator(dtype: Any = None, bn_axis_name: str | None = None) -> Discriminator:
    """D computing in `dtype` (default float32), BatchNorm synchronised over `bn_axis_name`."""
    return Discriminator(dtype=dtype or config_lib.DTYPES["float32"], bn_axis_name=bn_axis_name,
                         strided_conv=xla_cpu.strided_conv())


def create_models(spec: config_lib.RunSpec, bn_axis_name: str | None = None
                  ) -> tuple[Generator, Discriminator | None]:
    """G, and D when the run has an adversarial loss, in the run's compute dtype."""
    generator = create_generator(spec.generator, spec.dtype, bn_axis_name)
    discriminator = create_discriminator(spec.dtype, bn_axis_name) if spec.schedule.gan else None
    return generator, discriminator


def create_content_loss(spec: config_lib.RunSpec, features: VGGFeatures | None = None) -> ContentLoss:
    """Pixel MSE, or the VGG i.j loss on `features` (default: the weights at `spec.vgg_weights`)."""
    if spec.content_layer is None:
        return losses.mse_loss
    if features is None:
        from srgan_jax import vgg_weights  # reads weight files: only VGG configs need it

        features = vgg_weights.load_feature_extractor(spec.vgg_weights, layers=(spec.content_layer,),
                                                      dtype=spec.dtype)
    return functools.partial(losses.vgg_content_loss, features, layer=spec.content_layer)
