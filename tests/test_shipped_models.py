"""The generators shipped in pretrained/: found by name from any directory, intact, and exported
from a training checkpoint by `checkpoints.export_generator`."""

import json

import jax
import numpy as np
import pytest

import srgan_jax
from srgan_jax import checkpoints
from srgan_jax.config import GeneratorSpec
from srgan_jax.errors import UserError

SHIPPED = ("srgan_mse_x4", "srresnet_x4")


def test_every_shipped_generator_is_installed_with_its_checksums():
    assert set(SHIPPED) <= set(checkpoints.shipped_names())
    for name in SHIPPED:
        meta = json.loads((checkpoints.shipped_checkpoint(name) / "meta" / "metadata").read_text())
        assert set(meta["checksums"]) == {"generator"}  # no training state is shipped
        assert len(meta["checksums"]["generator"]) == 225  # every array of the 16-block SRResNet


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_generator_loads_by_name_from_any_directory(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert checkpoints.find_generator(name) == checkpoints.shipped_checkpoint(name)
    upscaler = srgan_jax.load_generator(name, tile=0)  # verifies every checksum
    assert upscaler.spec == GeneratorSpec(num_blocks=16, features=64, scale=4)
    lr = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    sr = upscaler(lr)
    assert sr.shape == (48, 40, 3) and sr.dtype == np.uint8


def test_the_shipped_srgan_is_srresnet_with_a_gan_trained_trunk_and_its_output_stage_unchanged():
    """Its recipe froze G's output stage (pretrained/README.md, SRGAN-MSE x4): upsample_* and
    tail_conv must equal the SRResNet's bit for bit, and every other layer must have moved."""
    srgan = srgan_jax.load_generator("srgan_mse_x4", tile=0).variables
    srresnet = srgan_jax.load_generator("srresnet_x4", tile=0).variables
    for name, layer in srresnet["params"].items():
        same = [np.array_equal(a, b) for a, b in zip(jax.tree.leaves(layer), jax.tree.leaves(srgan["params"][name]))]
        if name == "tail_conv" or name.startswith("upsample_"):
            assert all(same), name
        else:
            assert not any(same), name


def test_an_existing_path_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "srresnet_x4").mkdir()
    assert checkpoints.find_generator("srresnet_x4") == tmp_path.joinpath("srresnet_x4").relative_to(tmp_path)
    assert checkpoints.find_generator(None) == checkpoints.shipped_checkpoint()


def test_an_unknown_name_lists_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="srgan_x4 does not exist: .*shipped generator's name \\(srgan_mse_x4, srresnet_x4\\)"):
        checkpoints.find_generator("srgan_x4")


def test_export_generator_keeps_only_the_generator_and_refuses_to_overwrite(tmp_path):
    out = checkpoints.export_generator(checkpoints.shipped_checkpoint(), tmp_path / "copy")
    assert sorted(p.name for p in out.iterdir()) == ["generator", "meta"]
    upscaler = srgan_jax.load_generator(out, tile=0)
    original = srgan_jax.load_generator(None, tile=0)
    lr = np.random.default_rng(1).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    np.testing.assert_array_equal(upscaler(lr), original(lr))  # same arrays, same program
    with pytest.raises(UserError, match="exists: remove it"):
        checkpoints.export_generator(checkpoints.shipped_checkpoint(), out)


def test_export_generator_refuses_a_damaged_checkpoint(tmp_path):
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(checkpoints.shipped_checkpoint(), damaged)
    data = max((p for p in (damaged / "generator").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2:len(raw) // 2 + 64] = bytes(64)  # 64 zeroed bytes inside the largest array file
    data.write_bytes(bytes(raw))
    with pytest.raises(checkpoints.DamagedCheckpointError):
        checkpoints.export_generator(damaged, tmp_path / "out")
    assert not (tmp_path / "out").exists()
