"""SRGAN-VGG22: VGG22 content + 1e-3 adversarial, G from SRResNet-MSE.

The schedule and everything else as configs/srgan.py. Set `--config.init_from=<SRResNet workdir>`.
"""

from srgan_jax.configs import srgan


def get_config():
    config = srgan.get_config()
    config.loss.content = "vgg22"
    return config
