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

from srgan_jax import benchmark, parallel
from srgan_jax.config import run_spec
from srgan_jax.configs import quickstart
from srgan_jax.errors import UserError
from srgan_jax.networks.generator import Generator
from srgan_jax.training import validation
from parallel_equivalence import CALIBRATION, RUNS  # tests/ is on sys.path (pytest's rootdir import)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def distances(tmp_path_factory):
    """{(kind, leaf): {"norm": |float64 result|, run: |run - float64 result|}} (parallel_equivalence.py)."""
    out = tmp_path_factory.mktemp("equivalence") / "distances.npz"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, str(ROOT / "tests" / "parallel_equivalence.py"), str(out)],
                   cwd=ROOT, env=env, check=True, timeout=600)
    with np.load(out) as data:
        return {tuple(key.split("/", 1)): dict(zip(("norm",) + RUNS, data[key])) for key in data.files}


def group(leaf):
    """(network, kind) of a leaf name, e.g. ('d', 'mu'); params are ('g' | 'd', 'params')."""
    net = "d" if "].d." in leaf else "g"
    for kind in ("params", "mu", "nu", "batch_stats", "count", "step"):
        if kind in leaf:
            return net, kind
    return net, "metrics"


# A parallel step is one more float32 evaluation of the single-device step's math, in other
# summation orders and kernels. How far such evaluations land from the float64 result depends
# on the machine (AVX2 or AVX-512, which convolution kernels XLA picks) and on each tensor's
# conditioning (D's BatchNorm backward cancels, amplifying rounding in its first layers
# ~1000-fold for some kernels): so it is measured per tensor, on the machine running the test,
# as the largest distance of the calibration runs (`CALIBRATION`), floored at float32
# resolution of the largest tensor of the same group. A correct parallel step stays within
# TOLERANCE times that; the wrong ones (`local_batch_norm`, `no_pmean`) are 10^5 and more off.
TOLERANCE = 8.0
FLOAT32_EPS = 2.0**-24


def worst_ratio(distances, kind, run):
    """max over leaves of |run - float64| / max(calibration distances, float32 floor), and its leaf.

    Params are left out: after Adam's first step each is -lr * sign(gradient), so a gradient
    that is zero in exact arithmetic (a conv bias before BatchNorm) flips between +-lr with
    rounding; the gradients themselves are compared through Adam's moments (mu = 0.1 g, nu =
    0.001 g^2) and BatchNorm's statistics and the losses directly.
    """
    leaves = {leaf: d for (k, leaf), d in distances.items() if k == kind and group(leaf)[1] != "params"}
    largest = {}
    for leaf, d in leaves.items():
        largest[group(leaf)] = max(largest.get(group(leaf), 0.0), d["norm"])
    worst = (0.0, None)
    for leaf, d in leaves.items():
        allowed = max(max(d[name] for name in CALIBRATION), FLOAT32_EPS * largest[group(leaf)])
        ratio = 0.0 if d[run] == 0 else (np.inf if allowed == 0 else d[run] / allowed)
        worst = max(worst, (ratio, leaf), key=lambda pair: pair[0])
    return worst


@pytest.mark.parametrize("kind", ["g", "gan", "gan_joint"])
@pytest.mark.parametrize("run", ["mesh", "pmap"])
def test_parallel_step_equals_single_device_step_within_float32_error(distances, kind, run):
    ratio, leaf = worst_ratio(distances, kind, run)
    assert ratio <= TOLERANCE, f"{run} {kind} step: {leaf} is {ratio:.3g} times the float32 error"


@pytest.mark.parametrize("run", ["local_batch_norm", "no_pmean"])
def test_the_comparison_rejects_wrong_parallel_steps(distances, run):
    ratio, leaf = worst_ratio(distances, "gan", run)
    assert ratio > 1000 * TOLERANCE, f"{run} GAN step passed: worst {leaf} only {ratio:.3g}"


def test_the_steps_really_update_both_networks(distances):
    """Guards the comparison against comparing untouched states: D's gradient is nonzero."""
    assert distances[("gan", "[0].d.opt_state[1].count")]["norm"] == 1
    assert distances[("gan", "[0].d.opt_state[0].mu['Dense_1']['kernel']")]["norm"] > 0


def test_batch_not_divisible_by_devices_is_a_clear_error():
    with pytest.raises(UserError, match="not divisible by the 8 devices"):
        parallel.check_batch_size(12, 8)
    parallel.check_batch_size(16, 8)


def test_mesh_prefetch_places_every_batch_in_order():
    mesh = parallel.MeshStrategy(jax.devices()[:1])
    batches = [{"hr": np.full((2, 4, 4, 3), i, np.float32)} for i in range(5)]
    placed = list(mesh.place_batches(iter(batches)))
    assert len(placed) == 5
    for i, batch in enumerate(placed):
        assert batch["hr"].sharding == mesh.sharded
        np.testing.assert_array_equal(np.asarray(batch["hr"]), batches[i]["hr"])


def test_pmap_strategy_splits_batches_and_returns_one_host_copy():
    pmap = parallel.PmapStrategy()
    devices = jax.local_device_count()
    batch = {"x": np.arange(2 * devices * 3, dtype=np.float32).reshape(2 * devices, 3)}
    placed = pmap.place_batch(batch)
    assert placed["x"].shape == (devices, 2, 3)

    def step(state, batch, axis_name):
        total = jax.lax.psum(batch["x"].sum(), axis_name)
        return state + total, {"total": total}

    state, metrics = pmap.wrap_train_step(step)(pmap.place_state(jnp.zeros(())), placed)
    assert float(pmap.to_host(metrics)["total"]) == float(batch["x"].sum())
    assert pmap.to_host(state).shape == ()


def test_validation_gives_the_same_images_under_mesh_and_pmap():
    """One G state validated through each strategy (placed as each places state). Both are
    float32 evaluations of the same network: a 1-block, 8-feature G sums at most 9*9*8 = 648
    terms per output, so the two differ by well under 1e-3 of SR's [-1, 1] range after its
    ~6 layers, far below one 8-bit level (2/255): the uint8 images match to one level, and that
    only where a value sits on a rounding boundary."""
    generator = Generator(num_blocks=1, features=8, scale=2)
    variables = generator.init(jax.random.key(3), jnp.zeros((1, 8, 8, 3)))
    rng = np.random.default_rng(0)
    images = {"a.png": rng.integers(0, 256, (40, 36, 3), dtype=np.uint8),
              "b.png": rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)}
    results = {}
    for name, strategy in (("mesh", parallel.MeshStrategy()), ("pmap", parallel.PmapStrategy())):
        results[name] = validation.Validator(images, generator, 2, strategy)(strategy.place_state(variables))
    for image, hr in images.items():
        mesh, pmap = (results[name][image]["sr"].astype(int) for name in ("mesh", "pmap"))
        assert mesh.shape == pmap.shape == hr.shape
        assert np.abs(mesh - pmap).max() <= 1 and np.mean(mesh != pmap) < 0.01
        assert results["mesh"][image]["bicubic_psnr"] == results["pmap"][image]["bicubic_psnr"]


def test_an_unknown_strategy_is_refused_where_it_is_given():
    config = quickstart.get_config()
    config.parallel = "dp"
    with pytest.raises(UserError, match=r"parallel='dp' is not one of \('mesh', 'pmap'\)"):
        run_spec(config)
    with pytest.raises(UserError, match="--parallel dp: use one of mesh, pmap"):
        benchmark.Settings(batch=2, hr_size=32, blocks=1, features=8, dtype="float32", parallel="dp", steps=1,
                           warmup=0, infer_lr_size=8)
