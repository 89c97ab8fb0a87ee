"""Run by test_parallel.py in a subprocess with 8 host CPU devices. From one float32 state and
batch it runs one train step (G-only "g" and "gan") as:
- "single": one device, compiled as training compiles it (`xla_cpu.jit`);
  "single_xla_defaults": the same compiled with XLA's default options (other convolution
  kernels); "permuted_1", "permuted_2": one device with the batch's images in another order.
  These are the same math in other float32 kernels and summation orders: their distance from
  the float64 result measures each tensor's float32 error on this machine;
- "mesh": an 8-device jit mesh; "pmap": pmap over 8 devices;
- "float64": one device in float64 (the reference);
- "local_batch_norm", "no_pmean" (GAN step only; NaN for "g"): deliberately wrong pmap runs
  (BatchNorm statistics over each device's slice; gradients and metrics not averaged) that the
  comparison must reject.
Writes, per leaf (Adam moments, BatchNorm statistics, metrics, ...), the L2 distance of each
float32 run from the float64 result and that result's L2 norm: "<kind>/<leaf>" -> [norm,
distance per run in RUNS order]."""

import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np

from srgan_jax.config import run_spec
from srgan_jax import parallel
from srgan_jax.configs import quickstart
from srgan_jax.models import create_models
from srgan_jax.networks import losses
from srgan_jax.networks.discriminator import Discriminator
from srgan_jax.networks.generator import Generator
from srgan_jax.training.state import create_state
from srgan_jax.training.steps import gan_train_step, generator_train_step

CALIBRATION = ("single", "single_xla_defaults", "permuted_1", "permuted_2")
RUNS = CALIBRATION + ("mesh", "pmap", "local_batch_norm", "no_pmean")


def tiny_config():
    config = quickstart.get_config()
    config.model.num_blocks, config.model.features, config.data.hr_size = 1, 8, 32
    config.train.batch_size = 8
    return config


def cast(tree, dtype):
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x, tree)


def flat(tree):
    leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf, np.float64) for path, leaf in leaves}


def main(out_path):
    assert jax.device_count() == 8, jax.devices()
    jax.config.update("jax_enable_x64", True)  # for the reference run; the others are cast to float32
    config = tiny_config()
    rng = np.random.default_rng(0)
    batch = {"lr": rng.uniform(size=(8, 8, 8, 3)).astype(np.float32),
             "hr": rng.uniform(-1, 1, size=(8, 32, 32, 3)).astype(np.float32)}
    generator, discriminator = create_models(run_spec(config))
    pmap = parallel.PmapStrategy()
    pmap_generator, pmap_discriminator = create_models(run_spec(config), pmap.bn_axis_name)
    # x64 makes some initialisers float64: cast, so every run but the reference is float32.
    state = cast(create_state(run_spec(config), jax.random.key(0), generator, discriminator), jnp.float32)
    pmap_state = state.replace(g=state.g.replace(apply_fn=pmap_generator.apply),
                               d=state.d.replace(apply_fn=pmap_discriminator.apply))
    g64 = Generator(num_blocks=1, features=8, dtype=jnp.float64)
    state64 = cast(state, jnp.float64)
    state64 = state64.replace(g=state64.g.replace(apply_fn=g64.apply),
                              d=state64.d.replace(apply_fn=Discriminator(dtype=jnp.float64).apply))
    steps = {"g": functools.partial(generator_train_step, content_loss=losses.mse_loss),
             "gan": functools.partial(gan_train_step, content_loss=losses.mse_loss, adversarial_weight=1e-3),
             "gan_joint": functools.partial(gan_train_step, content_loss=losses.mse_loss, adversarial_weight=1e-3,
                                            d_joint_batch=True)}
    single = parallel.MeshStrategy(jax.devices()[:1])
    mesh = parallel.MeshStrategy(jax.devices())
    out = {}
    for kind, step in steps.items():
        runs = {}
        single_step = single.wrap_train_step(step)
        for name, order in (("single", None), ("permuted_1", [3, 0, 7, 5, 1, 6, 2, 4]),
                            ("permuted_2", [7, 6, 5, 4, 3, 2, 1, 0])):
            images = batch if order is None else jax.tree.map(lambda x: x[np.array(order)], batch)
            runs[name] = single_step(single.place_state(state), single.place_batch(images))
        runs["single_xla_defaults"] = jax.jit(step)(state, batch)
        runs["mesh"] = mesh.wrap_train_step(step)(mesh.place_state(state), mesh.place_batch(batch))
        runs["pmap"] = pmap.to_host(pmap.wrap_train_step(step)(pmap.place_state(pmap_state), pmap.place_batch(batch)))
        if kind == "gan":  # the mistakes are shown on the step that has both networks
            runs["local_batch_norm"] = pmap.to_host(
                pmap.wrap_train_step(step)(pmap.place_state(state), pmap.place_batch(batch)))
            unaveraged = jax.pmap(functools.partial(step, axis_name=None), axis_name=parallel.PMAP_AXIS)
            runs["no_pmean"] = pmap.to_host(unaveraged(pmap.place_state(pmap_state), pmap.place_batch(batch)))
        reference = flat(jax.jit(step)(state64, cast(batch, jnp.float64)))
        for name, result in runs.items():
            leaves = flat(result)
            float32 = {leaf.dtype for leaf in jax.tree.leaves(result) if jnp.issubdtype(leaf.dtype, jnp.floating)}
            assert float32 == {np.dtype(np.float32)}, (name, float32)
            runs[name] = leaves
        for leaf, ref in reference.items():
            distances = [np.linalg.norm(runs[name][leaf] - ref) if name in runs else np.nan for name in RUNS]
            out[f"{kind}/{leaf}"] = np.array([np.linalg.norm(ref)] + distances)
    np.savez(out_path, **out)


if __name__ == "__main__":
    main(sys.argv[1])
