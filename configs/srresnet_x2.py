"""SRResNet-MSE at x2: configs/srresnet.py with model.scale 2 (LR crops 48 x 48).

SPEC fixes x4 only (r = 4, 96 x 96 HR / 24 x 24 LR crops); the scale is ours. Kept from
the paper: the network (one x2 upsampling stage instead of two), the 96 x 96 HR crops and the
MSE recipe. LR is MATLAB bicubic /2 of HR; DIV2K's own x2 LR with `data.use_dataset_lr`.
"""

from srgan_jax.configs import srresnet


def get_config():
    config = srresnet.get_config()
    config.model.scale = 2
    config.data.tfds_name = "div2k/bicubic_x2"
    return config
