"""Test-wide setup: the repository root on sys.path (for `benchmarks.torch_reference`), a
small folder of training images, and one XLA compilation cache for the session.

Many tests train the same tiny networks again (in this process, in xdist workers and in
subprocesses, which inherit the variable): the cache compiles each program once. It only
saves time; a cached executable is the one XLA would build.
"""

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # the first process of the session makes it
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="srgan-jax-tests-xla-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory) -> Path:
    """Six 80x64 RGB PNGs: bicubic-enlarged random pixels (learnable, unlike white noise)."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(6):
        small = rng.integers(0, 256, size=(8, 10, 3), dtype=np.uint8)
        Image.fromarray(small).resize((80, 64), Image.BICUBIC).save(folder / f"im{i}.png")
    return folder


def write_tiny_checkpoint(workdir: Path, scale: int = 4) -> Path:
    """Write to `workdir` a 1-block, 8-feature generator at `scale` (step 2) whose BatchNorm
    running averages are away from (0, 1), so restoring them wrongly would show."""
    import jax
    import jax.numpy as jnp

    from srgan_jax import checkpoints, models
    from srgan_jax.config import run_spec
    from srgan_jax.configs import quickstart
    from srgan_jax.training.state import create_state, generator_variables

    config = quickstart.get_config()
    config.model.num_blocks, config.model.features, config.model.scale = 1, 8, scale
    config.data.hr_size = 32
    config.loss.adversarial_weight = 0.0
    spec = run_spec(config)
    generator, _ = models.create_models(spec)
    state = create_state(spec, jax.random.key(1), generator, None)
    rng = np.random.default_rng(0)
    stats = jax.tree.map(lambda x: jnp.asarray(rng.uniform(0.5, 1.5, x.shape), x.dtype), state.g.batch_stats)
    state = state.replace(g=state.g.replace(batch_stats=stats))
    latest, _ = checkpoints.create_managers(workdir, keep=1)
    checkpoints.save(latest, 2, state, generator_variables(state), config)
    latest.wait_until_finished()
    return workdir


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A workdir holding `write_tiny_checkpoint`'s x4 generator."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("workdir"))


@pytest.fixture
def signal_at_batch(monkeypatch):
    """`signal_at_batch(sig)`: the training loop sends `sig` to its own process when it takes batch 3."""
    from srgan_jax.training import loop

    def arm(sig: int, index: int = 3) -> None:
        batches = loop.create_train_iterator

        def batches_then_signal(*args):
            for i, batch in enumerate(batches(*args)):
                if i == index:
                    os.kill(os.getpid(), sig)
                yield batch

        monkeypatch.setattr(loop, "create_train_iterator", batches_then_signal)

    return arm
