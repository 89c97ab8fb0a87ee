"""Train SRResNet / SRGAN (Ledig et al., CVPR 2017).

    python train.py --config=configs/<variant>.py --workdir=W [--config.<field>=<value> ...]

Configs: srresnet.py (SRResNet-MSE), srresnet_vgg22.py, srgan_mse.py, srgan_vgg22.py,
srgan.py (SRGAN-VGG54), quickstart.py (minutes on a CPU, no downloads). Every field below
(configs/default.py, the paper's values) can be overridden, e.g. --config.train.num_steps=100.
A workdir that holds checkpoints is resumed.
"""

import logging
import os
import sys
import threading
from typing import NoReturn

from absl import app, flags
from ml_collections import config_flags

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


def _quiet_after_failed_save(default_hook):
    """A failed asynchronous save leaves Orbax's writer threads posting to a closed event loop;
    their tracebacks would bury the one-line error, so exactly that error is dropped."""

    def hook(args):
        if not (args.exc_type is RuntimeError and str(args.exc_value) == "Event loop is closed"):
            default_hook(args)

    return hook


class _DropOrbaxLogs(logging.Filter):
    """Orbax logs each failure (with its traceback) before raising it; the raised error is reported in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "orbax" not in record.pathname


def main(argv):
    del argv
    config = FLAGS.config
    try:
        config.get("train")  # config_flags reports a file that failed to load on first use
    except OSError as err:
        fail(f"--config could not be loaded ({str(err).strip().splitlines()[-1].strip()}): "
             "pass a file from configs/, e.g. --config=configs/quickstart.py")
    from srgan_jax.errors import UserError, first_line
    from srgan_jax.training.loop import train_and_evaluate

    logging.getLogger("srgan_jax").setLevel(logging.INFO)
    logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax logs every file it writes at INFO
    logging.getLogger("absl").addFilter(_DropOrbaxLogs())
    threading.excepthook = _quiet_after_failed_save(threading.excepthook)
    sys.unraisablehook = _quiet_after_failed_save(sys.unraisablehook)
    several = bool(config.distributed.enabled)
    try:
        train_and_evaluate(config, FLAGS.workdir)
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
    app.run(main)
