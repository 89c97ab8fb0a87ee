"""One device, an 8-device jit mesh and 8-device pmap give the same train step (SPEC:
synchronised BatchNorm over the global batch), for the G-only and the GAN step."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srgan_jax import parallel, xla_cpu
from srgan_jax.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from parallel_equivalence import LEARNING_RATE  # noqa: E402


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("equivalence") / "steps.npz"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, str(ROOT / "tests" / "parallel_equivalence.py"), str(out)],
                   cwd=ROOT, env=env, check=True, timeout=600)
    return dict(np.load(out))


def group(key):
    """(network, kind) of a flattened leaf name, e.g. ('g', 'mu')."""
    net = "d" if "].d." in key else "g"
    for kind in ("params", "mu", "nu", "batch_stats", "metrics", "step"):
        if kind in key:
            return net, kind
    return net, "other"


@pytest.mark.parametrize("kind", ["g", "gan"])
@pytest.mark.parametrize("other", ["mesh", "pmap"])
def test_parallel_step_equals_single_device_step(results, kind, other):
    single = {k.split("/", 2)[2]: v for k, v in results.items() if k.startswith(f"{kind}/single/")}
    assert single, "no results"
    scale = {}
    for key, value in single.items():
        scale[group(key)] = max(scale.get(group(key), 0.0), float(np.abs(value).max(initial=0)))
    for key, expected in single.items():
        actual = results[f"{kind}/{other}/{key}"]
        net, leaf_kind = group(key)
        if leaf_kind in ("mu", "nu"):
            # Gradients (Adam moments after one step: 0.1 g and 0.001 g^2). Float32 sums in
            # another order over 8 shards: 1e-4 of the largest gradient of the network.
            np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4 * scale[(net, leaf_kind)], err_msg=key)
        elif leaf_kind == "params":
            # Adam's first step is +-lr wherever the gradient is exactly zero in exact
            # arithmetic (conv bias before BatchNorm), so float noise may flip its sign.
            np.testing.assert_allclose(actual, expected, rtol=0, atol=2.5 * LEARNING_RATE, err_msg=key)
        else:  # losses, D(real)/D(fake), PSNR, BatchNorm running statistics, step
            np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6, err_msg=key)


def test_gan_step_really_updates_both_networks(results):
    """Guards the comparison above against comparing two untouched states."""
    assert results["gan/single/['state'].g.step"] == 1
    assert results["gan/single/['state'].d.step"] == 1
    assert np.abs(results["gan/single/['state'].d.opt_state[0].mu['Dense_1']['kernel']"]).max() > 0


def test_batch_not_divisible_by_devices_is_a_clear_error():
    with pytest.raises(UserError, match="not divisible by the 8 devices"):
        parallel.check_batch_size(12, 8)
    parallel.check_batch_size(16, 8)


def test_prefetch_to_mesh_places_every_batch_in_order():
    mesh = parallel.create_mesh(jax.devices()[:1])
    batches = [{"hr": np.full((2, 4, 4, 3), i, np.float32)} for i in range(5)]
    placed = list(parallel.prefetch_to_mesh(iter(batches), mesh, size=2))
    assert len(placed) == 5
    for i, batch in enumerate(placed):
        assert batch["hr"].sharding == parallel.batch_sharding(mesh)
        np.testing.assert_array_equal(np.asarray(batch["hr"]), batches[i]["hr"])


@pytest.mark.skipif(not xla_cpu.on_cpu(), reason="compiler options are only set for XLA:CPU")
def test_pmap_step_compiles_once_per_signature_with_the_options():
    def step(state, batch, axis_name):
        return state + jax.lax.pmean(batch.sum(), axis_name), {"n": batch.shape[0]}

    pmapped = parallel.pmap_step(step)
    assert isinstance(pmapped, parallel.PmapWithOptions) and pmapped.options == xla_cpu.compiler_options()
    devices = jax.local_device_count()
    for size in (2, 2, 3):
        state, _ = pmapped(jnp.zeros((devices,)), np.ones((devices, size), np.float32))
        np.testing.assert_allclose(state, size)
    assert len(pmapped._executables) == 2
