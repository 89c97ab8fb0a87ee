"""In-memory crop source: deterministic per step, LR = MATLAB bicubic of the HR crop."""

import numpy as np
import pytest

from srgan_jax.data import memory_source
from srgan_jax.data.imresize import imresize
from srgan_jax.errors import UserError


def test_crop_sampler_is_deterministic_and_lr_is_the_matlab_bicubic_of_the_crop(image_dir):
    images = list(memory_source.load_folder(image_dir, "image_dir").values())
    sampler = memory_source.CropSampler(images, hr_size=32, scale=4, batch_size=4, seed=3, augment=True)
    a, b = sampler.batch(7), sampler.batch(7)
    np.testing.assert_array_equal(a["hr"], b["hr"])
    assert not np.array_equal(sampler.batch(8)["hr"], a["hr"])
    assert a["hr"].shape == (4, 32, 32, 3) and a["lr"].shape == (4, 8, 8, 3)
    assert a["hr"].min() >= -1 and a["hr"].max() <= 1 and a["lr"].min() >= -0.1
    for hr, lr in zip(a["hr"], a["lr"]):
        np.testing.assert_allclose(lr, imresize((hr.astype(np.float64) + 1) / 2, 0.25), atol=1e-5)


def test_load_folder_names_the_config_field_when_there_are_no_images(tmp_path):
    with pytest.raises(UserError, match="no .*images in .*fix config.data.image_dir"):
        memory_source.load_folder(tmp_path, "config.data.image_dir")
    with pytest.raises(UserError, match="does not exist: fix config.eval.image_dir"):
        memory_source.load_folder(tmp_path / "missing", "config.eval.image_dir")
