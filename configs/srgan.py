"""SRGAN (= SRGAN-VGG54): VGG54 content + 1e-3 adversarial, G from SRResNet-MSE.

10^5 steps at 1e-4 then 10^5 at 1e-5; one D update and one G update per step.
Set `--config.init_from=<SRResNet workdir>`.
"""

from srgan_jax.configs import default


def get_config():
    config = default.get_config()
    config.loss.content = "vgg54"
    config.loss.adversarial_weight = 1e-3
    config.train.num_steps = 200_000
    config.train.lr_boundaries = (100_000,)
    return config
