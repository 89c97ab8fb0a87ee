"""Config interpretation: paper defaults, validation in the user's terms, the generator spec."""

import pytest

import jax
import jax.numpy as jnp
import numpy as np

from srgan_jax.configs import default, srgan
from srgan_jax import config as config_lib
from srgan_jax import models
from srgan_jax.config import GeneratorSpec, run_spec
from srgan_jax.errors import UserError
from srgan_jax.training.state import create_state, learning_rate_schedule


@pytest.mark.parametrize("field, value, message", [
    ("loss.content", "vgg33", "loss.content='vgg33' is not one of"),
    ("train.num_steps", -5, "num_steps"),
    ("train.num_steps", 0, r"train.num_steps=0 must be >= 1"),
    ("data.hr_size", 98, "multiple of model.scale"),
    ("dtype", "float16", "dtype='float16'"),
    ("parallel", "dp", "parallel='dp'"),
    ("model.scale", 6, r"model.scale=6 must be one of \(2, 3, 4, 8\)"),
    ("train.learning_rate", 0.0, "learning_rate"),
    ("train.g_tail_lr_scale", -0.5, r"train.g_tail_lr_scale=-0.5 must be >= 0"),
    ("train.g_upsample_lr_scale", float("nan"), r"train.g_upsample_lr_scale=nan must be >= 0"),
    ("train.lr_boundaries", ("abc",), r"lr_boundaries=\('abc',\) must be increasing step numbers"),
    ("train.lr_boundaries", (200, 100), "must be increasing step numbers"),
    ("vgg_weights", "", "needs config.vgg_weights"),
    ("distributed.num_processes", -1, "num_processes=-1 must be >= 0"),
    ("distributed.process_id", -2, r"process_id=-2 must be in \[0, num_processes\)"),
    ("distributed.coordinator_address", "host0", "must be host:port"),
    ("distributed.timeout_s", 0.0, "timeout_s=0.0 must be > 0"),
    ("data.shuffle_buffer", 0, r"data.shuffle_buffer=0 must be >= 1"),
])
def test_bad_config_values_fail_before_compilation(field, value, message):
    config = srgan.get_config()
    config.vgg_weights = "vgg19.msgpack"
    section, _, name = field.rpartition(".")
    (config[section] if section else config)[name] = value
    with pytest.raises(UserError, match=message):
        config_lib.validate(config)


def test_every_shipped_config_is_valid_and_resolves():
    import importlib
    from pathlib import Path

    names = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.py") if p.stem != "__init__")
    assert {"default", "quickstart", "srresnet", "srgan", "srgan_mse"} <= set(names)
    for name in names:
        config = importlib.import_module(f"srgan_jax.configs.{name}").get_config()
        if config.loss.content != "mse":
            config.vgg_weights = "vgg19.msgpack"
        spec = run_spec(config)  # raises on any invalid value
        assert spec.schedule.gan == (name.startswith("srgan") or name == "quickstart"), name  # the configs that train D


def test_the_training_source_resolves_to_one_of_memory_or_tf_data():
    config = default.get_config()
    config.data.use_dataset_lr = True  # DIV2K's own LR: a tfds dataset has them
    spec = run_spec(config)
    assert spec.train_images is None and spec.train_folder == ""
    assert spec.train_tfds == config_lib.TfdsSource(tfds_name="div2k/bicubic_x4", tfds_data_dir=None,
                                                    use_dataset_lr=True)
    config.data.update(image_dir="photos", use_dataset_lr=False, tfds_data_dir="/cache", shuffle_buffer=8)
    spec = run_spec(config)
    assert (spec.train_folder, spec.train_tfds.tfds_data_dir, spec.train_tfds.shuffle_buffer) == ("photos", "/cache", 8)
    config.data.in_memory = True
    spec = run_spec(config)
    assert spec.train_tfds is None and spec.train_images == config_lib.ImageSource((), "photos")


@pytest.mark.parametrize("in_memory", [False, True])
def test_dataset_lr_is_refused_for_a_folder_or_in_memory_images(in_memory):
    config = default.get_config()
    config.data.update(image_dir="photos", use_dataset_lr=True, in_memory=in_memory)
    with pytest.raises(UserError, match="data.use_dataset_lr needs a tfds dataset with LR images"):
        run_spec(config)


def test_dataset_lr_of_another_scale_is_refused():
    config = default.get_config()
    config.data.use_dataset_lr = True
    config.model.scale = 3  # div2k/bicubic_x4's LR is a quarter of its HR: crops would not align
    with pytest.raises(UserError, match=r"tfds_name='div2k/bicubic_x4' holds x4 LR images, model.scale=3: .*"
                                        r"div2k/bicubic_x3"):
        run_spec(config)
    config.data.tfds_name = "div2k/unknown_x3"
    assert run_spec(config).train_tfds.tfds_name == "div2k/unknown_x3"
    config.data.use_dataset_lr = False  # LR made by MATLAB bicubic at the model's scale: any dataset
    config.data.tfds_name = "div2k/bicubic_x4"
    assert run_spec(config).generator.scale == 3


def test_the_schedule_says_which_step_is_which():
    config = srgan.get_config()
    config.vgg_weights = "vgg19.msgpack"
    config.train.num_steps, config.train.pretrain_steps = 10, 3
    config.train.log_every, config.train.checkpoint_every, config.eval.every = 2, 5, 4
    schedule = run_spec(config).schedule
    assert [schedule.is_gan_step(s) for s in range(6)] == [False, False, False, True, True, True]
    assert [s for s in range(1, 11) if schedule.is_sync_step(s)] == [2, 4, 5, 6, 8, 10]
    assert [s for s in range(1, 11) if schedule.is_checkpoint_step(s)] == [5, 10]
    assert [s for s in range(1, 11) if schedule.is_eval_step(s)] == [4, 8, 10]
    config.loss.adversarial_weight = 0.0  # SRResNet: never a GAN step
    assert not any(run_spec(config).schedule.is_gan_step(s) for s in range(10))


def test_auto_detected_distributed_settings_resolve_to_none():
    config = default.get_config()
    distributed = run_spec(config).distributed
    assert (distributed.coordinator_address, distributed.num_processes, distributed.process_id) == (None, None, None)
    config.distributed.coordinator_address, config.distributed.num_processes = "host:1234", 2
    config.distributed.process_id = 0
    distributed = run_spec(config).distributed
    assert (distributed.coordinator_address, distributed.num_processes, distributed.process_id) == ("host:1234", 2, 0)


def test_paper_defaults():
    config = default.get_config()
    assert (config.model.num_blocks, config.model.features, config.model.scale) == (16, 64, 4)
    assert (config.train.batch_size, config.train.learning_rate, config.train.num_steps) == (16, 1e-4, 10**6)
    assert (config.train.b1, config.train.b2, config.data.hr_size) == (0.9, 0.999, 96)
    assert config.train.g_tail_lr_scale == config.train.g_upsample_lr_scale == 1.0 and not config.train.d_joint_batch
    gan = srgan.get_config()
    assert (gan.loss.content, gan.loss.adversarial_weight, gan.train.num_steps) == ("vgg54", 1e-3, 200_000)
    gan.vgg_weights = "vgg19.msgpack"  # run_spec validates; the file is read only when the loss is built
    schedule = learning_rate_schedule(run_spec(gan).optimizer)
    assert float(schedule(99_999)) == pytest.approx(1e-4) and float(schedule(100_000)) == pytest.approx(1e-5)


def test_generator_spec_round_trips_and_rejects_other_fields():
    spec = GeneratorSpec.from_config(default.get_config())
    assert spec == GeneratorSpec(16, 64, 4) and GeneratorSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="num_blocks"):
        GeneratorSpec.from_dict({"blocks": 16, "features": 64, "scale": 4})


def test_dtype_and_vgg_layer_names():
    assert config_lib.compute_dtype("bfloat16").__name__ == "bfloat16"
    with pytest.raises(UserError, match="not one of float32, bfloat16"):
        config_lib.compute_dtype("float16")
    assert config_lib.vgg_layer("vgg54") == "relu5_4" and config_lib.vgg_layer("VGG22") == "relu2_2"
    with pytest.raises(UserError, match="not a VGG loss"):
        config_lib.vgg_layer("vgg99")


def test_a_process_id_beyond_the_process_count_is_refused():
    config = default.get_config()
    config.distributed.num_processes, config.distributed.process_id = 2, 2
    with pytest.raises(UserError, match=r"process_id=2 must be in \[0, num_processes\)"):
        config_lib.validate(config)


def test_output_stage_lr_scales_scale_only_their_layers_adam_steps():
    """The same gradients: Adam's updates times 0.25 on tail_conv, times 0 on upsample_* (exact)."""
    from srgan_jax.configs import quickstart

    config = quickstart.get_config()
    config.model.num_blocks, config.model.features, config.data.hr_size = 1, 8, 32
    generator, _ = models.create_models(run_spec(config))
    updates = {}
    for tail, upsample in ((1.0, 1.0), (0.25, 0.0)):
        config.train.g_tail_lr_scale, config.train.g_upsample_lr_scale = tail, upsample
        g = create_state(run_spec(config), jax.random.key(0), generator, None).g
        grads = jax.tree.map(lambda p: jnp.linspace(-1.0, 2.0, p.size).reshape(p.shape), g.params)
        updates[tail], _ = g.tx.update(grads, g.opt_state, g.params)
    assert {name for name in updates[1.0] if name.startswith("upsample_")} == {
        "upsample_0_conv", "upsample_0_prelu", "upsample_1_conv", "upsample_1_prelu"}
    for name in updates[1.0]:
        ratio = 0.25 if name == "tail_conv" else 0.0 if name.startswith("upsample_") else 1.0
        for full, scaled in zip(jax.tree.leaves(updates[1.0][name]), jax.tree.leaves(updates[0.25][name])):
            np.testing.assert_array_equal(np.asarray(scaled), ratio * np.asarray(full), err_msg=name)
            assert np.abs(np.asarray(full)).max() > 0, name
