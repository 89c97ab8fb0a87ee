"""The project's PyTorch reference of the SRGAN paper's networks (Ledig et al., CVPR 2017).

One file, two users:

* the tests import its modules as independent truth for the Flax port
  (`Generator`, `ResidualBlock`, `Discriminator`, `vgg19_features`, the VGG preprocessing);
* `srgan-jax benchmark --compare-torch` runs it as a script to time the same train and
  inference steps in PyTorch.

Layouts follow ../shared/SPEC.md ("Generator", "Discriminator", "Losses"), NCHW. The attribute
names of the modules are the ones tests/test_models.py maps onto Flax parameters.

Modes of the script (synthetic data: LR uniform in [0, 1] of side hr_size / 4, HR uniform in [-1, 1]):

  g        SRResNet step: G forward, pixel MSE, backward, Adam(1e-4, betas 0.9 / 0.999).
  gan      SRGAN-MSE step: one D update (BCE on logits, HR real, G(LR) detached fake), then one
           G update with MSE + 1e-3 * non-saturating adversarial loss (D after its update).
  vgg_gan  SRGAN-VGG54 step: as gan, but the content loss is the MSE of relu5_4 features / 12.75
           of a frozen VGG19 with random weights (same FLOPs as the ImageNet weights).
  infer    G in eval mode (running BatchNorm averages), no gradients.

The median of `--steps` timed steps after `--warmup` untimed ones is reported (the device is
synchronised around each timed step). Examples:

  python benchmarks/torch_reference.py --mode g --device cpu --threads 8
  python benchmarks/torch_reference.py --mode gan --batch 2 --hr-size 32 --blocks 1 --steps 2 --warmup 1 \\
      --device cpu --json /tmp/torch_gan.json
  python benchmarks/torch_reference.py --mode vgg_gan --device cuda --amp --channels-last --compile \\
      --json out.json

Prints one line; with --json also writes a dict with "mode", "batch", "hr_size", "ms_per_step",
"images_per_s", "step_s", "torch" and the other settings (see `run`).

Importing this module does no work: no arguments are parsed and no thread counts are set.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import time
from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

MODES = ("g", "gan", "vgg_gan", "infer")
SCALE = 4
LEARNING_RATE = 1e-4
ADAM_BETAS = (0.9, 0.999)
ADVERSARIAL_WEIGHT = 1e-3  # SPEC "Losses": l_SR = content + 1e-3 * adversarial
LEAKY_SLOPE = 0.2
PRELU_INIT = 0.25

# SPEC "Losses": VGG features are divided by 12.75 so the VGG loss is on the scale of the MSE.
VGG_FEATURE_SCALE = 1 / 12.75
# torchvision's ImageNet preprocessing: RGB in [0, 1], minus mean, divided by std.
VGG_MEAN = (0.485, 0.456, 0.406)
VGG_STD = (0.229, 0.224, 0.225)
# VGG19 conv widths per block; a 2x2 max-pool closes each block.
VGG19_BLOCKS = ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512))
# Where the 16 convs sit in torchvision's `vgg19().features` (a ReLU follows each, pools between blocks).
VGG19_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
RELU5_4_INDEX = 35  # the ReLU after conv5_4, just before the last pool
DISCRIMINATOR_STAGES = ((64, 2), (128, 1), (128, 2), (256, 1), (256, 2), (512, 1), (512, 2))


# --------------------------------------------------------------------------- networks


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1)


class ResidualBlock(nn.Module):
    """conv3x3 -> BN -> PReLU -> conv3x3 -> BN, plus the block input."""

    def __init__(self, features: int = 64):
        super().__init__()
        self.c1 = _conv3x3(features, features)
        self.b1 = nn.BatchNorm2d(features)
        self.a = nn.PReLU(features, init=PRELU_INIT)
        self.c2 = _conv3x3(features, features)
        self.b2 = nn.BatchNorm2d(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.b2(self.c2(self.a(self.b1(self.c1(x)))))
        return x + residual


class Generator(nn.Module):
    """SRResNet: LR in [0, 1] [B, 3, h, w] -> SR in [-1, 1] [B, 3, scale*h, scale*w].

    head conv9 + PReLU (kept as the long skip), `blocks` residual blocks, conv3 + BN plus the
    skip, log2(scale) x [conv3 to 4*features, pixel shuffle x2, PReLU], conv9 to RGB, tanh.
    """

    def __init__(self, blocks: int = 16, features: int = 64, scale: int = SCALE):
        super().__init__()
        if scale < 2 or scale & (scale - 1):
            raise ValueError(f"scale={scale}: must be a power of 2 (each upsampling stage doubles the size)")
        stages = int(math.log2(scale))
        self.head = nn.Conv2d(3, features, kernel_size=9, padding=4)
        self.head_a = nn.PReLU(features, init=PRELU_INIT)
        self.blocks = nn.ModuleList(ResidualBlock(features) for _ in range(blocks))
        self.body = _conv3x3(features, features)
        self.body_bn = nn.BatchNorm2d(features)
        self.ups = nn.ModuleList(_conv3x3(features, 4 * features) for _ in range(stages))
        self.up_a = nn.ModuleList(nn.PReLU(features, init=PRELU_INIT) for _ in range(stages))
        self.tail = nn.Conv2d(features, 3, kernel_size=9, padding=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.head_a(self.head(x))
        h = skip
        for block in self.blocks:
            h = block(h)
        h = self.body_bn(self.body(h)) + skip
        for conv, act in zip(self.ups, self.up_a):
            h = act(F.pixel_shuffle(conv(h), 2))
        return torch.tanh(self.tail(h))


def discriminator_feature_size(hr_size: int) -> int:
    """Side of D's last feature map: four stride-2 convs (kernel 3, padding 1), each ceil(n / 2).

    Equal to hr_size // 16 whenever hr_size is a multiple of 16 (96 -> 6).
    """
    side = hr_size
    for _, stride in DISCRIMINATOR_STAGES:
        side = (side - 1) // stride + 1
    return side


class Discriminator(nn.Module):
    """HR-sized image in [-1, 1] [B, 3, H, W] -> logit [B] (D(x) = sigmoid(logit)).

    conv3 n64 + LeakyReLU, 7 x [conv3 (n, s) + BN + LeakyReLU], flatten in NHWC order (as Flax
    does), Dense 1024 + LeakyReLU, Dense 1. LeakyReLU slope 0.2, no pooling.
    """

    def __init__(self, hr_size: int = 96):
        super().__init__()
        self.first = _conv3x3(3, 64)
        convs, norms, cin = [], [], 64
        for cout, stride in DISCRIMINATOR_STAGES:
            convs.append(_conv3x3(cin, cout, stride))
            norms.append(nn.BatchNorm2d(cout))
            cin = cout
        self.convs = nn.ModuleList(convs)
        self.bns = nn.ModuleList(norms)
        self.fc1 = nn.Linear(cin * discriminator_feature_size(hr_size) ** 2, 1024)
        self.fc2 = nn.Linear(1024, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.first(x), LEAKY_SLOPE)
        for conv, norm in zip(self.convs, self.bns):
            h = F.leaky_relu(norm(conv(h)), LEAKY_SLOPE)
        h = h.permute(0, 2, 3, 1).flatten(1)  # NHWC order, so Flax Dense kernels map 1:1
        h = F.leaky_relu(self.fc1(h), LEAKY_SLOPE)
        return self.fc2(h)[:, 0]


def vgg19_features() -> nn.Sequential:
    """VGG19's convolutional body in torchvision's `vgg19().features` layout (indices 0..36).

    Conv3x3 (padding 1) + ReLU per layer, MaxPool2d(2, 2) after each of the 5 blocks (the last
    one included, so indices match torchvision's); convs at `VGG19_CONV_INDICES`. Initialised
    as torchvision initialises VGG: kaiming-normal (fan_out, relu) weights, zero biases.
    """
    layers: list[nn.Module] = []
    cin = 3
    for widths in VGG19_BLOCKS:
        for cout in widths:
            conv = _conv3x3(cin, cout)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.ReLU(inplace=False)]
            cin = cout
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def vgg_preprocess(images: torch.Tensor) -> torch.Tensor:
    """Generator-range RGB [B, 3, H, W] in [-1, 1] -> torchvision's VGG input ((x01 - mean) / std)."""
    mean = torch.tensor(VGG_MEAN, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(VGG_STD, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return ((images + 1.0) * 0.5 - mean) / std


class VGGContent(nn.Module):
    """Frozen VGG19 up to relu5_4 (by default) on preprocessed images, features / 12.75."""

    def __init__(self, last_index: int = RELU5_4_INDEX):
        super().__init__()
        self.features = vgg19_features()[: last_index + 1]
        self.features.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "VGGContent":
        return super().train(False)  # no dropout or BN inside, but stay frozen in every sense

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(vgg_preprocess(images)) * VGG_FEATURE_SCALE


# --------------------------------------------------------------------------- losses


def mse_loss(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """Pixel MSE, in float32 whatever the autocast dtype."""
    return F.mse_loss(sr.float(), hr.float())


def vgg_content_loss(vgg: VGGContent) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """MSE of the scaled VGG features of SR and HR; HR's features carry no gradient."""

    def loss(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = vgg(hr)
        return F.mse_loss(vgg(sr).float(), target.float())

    return loss


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """BCE on logits, real = 1 and fake = 0 (each a mean over the batch)."""
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating: mean of -log D(G(lr))."""
    fake_logits = fake_logits.float()
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


# --------------------------------------------------------------------------- steps

Step = Callable[[], None]
ContentLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def adam(module: nn.Module) -> torch.optim.Adam:
    """The paper's optimiser: Adam, learning rate 1e-4, betas (0.9, 0.999)."""
    return torch.optim.Adam(module.parameters(), lr=LEARNING_RATE, betas=ADAM_BETAS)


def _autocast(device: torch.device, amp: bool) -> Callable[[], contextlib.AbstractContextManager]:
    if not amp:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def generator_step(generator: nn.Module, optimizer: torch.optim.Optimizer, lr: torch.Tensor, hr: torch.Tensor,
                   content_loss: ContentLoss = mse_loss, amp: bool = False) -> Step:
    """One SRResNet update per call: G(lr), content loss against hr, backward, Adam."""
    autocast = _autocast(lr.device, amp)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = content_loss(generator(lr), hr)
        loss.backward()
        optimizer.step()

    return step


def gan_step(generator: nn.Module, discriminator: nn.Module, g_optimizer: torch.optim.Optimizer,
             d_optimizer: torch.optim.Optimizer, lr: torch.Tensor, hr: torch.Tensor,
             content_loss: ContentLoss = mse_loss, adversarial_weight: float = ADVERSARIAL_WEIGHT,
             amp: bool = False) -> Step:
    """One D update then one G update per call (k = 1), G running forward once.

    D: BCE on D(hr) (real) and D(G(lr)) with G(lr) detached (fake). G: content loss plus
    `adversarial_weight` * -log D(G(lr)), with D after its update and in training mode; only G's
    parameters receive gradients in the G update (D's weight gradients are not computed).
    PyTorch's training-mode BatchNorm also moves D's running averages in the G update's
    forward (the JAX step keeps only the D update's); that costs nothing measurable.
    """
    autocast = _autocast(lr.device, amp)
    g_params = [p for p in generator.parameters() if p.requires_grad]

    def step() -> None:
        with autocast():
            sr = generator(lr)
        d_optimizer.zero_grad(set_to_none=True)
        with autocast():
            d_loss = discriminator_loss(discriminator(hr), discriminator(sr.detach()))
        d_loss.backward()
        d_optimizer.step()

        g_optimizer.zero_grad(set_to_none=True)
        with autocast():
            g_loss = content_loss(sr, hr) + adversarial_weight * generator_adversarial_loss(discriminator(sr))
        g_loss.backward(inputs=g_params)
        g_optimizer.step()

    return step


def infer_step(generator: nn.Module, lr: torch.Tensor, amp: bool = False) -> Step:
    """G(lr) in eval mode (running BatchNorm averages) without gradients."""
    autocast = _autocast(lr.device, amp)
    generator.eval()

    def step() -> None:
        with torch.no_grad(), autocast():
            generator(lr)

    return step


def synthetic_batch(batch: int, hr_size: int, device: torch.device, scale: int = SCALE,
                    seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(LR uniform in [0, 1] of side hr_size / scale, HR uniform in [-1, 1]), NCHW float32."""
    gen = torch.Generator().manual_seed(seed)
    lr = torch.rand(batch, 3, hr_size // scale, hr_size // scale, generator=gen)
    hr = torch.rand(batch, 3, hr_size, hr_size, generator=gen) * 2.0 - 1.0
    return lr.to(device), hr.to(device)


def build_step(mode: str, *, batch: int = 16, hr_size: int = 96, blocks: int = 16, features: int = 64,
               device: str | torch.device = "cpu", amp: bool = False, channels_last: bool = False,
               compile: bool = False, seed: int = 0) -> Step:
    """The models, optimisers and synthetic batch of `mode` (one of `MODES`), as a no-argument step."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: use one of {', '.join(MODES)}")
    if hr_size % SCALE:
        raise ValueError(f"hr_size={hr_size}: must be a multiple of {SCALE} (LR is hr_size / {SCALE})")
    device = torch.device(device)
    torch.manual_seed(seed)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    lr, hr = synthetic_batch(batch, hr_size, device, seed=seed)
    lr, hr = lr.contiguous(memory_format=memory_format), hr.contiguous(memory_format=memory_format)

    def place(module: nn.Module) -> nn.Module:
        return module.to(device=device, memory_format=memory_format)

    def maybe_compile(module: nn.Module) -> nn.Module:
        return torch.compile(module) if compile else module

    generator = place(Generator(blocks=blocks, features=features))
    if mode == "infer":
        return infer_step(maybe_compile(generator), lr, amp=amp)
    g_optimizer = adam(generator)
    content = mse_loss
    if mode == "vgg_gan":
        content = vgg_content_loss(maybe_compile(place(VGGContent())))
    if mode == "g":
        return generator_step(maybe_compile(generator.train()), g_optimizer, lr, hr, content, amp=amp)
    discriminator = place(Discriminator(hr_size))
    d_optimizer = adam(discriminator)
    return gan_step(maybe_compile(generator.train()), maybe_compile(discriminator.train()), g_optimizer,
                    d_optimizer, lr, hr, content, amp=amp)


# --------------------------------------------------------------------------- timing


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Step, steps: int, warmup: int, device: torch.device) -> tuple[list[float], float]:
    """(seconds of each of `steps` timed calls, seconds of the `warmup` untimed ones together)."""
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    _synchronize(device)
    warmup_s = time.perf_counter() - start
    seconds = []
    for _ in range(steps):
        _synchronize(device)
        start = time.perf_counter()
        step()
        _synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds, warmup_s


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def run(args: argparse.Namespace) -> dict:
    """Build and time the step `args` describe; the result dict (what --json writes)."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    step = build_step(args.mode, batch=args.batch, hr_size=args.hr_size, blocks=args.blocks,
                      features=args.features, device=device, amp=args.amp, channels_last=args.channels_last,
                      compile=args.compile)
    seconds, warmup_s = time_steps(step, args.steps, args.warmup, device)
    median = statistics.median(seconds)
    return {
        "framework": "torch", "mode": args.mode, "batch": args.batch, "hr_size": args.hr_size,
        "lr_size": args.hr_size // SCALE, "blocks": args.blocks, "features": args.features,
        "device": str(device), "device_name": _device_name(device), "amp": args.amp,
        "channels_last": args.channels_last, "compile": args.compile, "threads": args.threads,
        "torch_threads": torch.get_num_threads(), "steps": args.steps, "warmup": args.warmup,
        "warmup_s": warmup_s, "ms_per_step": median * 1e3, "images_per_s": args.batch / median,
        "step_s": seconds, "torch": torch.__version__,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="torch_reference.py", description="Time the SRGAN paper's train / inference steps in PyTorch.")
    parser.add_argument("--mode", default="g", choices=MODES,
                        help="g: SRResNet MSE step; gan: D + G step, MSE content; vgg_gan: D + G step, "
                             "VGG54 content (random VGG weights); infer: G forward in eval mode [g]")
    parser.add_argument("--batch", type=int, default=16, help="images per step [16]")
    parser.add_argument("--hr-size", type=int, default=96, help="HR side (LR side is hr-size / 4) [96]")
    parser.add_argument("--blocks", type=int, default=16, help="generator residual blocks [16]")
    parser.add_argument("--features", type=int, default=64, help="generator width [64]")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (the median is reported) [10]")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first [2]")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="torch device [cuda if available, else cpu]")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    parser.add_argument("--compile", action="store_true", help="torch.compile the modules")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default) [0]")
    parser.add_argument("--json", default="", metavar="PATH", help="also write the result dict here")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.steps < 1 or args.warmup < 0 or args.blocks < 0 or args.features < 1:
        parser.error("need --batch >= 1, --steps >= 1, --warmup >= 0, --blocks >= 0, --features >= 1")
    if args.hr_size < SCALE or args.hr_size % SCALE:
        parser.error(f"--hr-size {args.hr_size}: must be a positive multiple of {SCALE}")
    if args.threads < 0:
        parser.error("--threads must be >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Command line: time one mode, print one line, optionally write JSON; returns the result dict."""
    args = parse_args(argv)
    result = run(args)
    print(f"torch {result['torch']} {args.mode}: batch {args.batch}, hr {args.hr_size}, blocks {args.blocks}, "
          f"features {args.features}, {result['device']}{' amp' if args.amp else ''}"
          f"{' channels-last' if args.channels_last else ''}{' compile' if args.compile else ''}: "
          f"{result['ms_per_step']:.2f} ms/step, {result['images_per_s']:.2f} images/s")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)
            handle.write("\n")
    sys.stdout.flush()
    return result


if __name__ == "__main__":
    main()
