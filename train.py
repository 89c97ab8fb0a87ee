"""Train SRResNet / SRGAN: python train.py --config=configs/srgan.py --workdir=W [--config.x=y]."""

import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

# TensorFlow (tf.data) shares the process with JAX: keep it off the accelerators' memory.
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, summaries and samples.")
config_flags.DEFINE_config_file("config", None, "Training configuration file.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    from srgan_jax.errors import UserError
    from srgan_jax.training.loop import train_and_evaluate

    logging.getLogger("srgan_jax").setLevel(logging.INFO)
    logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax logs every file it writes at INFO
    try:
        train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except UserError as err:
        print(f"train.py: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
