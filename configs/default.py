"""Paper defaults shared by every variant: SRResNet-MSE (SPEC "Training recipe").

Variants import this and override a few fields. Every field can be overridden on the
command line, e.g. `--config.train.num_steps=100`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.dtype = "float32"  # compute dtype: float32 | bfloat16 (parameters stay float32)
    config.parallel = "mesh"  # mesh: jax.jit over a 1-D device mesh | pmap: jax.pmap
    config.distributed = ml_collections.ConfigDict()  # several processes as one run (jax.distributed)
    config.distributed.enabled = False
    config.distributed.coordinator_address = ""  # host:port of process 0; empty: from the cluster manager
    config.distributed.num_processes = 0  # 0: from the cluster manager
    config.distributed.process_id = -1  # -1: from the cluster manager
    config.distributed.timeout_s = 60.0  # a peer silent this long is taken as dead: the others exit
    config.init_from = ""  # SRResNet workdir or checkpoint to initialise G from (SRGAN)
    config.vgg_weights = ""  # VGG losses: a VGG19 file made by `srgan-jax convert-vgg19` (pretrained/README.md)

    config.model = ml_collections.ConfigDict()
    config.model.num_blocks = 16  # B residual blocks
    config.model.features = 64
    config.model.scale = 4

    config.loss = ml_collections.ConfigDict()
    config.loss.content = "mse"  # mse | vgg22 | vgg54
    config.loss.adversarial_weight = 0.0  # 1e-3 for SRGAN; 0 trains G alone (SRResNet)

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 16  # global, over all devices and hosts
    config.train.num_steps = 1_000_000
    config.train.learning_rate = 1e-4
    config.train.lr_boundaries = ()  # steps where the learning rate is multiplied by lr_decay
    config.train.lr_decay = 0.1
    config.train.b1 = 0.9
    config.train.b2 = 0.999
    config.train.pretrain_steps = 0  # G-only (content loss) steps before the GAN steps begin
    # D's BatchNorm statistics: False = over the real and the fake batch apart; True = over both
    # at once, so an artefact shared by all fakes (the pixel-shuffle grid) is not normalised
    # away inside the fake batch. The paper does not say; see pretrained/README.md, SRGAN-MSE.
    config.train.d_joint_batch = False
    # G's 9x9 output convolution's learning rate, as a multiple of train.learning_rate (1 = the
    # paper). Adam moves every weight by about the learning rate per step whatever its size, and
    # that layer's weights are the smallest (mean |w| 0.009 in the shipped SRResNet, 0.035+
    # elsewhere): in the CPU SRGAN-MSE run it drifted 5x faster than the other layers and carried
    # most of the step-2,000 pixel-shuffle grid; 0.25 halved the drift but not the grid up to
    # step 1,200 (pretrained/README.md, SRGAN-MSE).
    config.train.g_tail_lr_scale = 1.0
    # The same for the two pixel-shuffle stages (convs and PReLUs); 1 = the paper. With both at 0
    # the output stage stays SRResNet's: at step 2,000 it carried the grid (put back, 130 -> 1.7).
    config.train.g_upsample_lr_scale = 1.0
    config.train.checkpoint_every = 10_000
    config.train.keep_checkpoints = 3
    config.train.log_every = 100
    config.train.time_limit_s = 0.0  # checkpoint and stop after this many seconds (0: no limit)

    config.data = ml_collections.ConfigDict()
    config.data.image_dir = ""  # a folder of training images; empty: the tfds dataset below
    config.data.tfds_name = "div2k/bicubic_x4"
    config.data.tfds_data_dir = ""
    config.data.split = "train"
    config.data.hr_size = 96
    config.data.use_dataset_lr = False  # True: the dataset's own LR (DIV2K); False: MATLAB bicubic
    config.data.augment = False  # random flips / 90-degree rotations (not in the paper)
    config.data.shuffle_buffer = 1024
    config.data.cache = False
    config.data.in_memory = False  # decode image_dir once into memory, no TensorFlow
    config.data.skimage_images = ()  # names of scikit-image sample images (in_memory only)

    config.eval = ml_collections.ConfigDict()
    config.eval.image_dir = ""  # validation HR images (e.g. ../shared/data/Set5); empty: none
    config.eval.skimage_images = ()
    config.eval.every = 10_000
    return config
