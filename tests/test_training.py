"""Training loop: resume continuity, checkpoint round-trip, NaN stop, SIGTERM, init_from, pmap."""

import json
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from srgan_jax.configs import quickstart
from srgan_jax import checkpoints, models, parallel
from srgan_jax.config import GeneratorSpec, run_spec
from srgan_jax.errors import UserError
from srgan_jax.training import loop
from srgan_jax.training.monitor import Monitor
from srgan_jax.training.state import generator_variables


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
    straight = loop.train_and_evaluate(tiny_config(image_dir), str(tmp_path / "straight"))
    loop.train_and_evaluate(tiny_config(image_dir, num_steps=2), str(tmp_path / "resumed"))
    resumed = loop.train_and_evaluate(tiny_config(image_dir), str(tmp_path / "resumed"))
    assert int(resumed.g.step) == int(straight.g.step) == 4
    assert int(resumed.d.step) == 2  # D only trains in the GAN steps (after pretrain_steps)
    for a, b in zip(leaves(straight), leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_holds_generator_and_model_config(image_dir, tmp_path):
    state = loop.train_and_evaluate(tiny_config(image_dir, num_steps=2), str(tmp_path))
    assert checkpoints.read_generator_spec(tmp_path) == GeneratorSpec(num_blocks=1, features=8, scale=4)
    assert json.loads((tmp_path / "checkpoints" / "2" / "meta" / "metadata").read_text())["step"] == 2
    assert not (tmp_path / "best").exists()  # no validation images configured
    abstract = jax.eval_shape(lambda: generator_variables(state))
    restored = checkpoints.load_generator_variables(tmp_path, abstract)
    for a, b in zip(leaves(generator_variables(state)), leaves(restored), strict=True):
        np.testing.assert_array_equal(a, b)


def test_nonfinite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(image_dir, tmp_path):
    # From step 2 on the learning rate is 1e-3 * 1e30: the parameters overflow.
    config = tiny_config(image_dir, num_steps=8, lr_boundaries=(2,), lr_decay=1e30)
    with pytest.raises(loop.NonFiniteLossError, match=r"not finite at step \d+.*last good checkpoint \(step 2\)"):
        loop.train_and_evaluate(config, str(tmp_path))
    latest, _ = checkpoints.create_managers(tmp_path, 3)
    assert latest.all_steps() == [2]


def test_sigterm_writes_a_checkpoint_and_stops(image_dir, tmp_path, signal_at_batch):
    signal_at_batch(signal.SIGTERM)
    with pytest.raises(loop.Interrupted, match="stopped by SIGTERM at step") as stopped:
        loop.train_and_evaluate(tiny_config(image_dir, num_steps=100, checkpoint_every=50), str(tmp_path))
    state = stopped.value.state
    # Batches are prefetched a few steps ahead, so the signal lands within those steps.
    assert 1 <= int(state.g.step) == stopped.value.step <= 6 and stopped.value.exit_code == 143
    latest, _ = checkpoints.create_managers(tmp_path, 3)
    assert latest.latest_step() == int(state.g.step)


def test_srgan_init_from_copies_the_srresnet_generator(image_dir, tmp_path):
    srresnet = tiny_config(image_dir, num_steps=2, pretrain_steps=0)
    srresnet.loss.adversarial_weight = 0.0
    pretrained = loop.train_and_evaluate(srresnet, str(tmp_path / "srresnet"))
    config = tiny_config(image_dir, num_steps=1, pretrain_steps=0)
    config.init_from = str(tmp_path / "srresnet")
    generator, discriminator = models.create_models(run_spec(config), None)
    state, step = loop._restore_or_initialise(run_spec(config), tmp_path / "srgan", parallel.MeshStrategy(), generator,
                                              discriminator)
    assert step == 0
    for a, b in zip(leaves(pretrained.g.params), leaves(state.g.params), strict=True):
        np.testing.assert_array_equal(a, b)
    config.init_from = str(tmp_path / "missing")
    with pytest.raises(UserError, match="does not exist: train SRResNet first"):
        loop.train_and_evaluate(config, str(tmp_path / "srgan2"))


def test_pmap_training_runs_the_whole_loop_like_the_mesh_run(image_dir, tmp_path):
    """The loop under pmap: per-device metrics are fetched and logged, checkpoints are saved
    from one copy, validation runs through the strategy (in the loop, into best/, and the final
    samples), and step 1's losses are the mesh run's."""
    config = tiny_config(image_dir)
    config.eval.image_dir, config.eval.every = str(image_dir), 2
    loop.train_and_evaluate(config, str(tmp_path / "mesh"))
    config.parallel = "pmap"
    state = loop.train_and_evaluate(config, str(tmp_path / "pmap"))
    assert int(state.g.step) == 4 and int(state.d.step) == 2
    latest, _ = checkpoints.create_managers(tmp_path / "pmap", 3)
    assert latest.all_steps() == [2, 4]
    rows = {name: [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
            for name in ("mesh", "pmap")}
    assert [row["step"] for row in rows["pmap"] if "g_loss" in row] == [1, 2, 3, 4]
    # Step 1's losses come from the same parameters and batch, compiled twice: float32
    # (eps 2^-24) over the loss's 4*32*32*3 = 12,288-term mean and the network's convolutions
    # (at most 9 * 8 * 4 terms each) stays within (12,288 + 288) eps < 1e-3 relative.
    for name in ("g_loss", "psnr"):
        assert rows["pmap"][0][name] == pytest.approx(rows["mesh"][0][name], rel=1e-3)
    _, best = checkpoints.create_managers(tmp_path / "pmap", 3)
    assert best.all_steps() and sorted(p.name for p in (tmp_path / "pmap").glob("sample_*.png"))
    assert sorted(p.name for p in (tmp_path / "pmap").glob("sample_*.png")) == \
        sorted(p.name for p in (tmp_path / "mesh").glob("sample_*.png"))
    # Validation ran in the loop at steps 2 and 4. Its values are not compared with the mesh
    # run's: after Adam steps the two Gs differ by rounding (a gradient that is 0 in exact
    # arithmetic flips its update between +-lr); one state validated through both strategies
    # is compared in test_parallel.py.
    val = {name: [row["val_psnr"] for row in rows[name] if "val_psnr" in row] for name in rows}
    assert len(val["pmap"]) == len(val["mesh"]) == 2 and all(np.isfinite(val["pmap"]))


def test_data_problems_stop_before_anything_is_built_or_written(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    workdir = tmp_path / "workdir"
    with pytest.raises(UserError, match="no .*images in .*fix config.data.image_dir"):
        loop.train_and_evaluate(tiny_config(empty), str(workdir))
    tfds_folder = tiny_config(empty)
    tfds_folder.data.in_memory = False  # the tf.data pipeline over a folder: checked before it is built too
    with pytest.raises(UserError, match="no .*images in .*fix config.data.image_dir"):
        loop.train_and_evaluate(tfds_folder, str(workdir))
    small = tmp_path / "small"
    small.mkdir()
    Image.fromarray(np.zeros((20, 40, 3), np.uint8)).save(small / "a.png")  # under the 32 px crop
    for in_memory in (True, False):
        config = tiny_config(small)
        config.data.in_memory = in_memory
        with pytest.raises(UserError, match=f"no training image in {small} is at least 32x32"):
            loop.train_and_evaluate(config, str(workdir))
    config = tiny_config(empty)
    config.init_from = str(tmp_path / "missing")
    with pytest.raises(UserError, match="does not exist: train SRResNet first"):
        loop.train_and_evaluate(config, str(workdir))
    assert not workdir.exists()


def test_a_missing_tf_data_pipeline_stops_before_anything_is_built_or_written(image_dir, tmp_path, monkeypatch):
    """A folder read through tf.data needs tensorflow-datasets: said before any state, checkpoint
    or damaged/ folder is touched (the in-memory source needs no TensorFlow)."""
    from srgan_jax.data import batches

    real = batches.importlib.util.find_spec
    monkeypatch.setattr(batches.importlib.util, "find_spec",
                        lambda name, *args: None if name == "tensorflow_datasets" else real(name, *args))
    config = tiny_config(image_dir)
    config.data.in_memory = False
    with pytest.raises(UserError, match=r"needs TensorFlow and tensorflow-datasets: pip install -e '.\[data\]'"):
        loop.train_and_evaluate(config, str(tmp_path / "workdir"))
    assert not (tmp_path / "workdir").exists()
    config.data.in_memory = True
    config.train.num_steps = 1
    assert int(loop.train_and_evaluate(config, str(tmp_path / "memory")).g.step) == 1


def test_the_progress_bar_counts_finished_steps_not_dispatched_ones(tmp_path):
    """Dispatch runs ahead of the device: a bar counting dispatched steps raced, then stood still
    while the metrics fetch waited. It counts each step once its metrics are computed."""
    slow = jax.jit(lambda x: {"loss": jnp.sum(jnp.linalg.matrix_power(x, 64))})  # ~0.1 s on a CPU core
    x = jnp.eye(384) * 0.5
    slow(x)["loss"].block_until_ready()  # compiled
    dispatched, finished_when_counted = [], []
    with Monitor(8, tmp_path, 0) as monitor:
        update = monitor._progress.update

        def counting(n=1):
            finished_when_counted.append(all(m["loss"].is_ready() for m in dispatched[:monitor._progress.n + n]))
            update(n)

        monitor._progress.update = counting
        for step in range(1, 9):
            dispatched.append(slow(x))
            monitor.record(step, dispatched[-1])
        assert monitor._progress.n < 8  # the device is behind (so the test can fail)
        assert monitor.check(lambda tree: tree, write=True) is None  # waits: the bar moves a step at a time
        assert monitor._progress.n == 8
    assert finished_when_counted == [True] * 8


def test_the_host_runs_at_most_two_steps_ahead_of_the_device(tmp_path):
    """A stop (time limit, signal) is seen when a step is dispatched; with the host a logging
    interval ahead, a 690 s limit stopped a CPU run after 748 s. Dispatch now waits while more
    than MAX_IN_FLIGHT steps are unfinished."""
    from srgan_jax.training import monitor as monitor_lib

    slow = jax.jit(lambda x: {"loss": jnp.sum(jnp.linalg.matrix_power(x, 64))})  # ~0.1 s on a CPU core
    x = jnp.eye(384) * 0.5
    slow(x)["loss"].block_until_ready()  # compiled
    dispatched, unfinished = [], []
    with Monitor(20, tmp_path, 0) as monitor:
        for step in range(1, 21):
            dispatched.append(slow(x))
            monitor.record(step, dispatched[-1])
            unfinished.append(sum(not m["loss"].is_ready() for m in dispatched))
        assert monitor.check(lambda tree: tree, write=False) is None
    # The device is behind (each step ~0.1 s, dispatch microseconds): without the bound all 20
    # would be unfinished at the end; with it, exactly MAX_IN_FLIGHT at the peak.
    assert max(unfinished) == monitor_lib.MAX_IN_FLIGHT == 2
