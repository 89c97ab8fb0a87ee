"""The root entry point: `python train.py --config=configs/<variant>.py --workdir=W` runs as the README says."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_train_py_trains_the_quickstart_config_and_writes_its_workdir(tmp_path):
    pytest.importorskip("skimage", reason="the quickstart trains on scikit-image's sample photos")
    workdir = tmp_path / "qs"
    # G alone (no adversarial weight) keeps the discriminator's compilation out of this smoke test.
    proc = run_train("--config=configs/quickstart.py", f"--workdir={workdir}", "--config.model.num_blocks=1",
                     "--config.model.features=8", "--config.loss.adversarial_weight=0", "--config.train.num_steps=3",
                     "--config.train.checkpoint_every=3", "--config.train.log_every=1", "--config.eval.every=3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "astronaut: SR" in proc.stdout and (workdir / "sample_astronaut_x4.png").is_file()
    assert (workdir / "checkpoints" / "3" / "generator").is_dir() and (workdir / "best" / "3").is_dir()
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if "g_loss" in row] == [1, 2, 3]
    assert any("val_psnr" in row for row in rows)


@pytest.mark.parametrize("override, problem", [
    ("--config.data.hr_size=98", "data.hr_size=98 must be a multiple of model.scale=4"),
    ("--config.train.num_steps=0", "train.num_steps=0 must be >= 1 (the step to train to)"),
])
def test_bad_config_value_is_one_line_before_anything_compiles(tmp_path, override, problem):
    proc = run_train("--config=configs/srresnet.py", f"--workdir={tmp_path / 'w'}", override)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"train.py: error: bad config: {problem}"]
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("override, line", [
    ("--config.train.num_step=5", "--config.train.num_step is not a config field: did you mean --config.train.num_steps?"),
    ("--config.trian.num_steps=5", "--config.trian.num_steps is not a config field: did you mean "
                                   "--config.train.num_steps?"),
    ("--config.train.num_steps=abc", "--config.train.num_steps=abc: config.train.num_steps takes an integer, "
                                     "e.g. --config.train.num_steps=1000000"),
    ("--config.data.in_memory=maybe", "--config.data.in_memory=maybe: config.data.in_memory takes True or False, "
                                      "e.g. --config.data.in_memory=False"),
    ("--config.distributed=True", "--config.distributed=True: config.distributed is a group of fields "
                                  "(coordinator_address, enabled, num_processes, process_id, timeout_s), not a value; "
                                  "set one of them, e.g. --config.distributed.enabled=True"),
    ("--workdri=x", "unknown flag --workdri: did you mean --workdir? (python train.py --help lists the flags and "
                    "config fields)"),
])
def test_a_wrong_override_is_one_line_with_the_fix(tmp_path, override, line):
    proc = run_train("--config=configs/srresnet.py", f"--workdir={tmp_path / 'w'}", override)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"train.py: error: {line}"]
    assert not (tmp_path / "w").exists()


CONFIG_FILES = {  # a config file's content: what the one line says about it
    "def get_config(:\n": "is not valid Python (invalid syntax, line 1)",
    "x = 1\n": "defines no get_config()",
    "def get_config():\n    raise RuntimeError('boom')\n": "get_config() raised RuntimeError: boom (line 2)",
    "def get_config():\n    return 5\n": "get_config() returned int, not an ml_collections.ConfigDict",
}


@pytest.mark.parametrize("content", CONFIG_FILES)
@pytest.mark.parametrize("override", [(), ("--config.train.num_steps=5",)])
def test_a_broken_config_file_is_one_line_naming_it(tmp_path, content, override):
    config = tmp_path / "my_config.py"
    config.write_text(content)
    proc = run_train(f"--config={config}", f"--workdir={tmp_path / 'w'}", *override)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"train.py: error: --config={config}"), proc.stderr
    assert CONFIG_FILES[content] in lines[0] and "--config=configs/quickstart.py" in lines[0]
    assert not (tmp_path / "w").exists()


def test_a_missing_config_file_is_one_line(tmp_path):
    proc = run_train("--config=configs/nonexistent.py", f"--workdir={tmp_path / 'w'}")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "nonexistent.py" in proc.stderr and "--config=configs/quickstart.py" in proc.stderr
    assert not (tmp_path / "w").exists()


def test_help_lists_the_configs_and_their_fields_and_exits_0():
    proc = run_train("--help")
    assert proc.returncode == 0
    assert "srgan.py (SRGAN-VGG54)" in proc.stdout and "quickstart.py" in proc.stdout
    assert "adversarial_weight: 0.0" in proc.stdout and "batch_size: 16" in proc.stdout
