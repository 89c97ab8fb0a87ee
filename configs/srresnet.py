"""SRResNet-MSE: 10^6 Adam steps at 1e-4 on pixel MSE (the paper's defaults)."""

from srgan_jax.configs import default


def get_config():
    return default.get_config()
