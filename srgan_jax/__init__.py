"""srgan-jax: SRGAN and SRResNet (Ledig et al., CVPR 2017) in JAX/Flax."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `srgan_jax.load_generator` imports JAX only when it is first used.
    if name == "load_generator":
        from srgan_jax.upscaling.engine import load_generator

        return load_generator
    raise AttributeError(f"module 'srgan_jax' has no attribute {name!r}")
