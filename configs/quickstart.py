"""Embedded default: a reduced SRResNet then a short SRGAN-MSE phase, minutes on a CPU.

Trains on scikit-image's bundled sample photos (no downloads, no VGG weights) and holds
out `astronaut` for validation; ends by writing an upscaled sample and PSNR vs bicubic.
"""

from srgan_jax.configs import default


def get_config():
    config = default.get_config()
    config.model.num_blocks = 4
    config.model.features = 32
    config.loss.adversarial_weight = 1e-3
    config.train.batch_size = 16
    config.train.num_steps = 2600
    config.train.pretrain_steps = 2500
    config.train.learning_rate = 1e-3
    config.train.lr_boundaries = (2000,)
    config.train.checkpoint_every = 500
    config.train.log_every = 50
    config.data.hr_size = 48
    config.data.in_memory = True
    config.data.augment = True
    config.data.skimage_images = ("chelsea", "coffee", "rocket", "hubble_deep_field",
                                  "immunohistochemistry", "retina", "colorwheel")
    config.eval.skimage_images = ("astronaut",)
    config.eval.every = 500
    return config
