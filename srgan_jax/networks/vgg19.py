"""VGG19 convolutional body (Simonyan & Zisserman) as a frozen feature extractor (SPEC "Losses").

`VGG19` is the 16-convolution body (3x3 SAME convs, 2x2 max-pools between the five blocks,
no classifier), NHWC, with one parameter collection per conv named `conv1_1` ... `conv5_4`
(kernel HWIO, bias). Outputs are named `reluI_J` (after the ReLU: the paper's phi_ij) or
`convI_J` (before it). Weights expect one of two input conventions (`PREPROCESSING`):
  torchvision: RGB in [0, 1], minus mean (0.485, 0.456, 0.406), divided by std (0.229, 0.224, 0.225)
  caffe (Keras): BGR in [0, 255], minus mean (103.939, 116.779, 123.68) (B, G, R order)
Reading and converting weight files is `srgan_jax.vgg_weights`'s job.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

Dtype = Any
Params = dict[str, dict[str, Any]]

# (name, input channels, output channels) of the 16 convs, in network order.
_BLOCK_SIZES = ((1, 2, 3, 64), (2, 2, 64, 128), (3, 4, 128, 256), (4, 4, 256, 512), (5, 4, 512, 512))
CONVS: tuple[tuple[str, int, int], ...] = tuple(
    (f"conv{block}_{j}", in_ch if j == 1 else out_ch, out_ch)
    for block, count, in_ch, out_ch in _BLOCK_SIZES
    for j in range(1, count + 1)
)
LAYER_NAMES: tuple[str, ...] = tuple(
    name for conv, _, _ in CONVS for name in (conv, conv.replace("conv", "relu"))
)


PREPROCESSING = {
    "torchvision": {"channel_order": "RGB", "input_range": [0.0, 1.0],
                    "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    "caffe": {"channel_order": "BGR", "input_range": [0.0, 255.0],
              "mean": [103.939, 116.779, 123.68], "std": [1.0, 1.0, 1.0]},
}


def check_layers(layers: Sequence[str]) -> None:
    """Raise ValueError unless `layers` is a non-empty sequence of `LAYER_NAMES`."""
    if isinstance(layers, str) or not layers:
        raise ValueError(f"VGG19 layers must be a non-empty list of names such as ('relu5_4',), got {layers!r}")
    unknown = [name for name in layers if name not in LAYER_NAMES]
    if unknown:
        raise ValueError(f"unknown VGG19 layer(s) {unknown}: use reluI_J or convI_J, one of {', '.join(LAYER_NAMES)}")


class VGG19(nn.Module):
    """VGG19 convolutional body: preprocessed NHWC images -> {layer name: feature map}.

    Input: [B, H, W, 3], already preprocessed for the weights (see `preprocess`).
    Output: the requested `layers` only, each [B, H / 2^(i-1), W / 2^(i-1), C] for block i;
    the network stops after the deepest requested layer, so shallower requests cost less
    and only create (or read) the params of the convs they use.
    """

    layers: Sequence[str] = ("relu5_4",)
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        check_layers(self.layers)
        wanted = set(self.layers)
        last = max(LAYER_NAMES.index(name) for name in wanted)
        features = {}
        x = x.astype(self.dtype)
        for index, (conv_name, _, out_ch) in enumerate(CONVS):
            if conv_name.endswith("_1") and index > 0:
                x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
            # He-normal (torchvision's VGG init) matters only for `random_feature_extractor`.
            x = nn.Conv(out_ch, (3, 3), padding="SAME", dtype=self.dtype, name=conv_name,
                        kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"))(x)
            if conv_name in wanted:
                features[conv_name] = x
            x = nn.relu(x)
            relu_name = conv_name.replace("conv", "relu")
            if relu_name in wanted:
                features[relu_name] = x
            if LAYER_NAMES.index(relu_name) >= last:
                break
        return features


def preprocess(images: jax.Array, preprocessing: str) -> jax.Array:
    """Generator-range images [B, H, W, 3] RGB in [-1, 1] -> the input the VGG weights expect.

    "torchvision": RGB, (x01 - mean) / std. "caffe": BGR, 255 * x01 - mean_bgr.
    """
    if preprocessing not in PREPROCESSING:
        raise ValueError(f"unknown VGG19 preprocessing {preprocessing!r}: expected one of {sorted(PREPROCESSING)}")
    convention = PREPROCESSING[preprocessing]
    x = (images + 1.0) * 0.5
    if convention["channel_order"] == "BGR":
        x = x[..., ::-1]
    x = x * convention["input_range"][1]
    mean = jnp.asarray(convention["mean"], images.dtype)
    std = jnp.asarray(convention["std"], images.dtype)
    return (x - mean) / std


@flax.struct.dataclass
class VGGFeatures:
    """Frozen VGG19 features: call with [B, H, W, 3] RGB images in [-1, 1] (generator range).

    Returns {layer: [B, h, w, C]} in `dtype`. A pytree: pass it into `jax.jit` as an argument
    or close over it. Its params are wrapped in `stop_gradient`, so gradients reach the
    input images but never the VGG weights.
    """

    params: Params
    layers: tuple[str, ...] = flax.struct.field(pytree_node=False)
    preprocessing: str = flax.struct.field(pytree_node=False)
    dtype: Dtype = flax.struct.field(pytree_node=False, default=jnp.float32)

    def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
        params = jax.lax.stop_gradient(self.params)
        x = preprocess(images.astype(jnp.float32), self.preprocessing)
        return VGG19(layers=self.layers, dtype=self.dtype).apply({"params": params}, x)


def random_feature_extractor(layers: Sequence[str] = ("relu5_4",), seed: int = 0,
                             dtype: Dtype = jnp.float32, preprocessing: str = "torchvision") -> VGGFeatures:
    """VGG19 with random (He-normal) weights: same FLOPs as the real one, for tests and benchmarks only."""
    check_layers(layers)
    variables = VGG19(layers=("relu5_4",)).init(jax.random.PRNGKey(seed), jnp.zeros((1, 16, 16, 3)))
    return VGGFeatures(params=variables["params"], layers=tuple(layers), preprocessing=preprocessing, dtype=dtype)
