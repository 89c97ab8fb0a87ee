"""Training loop: resume continuity, checkpoint round-trip, NaN stop, SIGTERM, bad configs."""

import os
import signal
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from srgan_jax import checkpoints, memory_source, train
from srgan_jax.errors import UserError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from configs import default, quickstart, srgan  # noqa: E402


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(6):
        # Smooth random images: learnable, unlike white noise.
        small = rng.integers(0, 256, size=(8, 10, 3), dtype=np.uint8)
        Image.fromarray(small).resize((80, 64), Image.BICUBIC).save(folder / f"im{i}.png")
    return folder


def tiny_config(image_dir, **train_overrides):
    config = quickstart.get_config()
    config.model.num_blocks, config.model.features = 1, 8
    config.data.hr_size = 32
    config.data.skimage_images = ()
    config.data.image_dir = str(image_dir)
    config.eval.skimage_images = ()
    config.train.batch_size = 4
    config.train.num_steps = 4
    config.train.pretrain_steps = 2  # two G-only steps, then GAN steps
    config.train.lr_boundaries = ()
    config.train.checkpoint_every = 2
    config.train.log_every = 1
    config.train.update(train_overrides)
    return config


def leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


def test_resume_continues_exactly_as_an_uninterrupted_run(image_dir, tmp_path):
    straight = train.train_and_evaluate(tiny_config(image_dir), str(tmp_path / "straight"))
    train.train_and_evaluate(tiny_config(image_dir, num_steps=2), str(tmp_path / "resumed"))
    resumed = train.train_and_evaluate(tiny_config(image_dir), str(tmp_path / "resumed"))
    assert int(resumed.g.step) == int(straight.g.step) == 4
    assert int(resumed.d.step) == 2  # D only trains in the GAN steps (after pretrain_steps)
    for a, b in zip(leaves(straight), leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_holds_generator_and_model_config(image_dir, tmp_path):
    state = train.train_and_evaluate(tiny_config(image_dir, num_steps=2), str(tmp_path))
    meta = checkpoints.read_meta(tmp_path)
    assert meta["model"] == {"num_blocks": 1, "features": 8, "scale": 4} and meta["step"] == 2
    abstract = jax.eval_shape(lambda: train.generator_variables(state))
    restored = checkpoints.load_generator_variables(tmp_path, abstract)
    for a, b in zip(leaves(train.generator_variables(state)), leaves(restored), strict=True):
        np.testing.assert_array_equal(a, b)


def test_nonfinite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(image_dir, tmp_path):
    # From step 2 on the learning rate is 1e-3 * 1e30: the parameters overflow.
    config = tiny_config(image_dir, num_steps=8, lr_boundaries=(2,), lr_decay=1e30)
    with pytest.raises(train.NonFiniteLossError, match=r"not finite at step \d+.*last good checkpoint \(step 2\)"):
        train.train_and_evaluate(config, str(tmp_path))
    latest, _ = checkpoints.create_managers(tmp_path, 3)
    assert latest.all_steps() == [2]


def test_sigterm_writes_a_checkpoint_and_stops(image_dir, tmp_path, monkeypatch):
    sampler_batches = train.create_train_iterator

    def batches_then_sigterm(config, batch_size, start_step):
        for i, batch in enumerate(sampler_batches(config, batch_size, start_step)):
            if i == 3:
                os.kill(os.getpid(), signal.SIGTERM)
            yield batch

    monkeypatch.setattr(train, "create_train_iterator", batches_then_sigterm)
    state = train.train_and_evaluate(tiny_config(image_dir, num_steps=100, checkpoint_every=50), str(tmp_path))
    # Batches are prefetched a few steps ahead, so the signal lands within those steps.
    assert 1 <= int(state.g.step) <= 6
    assert checkpoints.read_meta(tmp_path)["step"] == int(state.g.step)


def test_srgan_init_from_copies_the_srresnet_generator(image_dir, tmp_path):
    srresnet = tiny_config(image_dir, num_steps=2, pretrain_steps=0)
    srresnet.loss.adversarial_weight = 0.0
    pretrained = train.train_and_evaluate(srresnet, str(tmp_path / "srresnet"))
    config = tiny_config(image_dir, num_steps=0, pretrain_steps=0)
    config.init_from = str(tmp_path / "srresnet")
    state = train.train_and_evaluate(config, str(tmp_path / "srgan"))
    for a, b in zip(leaves(pretrained.g.params), leaves(state.g.params), strict=True):
        np.testing.assert_array_equal(a, b)
    config.init_from = str(tmp_path / "missing")
    with pytest.raises(UserError, match="does not exist: train SRResNet first"):
        train.train_and_evaluate(config, str(tmp_path / "srgan2"))


@pytest.mark.parametrize("field, value, message", [
    ("loss.content", "vgg33", "loss.content='vgg33' is not one of"),
    ("train.num_steps", -5, "num_steps"),
    ("data.hr_size", 98, "multiple of model.scale"),
    ("dtype", "float16", "dtype='float16'"),
    ("parallel", "dp", "parallel='dp'"),
    ("model.scale", 3, "power of 2"),
    ("train.learning_rate", 0.0, "learning_rate"),
])
def test_bad_config_values_fail_before_compilation(field, value, message):
    config = srgan.get_config()
    section, _, name = field.rpartition(".")
    (config[section] if section else config)[name] = value
    with pytest.raises(UserError, match=message):
        train.validate_config(config)


def test_paper_defaults():
    config = default.get_config()
    assert (config.model.num_blocks, config.model.features, config.model.scale) == (16, 64, 4)
    assert (config.train.batch_size, config.train.learning_rate, config.train.num_steps) == (16, 1e-4, 10**6)
    assert (config.train.b1, config.train.b2, config.data.hr_size) == (0.9, 0.999, 96)
    gan = srgan.get_config()
    assert (gan.loss.content, gan.loss.adversarial_weight, gan.train.num_steps) == ("vgg54", 1e-3, 200_000)
    schedule = train.learning_rate_schedule(gan)
    assert float(schedule(99_999)) == pytest.approx(1e-4) and float(schedule(100_000)) == pytest.approx(1e-5)


def test_crop_sampler_is_deterministic_and_lr_is_the_matlab_bicubic_of_the_crop(image_dir):
    images = list(memory_source.load_folder(image_dir).values())
    sampler = memory_source.CropSampler(images, hr_size=32, scale=4, batch_size=4, seed=3, augment=True)
    a, b = sampler.batch(7), sampler.batch(7)
    np.testing.assert_array_equal(a["hr"], b["hr"])
    assert not np.array_equal(sampler.batch(8)["hr"], a["hr"])
    assert a["hr"].shape == (4, 32, 32, 3) and a["lr"].shape == (4, 8, 8, 3)
    assert a["hr"].min() >= -1 and a["hr"].max() <= 1 and a["lr"].min() >= -0.1
    from srgan_jax.imresize import imresize

    for hr, lr in zip(a["hr"], a["lr"]):
        np.testing.assert_allclose(lr, imresize((hr.astype(np.float64) + 1) / 2, 0.25), atol=1e-5)
