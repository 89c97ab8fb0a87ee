"""Run by test_parallel.py in a subprocess with 8 host CPU devices: one train step on
1 device, on an 8-device mesh and under pmap on 8 devices, from the same state and
batch. Writes every resulting leaf (params, batch_stats, Adam moments, metrics) to an npz."""

import functools
import sys

import jax
import numpy as np

from srgan_jax import losses, parallel
from srgan_jax.train import create_models, create_state, gan_train_step, generator_train_step

sys.path.insert(0, ".")
from configs import quickstart  # noqa: E402


# Adam's first step is lr * g / (|g| + eps): float noise in gradients that are exactly
# zero in exact arithmetic (conv biases followed by BatchNorm) becomes +-lr. A small lr
# keeps that noise out of the D that G's adversarial gradient is taken through.
LEARNING_RATE = 1e-6


def tiny_config():
    config = quickstart.get_config()
    config.model.num_blocks, config.model.features, config.data.hr_size = 1, 8, 32
    config.train.batch_size = 8
    config.train.learning_rate = LEARNING_RATE
    return config


def flat(tree, prefix):
    leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
    return {prefix + jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def main(out_path):
    assert jax.device_count() == 8, jax.devices()
    config = tiny_config()
    rng = np.random.default_rng(0)
    batch = {"lr": rng.uniform(size=(8, 8, 8, 3)).astype(np.float32),
             "hr": rng.uniform(-1, 1, size=(8, 32, 32, 3)).astype(np.float32)}
    generator, discriminator = create_models(config)
    pmap_generator, pmap_discriminator = create_models(config, parallel.PMAP_AXIS)
    state = create_state(config, jax.random.key(0), generator, discriminator)
    pmap_state = state.replace(g=state.g.replace(apply_fn=pmap_generator.apply),
                               d=state.d.replace(apply_fn=pmap_discriminator.apply))
    steps = {"g": functools.partial(generator_train_step, content_loss=losses.mse_loss),
             "gan": functools.partial(gan_train_step, content_loss=losses.mse_loss, adversarial_weight=1e-3)}
    results = {}
    for kind, step in steps.items():
        for name, devices in (("single", jax.devices()[:1]), ("mesh", jax.devices())):
            mesh = parallel.create_mesh(devices)
            new, metrics = parallel.jit_step(step, mesh)(parallel.put_replicated(state, mesh),
                                                         parallel.put_batch(batch, mesh))
            results.update(flat({"state": new, "metrics": metrics}, f"{kind}/{name}/"))
        new, metrics = parallel.pmap_step(step)(parallel.replicate(pmap_state), parallel.split_for_pmap(batch, 8))
        results.update(flat(parallel.unreplicate({"state": new, "metrics": metrics}), f"{kind}/pmap/"))
    np.savez(out_path, **results)


if __name__ == "__main__":
    main(sys.argv[1])
