"""Train SRResNet / SRGAN (Ledig et al., CVPR 2017).

    python train.py --config=configs/<variant>.py --workdir=W [--config.<field>=<value> ...]

Configs: srresnet.py (SRResNet-MSE), srresnet_x2.py / srresnet_x8.py (the same at x2 / x8),
srresnet_vgg22.py, srgan_mse.py, srgan_vgg22.py, srgan.py (SRGAN-VGG54), quickstart.py
(minutes on a CPU, no downloads). Every field below
(configs/default.py, the paper's values) can be overridden, e.g. --config.train.num_steps=100.
A workdir that holds checkpoints is resumed. Exit codes: 0 done (or train.time_limit_s
reached, checkpoint written), 2 a bad flag, config or input file (one line), 130 / 143
stopped by Ctrl-C / SIGTERM after writing a checkpoint.
"""

import ast
import difflib
import importlib.machinery
import logging
import os
import re
import sys
import traceback
import types
from typing import Any, NoReturn

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from srgan_jax.errors import UserError, first_line

# TensorFlow (tf.data) shares the process with JAX: keep it off the accelerators' memory.
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, summaries and samples.")
config_flags.DEFINE_config_file("config", None, "Training configuration file.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def usage() -> str:
    """The module docstring and the config fields with their defaults."""
    from srgan_jax.configs import default

    return f"{__doc__}\nFields (configs/default.py):\n{default.get_config()}"


def fail(message: str, code: int = 2, several_processes: bool = False) -> NoReturn:
    print(f"train.py: error: {message}", file=sys.stderr)
    if several_processes:  # the peers must not wait for this process at exit
        from srgan_jax import multihost

        multihost.exit_now(code)
    sys.exit(code)


_CONFIG_HINT = "pass a file from configs/, e.g. --config=configs/quickstart.py"


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing; a mistake in the flags or in the config file is one line (exit 2).

    absl, ml_collections and the config file's own code raise many types while flags are
    parsed (a missing file even waits until the config is first used), so on any error, or a
    config that is not a ConfigDict, the file and every override are checked again here.
    """
    try:
        rest = FLAGS(argv)
    except Exception as err:  # flags.Error, AttributeError/KeyError (unknown field), the file's own errors
        fail(_flag_problem(argv[1:], err))
    if not isinstance(FLAGS.config, ml_collections.ConfigDict):
        fail(_flag_problem(argv[1:], None))
    return rest


def _flag_problem(args: list[str], err: BaseException | None) -> str:
    """One line saying which flag, config file or override is wrong, and the fix."""
    message = str(err) if err is not None else ""
    missing = re.search(r"Flag --(\w+) must have a value other than None", message)
    if missing:
        return (f"--{missing.group(1)} is required: e.g. python train.py --config=configs/quickstart.py "
                "--workdir=workdirs/quickstart")
    unknown = re.search(r"Unknown command line flag '([^']+)'", message)
    if unknown:
        close = difflib.get_close_matches(unknown.group(1), list(FLAGS), n=1)
        return (f"unknown flag --{unknown.group(1)}" + (f": did you mean --{close[0]}?" if close else "")
                + " (python train.py --help lists the flags and config fields)")
    spec = next((a.split("=", 1)[1] for a in args if a.startswith(("--config=", "-config="))), None)
    if spec is None and "--config" in args[:-1]:
        spec = args[args.index("--config") + 1]
    if spec is not None:
        config, problem = _load_config_file(spec)
        if problem:
            return problem
        from srgan_jax import config as config_lib

        paths = config_lib.field_paths(config)
        for arg in args:
            match = re.match(r"-{1,2}(?:no)?config\.([^=]+)", arg)
            if match and match.group(1) not in paths:
                close = config_lib.closest_field(match.group(1), config)
                return (f"--config.{match.group(1)} is not a config field" +
                        (f": did you mean --config.{close}?" if close else "; python train.py --help lists them"))
        wrong = re.match(r"flag --config\.([\w.]+)=(.*?): ", message, re.S)
        if wrong and wrong.group(1) in paths:
            return _wrong_value(wrong.group(1), wrong.group(2), paths)
    line = (message.strip().splitlines() or [type(err).__name__])[0]
    return f"{line} (python train.py --help lists the flags and config fields)"


def _load_config_file(spec: str) -> tuple[Any, str | None]:
    """(get_config()'s result, None), or (None, what is wrong with the file); `spec` is FILE[:ARG]."""
    path, *arg = spec.split(":", 1)
    name = "train_config_check"
    try:
        loader = importlib.machinery.SourceFileLoader(name, path)
        module = types.ModuleType(name)
        module.__file__ = path
        loader.exec_module(module)
    except OSError as err:
        return None, f"--config={spec} could not be loaded ({err.strerror or err}): {_CONFIG_HINT}"
    except SyntaxError as err:
        return None, f"--config={spec} is not valid Python ({err.msg}, line {err.lineno}): fix it, or {_CONFIG_HINT}"
    except Exception as err:  # whatever the file's own code raises
        return None, f"--config={spec} raised {_where(err, path)}: fix it, or {_CONFIG_HINT}"
    if not callable(getattr(module, "get_config", None)):
        return None, (f"--config={spec} defines no get_config(): a config file returns an ml_collections.ConfigDict "
                      f"from get_config(), as configs/*.py do; {_CONFIG_HINT}")
    try:
        config = module.get_config(*arg)
    except Exception as err:
        return None, f"--config={spec}: get_config() raised {_where(err, path)}: fix it, or {_CONFIG_HINT}"
    if not isinstance(config, ml_collections.ConfigDict):
        return None, (f"--config={spec}: get_config() returned {type(config).__name__}, not an "
                      f"ml_collections.ConfigDict; {_CONFIG_HINT}")
    return config, None


def _where(err: BaseException, path: str) -> str:
    """"RuntimeError: boom (line 2)": the error and the line of `path` that raised it."""
    lines = [line for frame, line in traceback.walk_tb(err.__traceback__)
             if os.path.abspath(frame.f_code.co_filename) == os.path.abspath(path)]
    return first_line(err) + (f" (line {lines[-1]})" if lines else "")


_KINDS = {bool: "True or False", int: "an integer", float: "a number", str: "a string", tuple: "a tuple"}


def _wrong_value(path: str, value: str, paths: dict[str, Any]) -> str:
    """A value the field's type cannot take: what the field takes, with an example."""
    default = paths[path]
    if not isinstance(default, ml_collections.ConfigDict):
        kind = _KINDS.get(type(default), f"a {type(default).__name__}")
        return f"--config.{path}={value}: config.{path} takes {kind}, e.g. --config.{path}={default}"
    # A group: the example is its first field that takes a value like the one given.
    names = list(default.keys())
    try:
        given = type(ast.literal_eval(value))
    except (ValueError, SyntaxError):
        given = str
    name = next((n for n in names if type(default[n]) is given), None)
    example = f"{name}={value}" if name else f"{names[0]}={default[names[0]]}"
    return (f"--config.{path}={value}: config.{path} is a group of fields ({', '.join(names)}), not a value; "
            f"set one of them, e.g. --config.{path}.{example}")


class _DropOrbaxLogs(logging.Filter):
    """Orbax logs each failure (with its traceback) before raising it; the raised error is reported in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "orbax" not in record.pathname


def main(argv):
    del argv
    config = FLAGS.config
    from srgan_jax.training.loop import Interrupted, train_and_evaluate

    logging.getLogger("srgan_jax").setLevel(logging.INFO)
    logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax logs every file it writes at INFO
    logging.getLogger("absl").addFilter(_DropOrbaxLogs())
    several = bool(config.distributed.enabled)
    try:
        train_and_evaluate(config, FLAGS.workdir)
    except Interrupted as stop:  # the checkpoint is on disk; the exit code tells a script it was cut short
        print(f"train.py: {stop} (exit code {stop.exit_code})", file=sys.stderr)
        sys.exit(stop.exit_code)
    except UserError as err:
        fail(str(err), several_processes=several)
    except KeyboardInterrupt:
        fail("interrupted twice: stopped without a new checkpoint; rerun to resume from the last one", 130,
             several)
    except Exception as err:
        if not several:  # a bug: its traceback helps
            raise
        import jax

        fail(f"process {jax.process_index()} stopped ({first_line(err)}): a peer process died or failed; "
             "the checkpoints written so far are intact, rerun all processes to resume", 1, several)


if __name__ == "__main__":
    if any(arg in ("-h", "--help", "--helpshort") for arg in sys.argv[1:]):
        print(usage())
        sys.exit(0)
    app.run(main, flags_parser=parse_flags)
