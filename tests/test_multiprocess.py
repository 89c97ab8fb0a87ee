"""Several processes as one run, on localhost CPU: same state everywhere, one checkpoint,
resume by any number of processes, a stop reaching every process, a dead peer.

Each process is a real `jax.distributed` process (coordinator on 127.0.0.1), one CPU device
each; the model is a 1-block, 8-feature SRResNet, so each run takes seconds.
"""

import json
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
from srgan_jax.training.state import create_state

sys.path.insert(0, str(Path(__file__).parent))
import multiprocess_worker  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).parent / "multiprocess_worker.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_processes(workdir, image_dir, parallel, num_steps, count, tmp_path, tag):
    """Run `count` worker processes to completion; returns each one's final state leaves."""
    port = free_port()
    outs = [tmp_path / f"{tag}_{i}.npz" for i in range(count)]
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(workdir), str(image_dir), parallel, str(num_steps),
                               str(port), str(count), str(i), str(outs[i])],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(count)]
    logs = [proc.communicate(timeout=300)[0] for proc in procs]
    for proc, log in zip(procs, logs):
        assert proc.returncode == 0, log[-3000:]
    return [[data[k] for k in data.files] for data in map(np.load, outs)]


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def restore_in_this_process(workdir, image_dir):
    """The newest checkpoint restored here: one process, one device."""
    config = multiprocess_worker.tiny_config(str(image_dir), "mesh", 1, 0, 1, 0)
    generator, discriminator = models.create_models(run_spec(config), None)
    target = create_state(run_spec(config), jax.random.key(0), generator, discriminator)
    step, state = checkpoints.restore_newest_intact(workdir, target)
    return step, [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state))]


@pytest.mark.parametrize("parallel", ["mesh", "pmap"])
def test_two_processes_hold_one_state_write_one_checkpoint_and_resume(image_dir, tmp_path, parallel):
    workdir = tmp_path / "w"
    first = run_processes(workdir, image_dir, parallel, 3, 2, tmp_path, "first")
    assert_same(first[0], first[1])  # replicated: bit-identical in both processes
    assert checkpoints.all_steps(workdir) == [3]
    assert not list((workdir / "checkpoints").glob("*tmp*"))
    # One process (one device) restores what two processes wrote: the very same arrays.
    step, restored = restore_in_this_process(workdir, image_dir)
    assert step == 3
    assert_same(restored, first[0])
    if parallel == "mesh":  # resume by two processes, then by one (pmap restores through the same code)
        second = run_processes(workdir, image_dir, parallel, 5, 2, tmp_path, "second")
        assert_same(second[0], second[1])
        assert checkpoints.all_steps(workdir) == [3, 5]
        # Resume by one process from the two-process checkpoint.
        alone = run_processes(workdir, image_dir, parallel, 6, 1, tmp_path, "alone")[0]
        step, restored = restore_in_this_process(workdir, image_dir)
        assert step == 6
        assert_same(restored, alone)
        rows = [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]
        assert rows == list(range(1, 7))


def launch_train_py(workdir, image_dir, count, extra=()):
    port = free_port()
    args = ["--config=configs/srresnet.py", f"--workdir={workdir}", "--config.model.num_blocks=1",
            "--config.model.features=8", "--config.data.hr_size=32", "--config.data.in_memory=True",
            f"--config.data.image_dir={image_dir}", "--config.train.batch_size=4",
            "--config.train.num_steps=100000", "--config.train.log_every=2", "--config.distributed.enabled=True",
            f"--config.distributed.coordinator_address=127.0.0.1:{port}",
            f"--config.distributed.num_processes={count}", *extra]
    return [subprocess.Popen([sys.executable, "train.py", *args, f"--config.distributed.process_id={i}"],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(count)]


def wait_for(predicate, procs, timeout=240):
    end = time.monotonic() + timeout
    while not predicate():
        assert all(proc.poll() is None for proc in procs), [proc.communicate()[1][-2000:] for proc in procs]
        assert time.monotonic() < end, "timed out"
        time.sleep(0.2)


def test_a_signal_to_one_process_stops_every_process_at_one_step_with_one_checkpoint(image_dir, tmp_path):
    workdir = tmp_path / "w"
    procs = launch_train_py(workdir, image_dir, 2, ["--config.train.checkpoint_every=100000"])
    wait_for(lambda: (workdir / "metrics.jsonl").exists() and (workdir / "metrics.jsonl").read_text(), procs)
    procs[1].send_signal(signal.SIGTERM)  # the other process is not signalled
    errs = [proc.communicate(timeout=120)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [143, 143], errs  # both: interrupted by SIGTERM
    steps = checkpoints.all_steps(workdir)
    assert len(steps) == 1 and steps[0] % 2 == 0  # one checkpoint, at a sync step (log_every=2)
    for err in errs:
        assert f"checkpoint written at step {steps[0]}, exiting" in err


def test_a_dead_peer_makes_the_survivor_exit_with_one_line_and_intact_checkpoints(image_dir, tmp_path):
    workdir = tmp_path / "w"
    procs = launch_train_py(workdir, image_dir, 2, ["--config.train.checkpoint_every=2",
                                                    "--config.distributed.timeout_s=20"])
    wait_for(lambda: len(checkpoints.all_steps(workdir)) >= 1, procs)
    procs[1].kill()
    killed = time.monotonic()
    _, err = procs[0].communicate(timeout=120)
    # The survivor's next collective fails at once; the bound is the coordination timeout
    # (the promise), plus slack for the step and save in flight on a slow machine.
    assert time.monotonic() - killed < 20 + 10
    assert procs[0].returncode not in (0, None)
    last = err.strip().splitlines()[-1]
    assert last.startswith("train.py: error: process 0 stopped") and "a peer process died" in last, err[-3000:]
    step, _ = restore_in_this_process(workdir, image_dir)
    assert step == checkpoints.all_steps(workdir)[-1] >= 2


def test_distributed_without_a_cluster_or_coordinator_is_one_line(image_dir, tmp_path):
    proc = subprocess.run([sys.executable, "train.py", "--config=configs/srresnet.py", f"--workdir={tmp_path / 'w'}",
                           "--config.data.in_memory=True", f"--config.data.image_dir={image_dir}",
                           "--config.distributed.enabled=True"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: error: jax.distributed.initialize failed") and "coordinator_address" in last
