"""Reliability of one training process: verified "last good" checkpoints, damaged checkpoints,
a second Ctrl-C, the workdir lock, storage errors, resumed logs (README "Reliability")."""

import logging
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from srgan_jax.config import run_spec
from srgan_jax import checkpoints, models
from srgan_jax.configs import default
from srgan_jax.training import loop
from srgan_jax.training.state import create_state, generator_variables
from srgan_jax.training.workdir_lock import WorkdirBusyError, WorkdirLock

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(image_dir, **train):
    """A 1-block, 8-feature SRResNet: one compiled step, seconds per run."""
    config = default.get_config()
    config.model.num_blocks, config.model.features = 1, 8
    config.data.hr_size, config.data.in_memory, config.data.image_dir = 32, True, str(image_dir)
    config.train.update(dict(batch_size=4, num_steps=4, learning_rate=1e-3, checkpoint_every=1, log_every=1,
                             keep_checkpoints=3))
    config.train.update(train)
    return config


@functools.cache
def _target_state(image_dir):
    config = tiny_config(image_dir)
    generator, discriminator = models.create_models(run_spec(config), None)
    return create_state(run_spec(config), jax.random.key(0), generator, discriminator)


def target_state(config):
    """A fresh state shaped like the checkpoints' (every config here has the same shapes)."""
    return _target_state(config.data.image_dir)


def leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


def assert_same(a, b):
    for x, y in zip(leaves(a), leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


# -- "last good" is verified --------------------------------------------------------------

def test_an_exploding_state_never_becomes_the_last_good_checkpoint(image_dir, tmp_path):
    # Updates 1-2 use lr 1e-3; update 3 on uses 1e27, so the state of step 3 holds ~1e27
    # parameters whose loss (at step 4) overflows. Checkpoints are asked for at every step.
    config = tiny_config(image_dir, num_steps=8, lr_boundaries=(2,), lr_decay=1e24)
    with pytest.raises(loop.NonFiniteLossError,
                       match=r"not finite at step 4 \(computed from the state of step 3\).*last good checkpoint "
                             r"\(step 2\)"):
        loop.train_and_evaluate(config, str(tmp_path))
    assert checkpoints.all_steps(tmp_path) == [1, 2]
    step, state = checkpoints.restore_newest_intact(tmp_path, target_state(config))
    assert step == 2
    # Adam moves each parameter by at most ~lr per update: two updates at 1e-3 leave the
    # initial values (|w| of a few units at most) where they were, far from 1e24.
    assert max(np.abs(x).max() for x in leaves(state.g.params)) < 10
    # Resuming from it at a sane rate trains on.
    resumed = loop.train_and_evaluate(tiny_config(image_dir, num_steps=4), str(tmp_path))
    assert int(resumed.g.step) == 4


def test_a_loss_that_is_never_finite_says_no_checkpoint_was_written(image_dir, tmp_path):
    config = tiny_config(image_dir, num_steps=8, learning_rate=1e30, checkpoint_every=100)
    with pytest.raises(loop.NonFiniteLossError, match="no checkpoint was written"):
        loop.train_and_evaluate(config, str(tmp_path))
    assert checkpoints.all_steps(tmp_path) == []


# -- damaged checkpoints ----------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(image_dir, tmp_path_factory):
    """A workdir with checkpoints 2, 3, 4, and the uninterrupted 6-step run's final state."""
    workdir = tmp_path_factory.mktemp("trained")
    loop.train_and_evaluate(tiny_config(image_dir), str(workdir))
    straight = loop.train_and_evaluate(tiny_config(image_dir, num_steps=6), str(tmp_path_factory.mktemp("six")))
    return workdir, straight


def largest_file(folder: Path) -> Path:
    return max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def flip_bytes(path: Path, count: int = 64) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(middle, middle + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {
    "flipped bytes in the array data": lambda step: flip_bytes(largest_file(step / "state" / "d")),
    "a truncated array file": lambda step: truncate(largest_file(step / "state" / "d")),
    "no _METADATA": lambda step: (step / "state" / "_METADATA").unlink(),
    "no state/": lambda step: shutil.rmtree(step / "state"),
    "damaged meta": lambda step: (step / "meta" / "metadata").write_text("{not json"),
}


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")  # Orbax's closed-loop leftovers
def test_a_damaged_latest_checkpoint_is_reported_and_the_newest_intact_one_restored(trained, tmp_path, damage,
                                                                                      caplog):
    workdir = tmp_path / "w"
    shutil.copytree(trained[0], workdir)
    config = tiny_config(trained[0])
    intact = checkpoints.restore_newest_intact(workdir, target_state(config))
    DAMAGE[damage](workdir / "checkpoints" / "4")
    step, state = checkpoints.restore_newest_intact(workdir, target_state(config))
    assert step == 3
    report = [r.getMessage() for r in caplog.records if "checkpoint" in r.getMessage()]
    assert any("step 4" in line or "/4" in line for line in report), report
    assert intact[0] == 4  # before the damage, 4 was restored; its arrays are not 3's
    assert any(not np.array_equal(a, b) for a, b in zip(leaves(intact[1]), leaves(state)))


def test_training_resumes_from_the_newest_intact_checkpoint_and_sets_the_damaged_one_aside(trained, image_dir,
                                                                                          tmp_path):
    workdir = tmp_path / "w"
    shutil.copytree(trained[0], workdir)
    flip_bytes(largest_file(workdir / "checkpoints" / "4" / "state" / "d"))
    resumed = loop.train_and_evaluate(tiny_config(image_dir, num_steps=6), str(workdir))
    assert_same(resumed, trained[1])  # resumed from 3: exactly the uninterrupted run
    assert (workdir / "damaged" / "4" / "state").is_dir()
    assert checkpoints.all_steps(workdir) == [4, 5, 6]


def test_no_intact_checkpoint_stops_with_one_line_and_moves_nothing(trained, image_dir, tmp_path):
    workdir = tmp_path / "w"
    shutil.copytree(trained[0], workdir)
    for step in (2, 3, 4):
        (workdir / "checkpoints" / str(step) / "state" / "_METADATA").unlink()
    with pytest.raises(checkpoints.DamagedCheckpointError, match=r"no intact checkpoint .*steps \[2, 3, 4\]"):
        loop.train_and_evaluate(tiny_config(image_dir, num_steps=6), str(workdir))
    assert checkpoints.all_steps(workdir) == [2, 3, 4] and not (workdir / "damaged").exists()


def test_resuming_with_another_model_is_one_line_not_damage(trained, image_dir, tmp_path):
    workdir = tmp_path / "w"
    shutil.copytree(trained[0], workdir)
    config = tiny_config(image_dir, num_steps=6)
    config.model.features = 16
    with pytest.raises(checkpoints.ModelMismatchError, match=r"checkpoints/4 holds another model .*\(8,\) there, "
                                                             r"\(16,\) here"):
        loop.train_and_evaluate(config, str(workdir))
    assert checkpoints.all_steps(workdir) == [2, 3, 4] and not (workdir / "damaged").exists()


def test_upscale_never_loads_a_damaged_generator(trained, tmp_path):
    workdir = tmp_path / "w"
    shutil.copytree(trained[0], workdir)
    abstract = jax.eval_shape(lambda: generator_variables(target_state(tiny_config(trained[0]))))
    checkpoints.load_generator_variables(workdir, abstract)  # intact: loads
    flip_bytes(largest_file(workdir / "checkpoints" / "4" / "generator" / "d"), count=16)
    with pytest.raises(checkpoints.DamagedCheckpointError, match="checkpoints/4"):
        checkpoints.load_generator_variables(workdir, abstract)


@pytest.mark.parametrize("damage", ["a truncated array file", "flipped bytes in the array data", "damaged meta"])
def test_a_damaged_init_from_checkpoint_is_one_line(trained, image_dir, tmp_path, damage):
    source = tmp_path / "srresnet"
    shutil.copytree(trained[0], source)
    step = source / "checkpoints" / "4"
    {"a truncated array file": lambda: truncate(largest_file(step / "generator" / "d")),
     "flipped bytes in the array data": lambda: flip_bytes(largest_file(step / "generator" / "d"), count=16),
     "damaged meta": lambda: (step / "meta" / "metadata").write_text("{not json")}[damage]()
    config = tiny_config(image_dir)
    config.init_from = str(source)
    with pytest.raises(checkpoints.DamagedCheckpointError) as raised:
        loop.train_and_evaluate(config, str(tmp_path / "w"))
    assert len(str(raised.value).splitlines()) == 1 and "checkpoints/4" in str(raised.value)


def test_the_shipped_generator_matches_its_checksums():
    meta = json.loads((checkpoints.shipped_checkpoint() / "meta" / "metadata").read_text())
    assert len(meta["checksums"]["generator"]) > 100  # every array of the 16-block SRResNet


# -- signals -----------------------------------------------------------------------------

def test_a_second_ctrl_c_while_a_checkpoint_is_written_waits_for_it(image_dir, tmp_path, monkeypatch,
                                                                       signal_at_batch):
    signal_at_batch(signal.SIGINT)
    wait = checkpoints.wait_until_finished

    def ctrl_c_again_then_wait(manager):
        os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C again during the save
        wait(manager)

    monkeypatch.setattr(checkpoints, "wait_until_finished", ctrl_c_again_then_wait)
    with pytest.raises(KeyboardInterrupt):  # the second Ctrl-C ends the run, once the save is on disk
        loop.train_and_evaluate(tiny_config(image_dir, num_steps=100, checkpoint_every=50), str(tmp_path))
    step, state = checkpoints.restore_newest_intact(tmp_path, target_state(tiny_config(image_dir)))
    assert step == int(state.g.step) >= 1


def test_the_time_limit_writes_a_checkpoint_and_stops(image_dir, tmp_path):
    state = loop.train_and_evaluate(tiny_config(image_dir, num_steps=100, checkpoint_every=50, time_limit_s=1e-3),
                                    str(tmp_path))
    assert int(state.g.step) == 1 and checkpoints.all_steps(tmp_path) == [1]


@pytest.mark.parametrize("stop, code", [("SIGTERM", 143), ("SIGINT", 130), ("time limit", 0)])
def test_the_exit_code_of_train_py_says_why_it_stopped_after_its_checkpoint(image_dir, tmp_path, stop, code):
    workdir = tmp_path / "w"
    limit = "--config.train.time_limit_s=" + ("3" if stop == "time limit" else "0")
    proc = subprocess.Popen([*TRAIN_PY, f"--workdir={workdir}", f"--config.data.image_dir={image_dir}", limit,
                             "--config.train.num_steps=1000000", "--config.train.checkpoint_every=1000000"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        if stop != "time limit":
            metrics = workdir / "metrics.jsonl"
            while not (metrics.exists() and metrics.read_text()):  # training has begun
                assert proc.poll() is None, proc.communicate()[1][-3000:]
                time.sleep(0.1)
            proc.send_signal(getattr(signal, stop))
        err = proc.communicate(timeout=300)[1]
    finally:
        proc.kill()
    assert proc.returncode == code, err[-3000:]
    step = checkpoints.all_steps(workdir)[-1]
    last = err.strip().splitlines()[-1]
    if code:  # a script can tell this from a finished run, and the checkpoint is already on disk
        assert last == (f"train.py: stopped by {stop} at step {step}, after writing its checkpoint; rerun to "
                        f"resume (exit code {code})"), err[-3000:]
    else:
        assert f"time limit 3.0 s reached: checkpoint written at step {step}, exiting" in err


# -- the workdir lock --------------------------------------------------------------------

def test_a_second_run_on_a_live_workdir_refuses_with_one_line(image_dir, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "lock").write_text(json.dumps({"host": socket.gethostname(), "pid": holder.pid}))
        with pytest.raises(WorkdirBusyError, match=f"in use by another training run \\(pid {holder.pid}"):
            loop.train_and_evaluate(tiny_config(image_dir), str(tmp_path))
        assert sorted(p.name for p in tmp_path.iterdir()) == ["lock"]  # nothing else written
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "lock").write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid}))
    with WorkdirLock(tmp_path):
        assert json.loads((tmp_path / "lock").read_text())["pid"] == os.getpid()
    assert "taking over the lock" in caplog.text
    assert not (tmp_path / "lock").exists()  # released


def test_a_lock_held_from_another_host_is_not_taken(tmp_path):
    (tmp_path / "lock").write_text(json.dumps({"host": "elsewhere.example", "pid": 1}))
    with pytest.raises(WorkdirBusyError, match="host elsewhere.example"):
        WorkdirLock(tmp_path).__enter__()


# -- storage errors ------------------------------------------------------------------------

TRAIN_PY = [sys.executable, "train.py", "--config=configs/srresnet.py", "--config.model.num_blocks=1",
            "--config.model.features=8", "--config.data.hr_size=32", "--config.data.in_memory=True",
            "--config.train.batch_size=4", "--config.train.log_every=1"]


def run_train(*args, launcher=()):
    return subprocess.run([*launcher, *TRAIN_PY, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


# Files may not grow past 8 KiB: the kernel fails such writes (EFBIG), as a full disk fails them
# (ENOSPC). Set in a launcher that then execs train.py, not in a preexec_fn, which would fork
# this multithreaded (JAX) process.
LIMIT_FILE_SIZE = [sys.executable, "-c", "import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, "
                   "signal.SIG_IGN); resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 13, 1 << 13)); "
                   "os.execv(sys.argv[1], sys.argv[1:])"]


def test_a_failing_disk_is_one_line_and_older_checkpoints_stay_intact(image_dir, tmp_path):
    workdir = tmp_path / "w"
    loop.train_and_evaluate(tiny_config(image_dir, num_steps=2, checkpoint_every=2), str(workdir))
    # Checkpoint 4's array files are bigger than 8 KiB: writing them fails.
    proc = run_train(f"--workdir={workdir}", f"--config.data.image_dir={image_dir}", "--config.train.num_steps=4",
                     "--config.train.checkpoint_every=2", "--config.train.learning_rate=1e-3",
                     launcher=LIMIT_FILE_SIZE)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: error: writing ") and "File too large" in last, proc.stderr
    assert str(workdir / "checkpoints" / "4") in last and "Traceback" not in proc.stderr
    assert checkpoints.all_steps(workdir) == [2]
    assert checkpoints.restore_newest_intact(workdir, target_state(tiny_config(image_dir)))[0] == 2


def test_an_unwritable_workdir_is_one_line(image_dir, tmp_path):
    (tmp_path / "file").write_text("")
    proc = run_train(f"--workdir={tmp_path / 'file' / 'w'}", f"--config.data.image_dir={image_dir}",
                     "--config.train.num_steps=1")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("train.py: error: cannot create --workdir"), proc.stderr


# -- resumed logs ----------------------------------------------------------------------------

def test_a_resumed_run_logs_each_step_once_and_leaves_no_temporary_folders(image_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    loop.train_and_evaluate(tiny_config(image_dir, checkpoint_every=2), str(tmp_path))
    # As if killed after logging step 4 but before its checkpoint landed:
    shutil.rmtree(tmp_path / "checkpoints" / "4")
    (tmp_path / "checkpoints" / "4.orbax-checkpoint-tmp").mkdir()
    with open(tmp_path / "metrics.jsonl", "a") as file:
        file.write('{"step": 5, "g_lo')  # a row torn by the kill
    loop.train_and_evaluate(tiny_config(image_dir, checkpoint_every=2), str(tmp_path))
    rows = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == [1, 2, 3, 4]
    assert not list(tmp_path.glob("checkpoints/*tmp*"))
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [event.step for event in events.Scalars("g_loss")] == [1, 2, 3, 4]


def test_orbax_write_tasks_abandoned_after_a_failure_are_not_logged_but_other_task_errors_are(caplog):
    """After the one-line StorageError, asyncio would log each abandoned Orbax write's failure
    with a traceback when it collects the task (seen as a flaky last line of stderr)."""
    import asyncio
    import gc
    import os

    import orbax.checkpoint as ocp

    checkpoints.quiet_closed_event_loops()
    source = "async def write():\n    raise OSError(27, 'File too large')\n"
    in_orbax, elsewhere = {}, {}
    exec(compile(source, os.path.join(os.path.dirname(ocp.__file__), "_writer.py"), "exec"), in_orbax)
    exec(compile(source, "/elsewhere/writer.py", "exec"), elsewhere)

    def orphan(write):  # a task that failed and that nobody awaits
        loop = asyncio.new_event_loop()
        loop.create_task(write())
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        orphan(in_orbax["write"])
        orphan(elsewhere["write"])
        gc.collect()
    messages = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert len(messages) == 1 and "/elsewhere/writer.py" in messages[0], messages
