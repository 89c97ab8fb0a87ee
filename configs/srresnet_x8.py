"""SRResNet-MSE at x8: configs/srresnet.py with model.scale 8 (LR crops 12 x 12).

SPEC fixes x4 only (r = 4, 96 x 96 HR / 24 x 24 LR crops); the scale is ours. Kept from
the paper: the network (three x2 upsampling stages instead of two), the 96 x 96 HR crops
(96 % 8 == 0) and the MSE recipe. LR is MATLAB bicubic /8 of HR; DIV2K's own x8 LR with
`data.use_dataset_lr`.
"""

from srgan_jax.configs import srresnet


def get_config():
    config = srresnet.get_config()
    config.model.scale = 8
    config.data.tfds_name = "div2k/bicubic_x8"
    return config
