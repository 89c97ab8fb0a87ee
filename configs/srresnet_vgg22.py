"""SRResNet-VGG22: G alone on the VGG22 content loss, initialised from SRResNet-MSE.

The schedule follows the paper's SRGAN fine-tuning (10^5 steps at 1e-4, 10^5 at 1e-5).
"""

from srgan_jax.configs import default


def get_config():
    config = default.get_config()
    config.loss.content = "vgg22"
    config.train.num_steps = 200_000
    config.train.lr_boundaries = (100_000,)
    return config
