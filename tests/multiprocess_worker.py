"""One process of a multi-process training run on localhost CPU, for tests/test_multiprocess.py.

    python tests/multiprocess_worker.py WORKDIR IMAGE_DIR PARALLEL NUM_STEPS PORT NUM_PROCESSES PROCESS_ID OUT.npz

Trains a 1-block, 8-feature SRResNet (global batch 4) with `train_and_evaluate` and writes
the final state it returns, as this process sees it, to OUT.npz (one array per leaf).
"""

import sys

import jax
import numpy as np

from srgan_jax.configs import default
from srgan_jax.training import loop


def tiny_config(image_dir: str, parallel: str, num_steps: int, port: int, num_processes: int, process_id: int):
    config = default.get_config()
    config.model.num_blocks, config.model.features = 1, 8
    config.data.hr_size, config.data.in_memory, config.data.image_dir = 32, True, image_dir
    config.parallel = parallel
    config.train.batch_size, config.train.num_steps = 4, num_steps
    config.train.learning_rate = 1e-3
    config.train.checkpoint_every, config.train.log_every = 3, 1
    if num_processes > 1:
        config.distributed.enabled = True
        config.distributed.coordinator_address = f"127.0.0.1:{port}"
        config.distributed.num_processes, config.distributed.process_id = num_processes, process_id
        config.distributed.timeout_s = 30
    return config


def main(workdir, image_dir, parallel, num_steps, port, num_processes, process_id, out):
    config = tiny_config(image_dir, parallel, int(num_steps), int(port), int(num_processes), int(process_id))
    state = loop.train_and_evaluate(config, workdir)
    leaves = jax.tree.leaves(jax.device_get(state))
    np.savez(out, *[np.asarray(x) for x in leaves])


if __name__ == "__main__":
    main(*sys.argv[1:])
