"""Every scale of the generator (x2, x3, x4, x8): pixel shuffle, shapes, tiled upscaling at x3,
and `engine.check_tileable`, the guard of `masked_apply`'s premise."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srgan_jax import models, xla_cpu
from srgan_jax.config import GeneratorSpec
from srgan_jax.data.imresize import upscale_nearest
from srgan_jax.metrics import sr_to_uint8
from srgan_jax.networks.generator import Generator
from srgan_jax.networks.layers import pixel_shuffle
from srgan_jax.upscaling import engine

SCALES = (2, 3, 4, 8)
TINY = dict(num_blocks=1, features=8)


def init(generator: nn.Module, seed: int = 0):
    """Variables of `generator` with BatchNorm statistics and PReLU slopes away from their defaults."""
    variables = generator.init(jax.random.key(seed), jnp.zeros((1, 8, 8, 3)))
    rng = np.random.default_rng(seed)
    moved = jax.tree.map(lambda x: jnp.asarray(rng.uniform(0.5, 1.5, x.shape), x.dtype), variables)
    params = dict(variables["params"])
    for name in params:
        if "prelu" in name:
            params[name] = moved["params"][name]
    return {"params": params, "batch_stats": moved["batch_stats"]}


def random_lr(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(size=(1, h, w, 3)).astype(np.float32)


# --------------------------------------------------------------------------- the generator


@pytest.mark.parametrize("r", [2, 3])
def test_pixel_shuffle_is_the_depth_to_space_of_torch_pixel_shuffle(r):
    # torch.nn.PixelShuffle (NCHW): out[c, h*r + i, w*r + j] = in[c*r*r + i*r + j, h, w].
    b, h, w, c = 2, 3, 4, 5
    x = np.random.default_rng(0).normal(size=(b, h, w, c * r * r)).astype(np.float32)
    expected = np.empty((b, h * r, w * r, c), np.float32)
    for y, xx, ch, i, j in np.ndindex(h, w, c, r, r):
        expected[:, y * r + i, xx * r + j, ch] = x[:, y, xx, ch * r * r + i * r + j]
    np.testing.assert_array_equal(np.asarray(pixel_shuffle(jnp.asarray(x), r)), expected)


@pytest.mark.parametrize("scale,stages", [(2, (2,)), (3, (3,)), (4, (2, 2)), (8, (2, 2, 2))])
def test_each_scale_has_its_upsampling_stages_and_output_shape(scale, stages):
    features = TINY["features"]
    generator = Generator(**TINY, scale=scale)
    variables = jax.eval_shape(generator.init, jax.random.key(0), jnp.zeros((1, 5, 7, 3)))
    params = variables["params"]
    upsample = sorted(name for name in params if name.startswith("upsample_"))
    assert upsample == sorted(f"upsample_{i}_{kind}" for i in range(len(stages)) for kind in ("conv", "prelu"))
    for i, factor in enumerate(stages):  # conv3 to features * f^2 channels, shuffled back to `features`
        assert params[f"upsample_{i}_conv"]["kernel"].shape == (3, 3, features, features * factor**2)
        assert params[f"upsample_{i}_prelu"]["slope"].shape == (features,)
    assert params["tail_conv"]["kernel"].shape == (9, 9, features, 3)
    sr = jax.eval_shape(functools.partial(generator.apply, train=False), variables, jnp.zeros((2, 5, 7, 3)))
    assert sr.shape == (2, 5 * scale, 7 * scale, 3)


def test_x3_and_x8_forward_passes_are_in_range():
    for scale in (3, 8):
        generator = Generator(**TINY, scale=scale)
        sr = generator.apply(init(generator), random_lr(5, 7))
        assert sr.shape == (1, 5 * scale, 7 * scale, 3)
        assert float(jnp.max(jnp.abs(sr))) <= 1.0 and float(jnp.std(sr)) > 0


@pytest.mark.parametrize("scale", [1, 5, 6, 16])
def test_other_scales_are_rejected(scale):
    with pytest.raises(ValueError, match=rf"scale must be one of \(2, 3, 4, 8\), got {scale}"):
        Generator(**TINY, scale=scale).init(jax.random.key(0), jnp.zeros((1, 4, 4, 3)))


# --------------------------------------------------------------------------- tiled upscaling at x3

# LR receptive-field radius of the 1-block x3 generator: 9x9 head (4) + 2 block convs (2) + body
# conv (1) + upsample conv (1) + 9x9 tail at x3 (4/3), rounded up.
RECEPTIVE_RADIUS_X3 = 10


@pytest.mark.parametrize("tiling", [dict(tile=16, overlap=4, batch=3), dict(tile=25, overlap=10, batch=1),
                                    dict(tile=0)])
def test_x3_tiling_pipeline_is_exact_for_a_nearest_neighbour_generator(tiling):
    # An 'identity' x3 generator: tile positions, blending and cropping must reproduce
    # np.repeat exactly (no shift, no seam), at sizes that are no multiple of anything.
    def apply(variables, lr, valid):
        return jnp.repeat(jnp.repeat(lr, 3, axis=1), 3, axis=2) * 2.0 - 1.0

    image = np.random.default_rng(0).integers(0, 256, (47, 38, 3), dtype=np.uint8)
    upscaler = engine.Upscaler(jax.jit(apply), None, 3, **tiling)
    np.testing.assert_array_equal(upscaler(image), upscale_nearest(image, 3))


@pytest.fixture(scope="module")
def x3_upscaler() -> engine.Upscaler:
    """A 1-block, 8-feature x3 generator with moved BatchNorm statistics, tiled 64 / overlap 40.

    Tiles never weigh the outer quarter (>= 40 / 4 = RECEPTIVE_RADIUS_X3 LR pixels) of a shared
    strip, so every pixel a tile contributes is beyond the reach of its zero-padded edges.
    """
    spec = GeneratorSpec(scale=3, **TINY)
    generator = models.create_generator(spec)
    apply = xla_cpu.jit(functools.partial(engine.masked_apply, generator))
    return engine.Upscaler(apply, init(generator), 3, tile=64, overlap=40, batch=2, spec=spec)


def test_x3_tiled_output_equals_the_whole_image_forward_pass(x3_upscaler):
    lr = np.random.default_rng(1).integers(0, 256, (100, 91, 3), dtype=np.uint8)
    assert x3_upscaler.tile_count(100, 91) == 9
    tiled = x3_upscaler(lr).astype(int)
    whole = Generator(**TINY, scale=3).apply(x3_upscaler.variables, lr[None].astype(np.float32) / 255.0)
    reference = sr_to_uint8(np.asarray(whole[0])).astype(int)
    assert tiled.shape == reference.shape == (300, 273, 3)
    # Every tile pixel equals the whole-image one up to float32 rounding (~1e-6 of the [-1, 1]
    # range, i.e. ~1e-4 of a level): quantising can flip a value that close to a rounding boundary
    # by one level, nothing more, and rarely (<< 1% of the pixels).
    diff = np.abs(tiled - reference)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (diff.max(), (diff > 0).mean())


def test_x3_masked_apply_ignores_the_padding(x3_upscaler):
    lr = random_lr(20, 31)
    padded = random_lr(32, 48, seed=1)
    padded[:, :20, :31] = lr
    sr = x3_upscaler.apply(x3_upscaler.variables, padded, np.array([20, 31], np.int32))[0, :60, :93]
    exact = Generator(**TINY, scale=3).apply(x3_upscaler.variables, lr)[0]
    np.testing.assert_allclose(sr, exact, atol=1e-5)  # float32 rounding of the different conv shapes


# --------------------------------------------------------------------------- the tiling guard


class WithPointwiseTail(Generator):
    """Allowed additions: a stride-1 'SAME' conv and a pointwise op after the output."""

    @nn.compact
    def __call__(self, lr, train=False):
        return jnp.tanh(nn.Conv(3, (3, 3))(super().__call__(lr, train)))


class WithBlur(Generator):
    """A 3x3 average pool (stride 1, 'SAME'): mixes padding into the image's border pixels."""

    @nn.compact
    def __call__(self, lr, train=False):
        return nn.avg_pool(super().__call__(lr, train), (3, 3), strides=(1, 1), padding="SAME")


class WithStridedConv(Generator):
    @nn.compact
    def __call__(self, lr, train=False):
        return nn.Conv(3, (3, 3), strides=2)(super().__call__(lr, train))


class WithValidConv(Generator):
    @nn.compact
    def __call__(self, lr, train=False):
        return nn.Conv(3, (3, 3), padding="VALID")(super().__call__(lr, train))


class WithTrainModeBatchNorm(Generator):
    @nn.compact
    def __call__(self, lr, train=False):
        return nn.BatchNorm(use_running_average=False)(super().__call__(lr, train))


def masked_equals_exact(generator: nn.Module, variables) -> bool:
    """Whether masked_apply on a garbage-padded LR gives the exact-shape output (the premise itself)."""
    lr, padded = random_lr(5, 7), random_lr(8, 8, seed=1)
    padded[:, :5, :7] = lr
    scale = generator.scale
    masked = engine.masked_apply(generator, variables, padded, jnp.array([5, 7]))[:, :5 * scale, :7 * scale]
    exact = generator.apply(variables, lr, train=False)
    return masked.shape == exact.shape and bool(jnp.allclose(masked, exact, atol=1e-5))


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_every_scale_passes_the_guard_in_the_form_each_backend_runs(scale, dtype):
    spec = GeneratorSpec(scale=scale, **TINY)
    for generator in (models.create_generator(spec, dtype), models.create_portable_generator(spec)):
        engine.check_tileable(generator, jax.eval_shape(generator.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3))))


def test_the_guard_passes_allowed_additions_and_fails_exactly_where_masking_breaks():
    allowed = WithPointwiseTail(**TINY, scale=3)
    variables = init(allowed)
    engine.check_tileable(allowed, variables)
    assert masked_equals_exact(allowed, variables)
    blur = WithBlur(**TINY, scale=3)
    variables = init(blur)
    assert not masked_equals_exact(blur, variables)
    with pytest.raises(ValueError, match="WithBlur cannot be tiled by masked_apply .*reduce_window_sum is not pointw"):
        engine.check_tileable(blur, variables)


@pytest.mark.parametrize("cls,message", [
    (WithStridedConv, r"Conv_0: conv strides=2 padding='SAME'"),
    (WithValidConv, r"Conv_0: conv strides=1 padding='VALID'"),
    (WithTrainModeBatchNorm, r"BatchNorm_0: BatchNorm on batch statistics \(train mode\)"),
])
def test_the_guard_names_a_layer_that_breaks_masking(cls, message):
    generator = cls(**TINY, scale=2)
    variables = jax.eval_shape(generator.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match=message):
        engine.check_tileable(generator, variables)


def test_load_generator_refuses_a_generator_that_masking_would_get_wrong(tiny_checkpoint, monkeypatch):
    # WithBlur has the plain generator's parameters, so the checkpoint restores; the guard must stop it.
    monkeypatch.setattr(models, "create_generator", lambda spec, dtype=None: WithBlur(**spec.to_dict()))
    with pytest.raises(ValueError, match="WithBlur cannot be tiled"):
        engine.load_generator(tiny_checkpoint)
