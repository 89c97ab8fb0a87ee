"""The upscaling engine: a trained generator as a tiled uint8 -> uint8 image function.

Conventions: images are uint8, channels last (RGB, RGBA). The generator maps LR in [0, 1]
(uint8 / 255) to SR in [-1, 1]; SR is quantised as round((sr + 1) * 127.5), clipped to
[0, 255], exactly as the evaluation protocol does.

Tiling: the LR image is cut into `tile` x `tile` tiles whose neighbours share at least
`overlap` pixels, run `batch` tiles per forward pass, and cross-faded over the shared pixels
(the weights sum to 1 at every output pixel). Every forward pass has one of a few fixed
shapes, so XLA compiles once per shape, not once per image:
- images larger than a tile: [batch, tile, tile, 3] (a side shorter than the tile, and the
  last batch, are padded);
- images within one tile (and every image with tile = 0): [1, h', w', 3] with h', w' the
  sides rounded up to a multiple of 32 (at most the tile size).
Padding does not change the result: `masked_apply` zeroes every convolution's input outside
the image, which is what the convolutions' own zero padding does on the exact shape. So a
padded image gives the exact-shape output (evaluation numbers do not depend on the padding),
and only tile seams differ from one whole-image pass (by border effects inside the overlap).
The output is preallocated uint8; float accumulation is kept for one band of tile rows only
([tile * scale, W * scale, 3] float32), so memory stays bounded for large images.

Cost: `Upscaler.estimate` predicts an image's output size, peak host memory and time from
its size alone (before decoding it), for the `upscale` command's limit and its first line.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import flax.linen as nn
import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np

from srgan_jax import checkpoints, models, xla_cpu
from srgan_jax import config as config_lib
from srgan_jax.data.images import to_rgb
from srgan_jax.data.imresize import resize_matrix
from srgan_jax.errors import UserError
from srgan_jax.metrics import sr_to_uint8
from srgan_jax.networks.layers import PReLU

_BUCKET = 32  # sides of single-tile images are rounded up to a multiple of this
_ALPHA_BAND = 512  # output rows per matrix product when upscaling alpha
# Calibration of `Upscaler.estimate` (approximate): resident memory of the process with JAX,
# a generator and its compiled forward pass, before any image; on the CPU, XLA's convolution
# throughput per core and the host's cost (blending, quantising, PNG writing) per output pixel,
# fitted to two timed 2000 x 2000 upscales (README "Upscaling your images") on a 2-core AVX-512 machine.
_BASE_BYTES = 400 * 2**20
_CPU_FLOPS_PER_CORE = 150e9
_HOST_SECONDS_PER_OUTPUT_PIXEL = 0.35e-6

# `check_tileable`: the layers whose calls are checked as a whole (their settings), and the
# primitives allowed anywhere else besides pixel shuffle: each acts on one pixel (or on
# parameters) alone.
_TRUSTED_LAYERS = (nn.Conv, nn.BatchNorm, PReLU)
_TRUSTED_SCOPE = "tileable_layer"
_SHUFFLE_SCOPE = "pixel_shuffle"  # the name scope of `networks.layers.pixel_shuffle`
_POINTWISE = frozenset({
    "abs", "add", "and", "broadcast_in_dim", "clamp", "convert_element_type", "div", "eq", "erf", "exp", "ge",
    "gt", "integer_pow", "le", "log", "logistic", "lt", "max", "min", "mul", "ne", "neg", "not", "or", "pow",
    "rsqrt", "select_n", "sign", "sqrt", "square", "sub", "tanh"})

Apply = Callable[[Any, np.ndarray, np.ndarray], jax.Array]


@dataclasses.dataclass(frozen=True)
class Estimate:
    """What upscaling one image takes (`Upscaler.estimate`); approximate except the sizes.

    Attributes:
      scale: the upscaling factor (the input is width / scale x height / scale).
      width, height: the output's size in pixels.
      output_bytes: the uint8 result (3 or 4 channels).
      peak_bytes: peak resident memory of the process while it upscales and writes the image.
      seconds: wall time of the forward passes and the host work, compilation excluded; None
        off the CPU (not calibrated there).
    """

    scale: int
    width: int
    height: int
    output_bytes: int
    peak_bytes: int
    seconds: float | None

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6


def check_tiling(tile: int, overlap: int, batch: int) -> None:
    """Raise UserError unless tile = 0 (no tiling) or tile > overlap >= 0, and batch >= 1."""
    if tile < 0 or overlap < 0 or (tile and overlap >= tile):
        raise UserError(f"tile {tile} / overlap {overlap}: the tile must be 0 (no tiling) or larger than "
                        "the overlap, both >= 0; fix --tile / --overlap")
    if batch < 1:
        raise UserError(f"batch {batch}: pass --batch 1 or more")


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Offsets of `tile`-long tiles covering [0, length), neighbours sharing >= `overlap` pixels.

    Evenly spread from 0 to length - tile (so all neighbours share about the same amount);
    [0] when length <= tile.
    """
    if length <= tile:
        return [0]
    gaps = -(-(length - tile) // (tile - overlap))
    return [(i * (length - tile) + gaps // 2) // gaps for i in range(gaps + 1)]


def _cross_fade(shared: int) -> np.ndarray:
    """Weights [shared] of the tile entering a shared strip: 0 over its outer quarter, smoothstep
    to 1 across the middle half. Paired with its mirror image (the leaving tile) it sums to 1."""
    u = np.clip(((np.arange(shared) + 0.5) / shared - 0.25) * 2.0, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def blend_weights(starts: Sequence[int], tile: int, scale: int) -> list[np.ndarray]:
    """Per-tile float32 weights [tile * scale] along one axis, summing to 1 at every output pixel.

    Neighbours cross-fade over the middle half of the pixels they share (`_cross_fade`): the
    quarter next to a tile's own edge, where the convolutions' zero padding disturbs it
    most, is not used. A tile keeps full weight where no neighbour overlaps it.
    """
    size = tile * scale
    weights = []
    for k, start in enumerate(starts):
        weight = np.ones(size)
        if k > 0:
            shared = (starts[k - 1] + tile - start) * scale
            weight[:shared] = np.minimum(weight[:shared], _cross_fade(shared))
        if k + 1 < len(starts):
            shared = (start + tile - starts[k + 1]) * scale
            weight[size - shared:] = np.minimum(weight[size - shared:], _cross_fade(shared)[::-1])
        weights.append(weight)
    total = np.zeros((starts[-1] + tile) * scale)
    for start, weight in zip(starts, weights):
        total[start * scale:start * scale + size] += weight
    return [(weight / total[start * scale:start * scale + size]).astype(np.float32)
            for start, weight in zip(starts, weights)]


def resize_alpha(alpha: np.ndarray, scale: int) -> np.ndarray:
    """uint8 [H, W] -> uint8 [H*scale, W*scale]: MATLAB bicubic, equal to `imresize(alpha, scale)`.

    Computed in bands of output rows, so the float64 intermediate stays small.
    """
    h, w = alpha.shape
    rows = resize_matrix(h, h * scale, scale)
    cols = resize_matrix(w, w * scale, scale).T
    alpha = alpha.astype(np.float64)
    out = np.empty((h * scale, w * scale), np.uint8)
    for top in range(0, h * scale, _ALPHA_BAND):
        # Like imresize on uint8: rows first, rounded and clipped after each axis.
        band = np.clip(np.round(rows[top:top + _ALPHA_BAND] @ alpha), 0, 255)
        out[top:top + _ALPHA_BAND] = np.clip(np.round(band @ cols), 0, 255)
    return out


class Upscaler:
    """`upscaler(image)`: uint8 [H, W] or [H, W, C] -> uint8 [H*scale, W*scale, 3], or 4 with alpha.

    C = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA). Gray is replicated to RGB and the
    result is RGB (the file writer converts it back to gray). Alpha is upscaled with MATLAB
    bicubic (`resize_alpha`) and reattached. See the module docstring for the tiling.

    Attributes:
      scale: the upscaling factor.
      spec: the generator's `GeneratorSpec` (None if not from a checkpoint).
      checkpoint: the checkpoint path it was restored from (None if not from a checkpoint).
      apply: the jitted forward pass (variables, lr [B, h, w, 3] float32 in [0, 1], valid int32
        [2]) -> sr [B, h*scale, w*scale, 3] in [-1, 1], as if lr were cropped to its top-left
        valid[0] x valid[1] pixels (see `masked_apply`); one compilation per input shape.
    """

    def __init__(self, apply: Apply, variables: Any, scale: int, *, tile: int = 128, overlap: int = 16,
                 batch: int = 4, spec: config_lib.GeneratorSpec | None = None, checkpoint: str | None = None):
        check_tiling(tile, overlap, batch)
        self.apply, self.variables, self.scale = apply, variables, scale
        self.tile, self.overlap, self.batch = tile, overlap, batch
        self.spec, self.checkpoint = spec, checkpoint
        self._flops_per_pixel: float | None = None

    def __call__(self, image: np.ndarray, progress: Callable[[int], Any] | None = None) -> np.ndarray:
        """Upscale `image`; `progress(n)` is called as each forward pass of n tiles finishes."""
        image = np.asarray(image)
        if image.ndim == 2:
            image = image[..., None]
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 2, 3, 4) or 0 in image.shape:
            raise ValueError(f"upscale: expected a uint8 [H, W] or [H, W, 1|2|3|4] image, got "
                             f"{image.dtype} {image.shape}")
        h, w, channels = image.shape
        rgb = to_rgb(image)
        has_alpha = channels in (2, 4)
        out = np.empty((h * self.scale, w * self.scale, 4 if has_alpha else 3), np.uint8)
        self._upscale_rgb(rgb, out, progress)
        if has_alpha:
            out[..., 3] = resize_alpha(image[..., -1], self.scale)
        return out

    def tile_shape(self, h: int, w: int) -> tuple[int, int]:
        """LR tile (forward pass) shape for an h x w image: the tile, or a bucket for small images."""
        if self.tile and (h > self.tile or w > self.tile):
            return self.tile, self.tile
        bucket_h, bucket_w = (-(-n // _BUCKET) * _BUCKET for n in (h, w))
        if not self.tile:
            return bucket_h, bucket_w
        return min(bucket_h, self.tile), min(bucket_w, self.tile)

    def tile_count(self, h: int, w: int) -> int:
        """Number of tiles (forward-pass images) an h x w LR image is cut into."""
        th, tw = self.tile_shape(h, w)
        return len(tile_starts(max(h, th), th, self.overlap)) * len(tile_starts(max(w, tw), tw, self.overlap))

    def estimate(self, h: int, w: int, alpha: bool = False) -> Estimate:
        """Output size, peak memory and time of upscaling an h x w LR image (with alpha or not).

        Memory: the process with the model (`_BASE_BYTES`), the decoded input, its padded RGB
        copy and the uint8 output, plus the largest of what the three phases add one after the
        other: the tiles (the float32 band of tile rows and two band-sized temporaries of
        quantising it, the fetched float32 SR of two batches, and the forward pass, where XLA
        keeps two activations of the largest layer, [batch, tile * scale, tile * scale,
        features] float32, alive: `memory_analysis` reports exactly that), alpha (the dense
        float64 bicubic matrices of `resize_alpha`), or writing (PIL's copy of the output, 4
        bytes per pixel). Time is XLA's FLOP count of the passes at `_CPU_FLOPS_PER_CORE` per
        CPU core plus the host's cost per output pixel: a rough figure (the calibration
        machine's, scaled by core count).
        """
        s = self.scale
        channels = 4 if alpha else 3
        th, tw = self.tile_shape(h, w)
        padded_w = max(w, tw)
        tiles = self.tile_count(h, w)
        batch = 1 if tiles == 1 else self.batch
        passes = -(-tiles // batch)
        features = self.spec.features if self.spec else 64
        tiling = 3 * th * s * padded_w * s * 3 * 4 + batch * th * tw * s * s * 4 * (2 * features + 2 * 3)
        alpha_matrices = 8 * s * (h * h + w * w) + 8 * _ALPHA_BAND * (w + w * s) if alpha else 0
        peak = (_BASE_BYTES + h * w * (channels + 2 * 3) + h * w * s * s * channels
                + max(tiling, alpha_matrices, h * w * s * s * 4))
        seconds = None
        if jax.default_backend() == "cpu":
            flops = passes * batch * th * tw * self._flops_per_lr_pixel(batch, th, tw)
            seconds = flops / (_CPU_FLOPS_PER_CORE * cpu_cores()) + h * w * s * s * _HOST_SECONDS_PER_OUTPUT_PIXEL
        return Estimate(s, w * s, h * s, h * w * s * s * channels, int(peak), seconds)

    def _flops_per_lr_pixel(self, batch: int, th: int, tw: int) -> float:
        """XLA's FLOP count of a forward pass per LR pixel (0 if it reports none).

        Counted once, on a pass of `batch` tiles of th x tw: the network is convolutional, so
        the count per pixel holds for every tile shape.
        """
        if self._flops_per_pixel is None:
            lr = jax.ShapeDtypeStruct((batch, th, tw, 3), np.float32)
            analysis = self.apply.lower(self.variables, lr, np.array([th, tw], np.int32)).cost_analysis()
            if isinstance(analysis, (list, tuple)):  # a list of dicts on some JAX versions
                analysis = analysis[0] if analysis else None
            self._flops_per_pixel = float((analysis or {}).get("flops", 0.0)) / (batch * th * tw)
        return self._flops_per_pixel

    def _upscale_rgb(self, rgb: np.ndarray, out: np.ndarray, progress: Callable[[int], Any] | None) -> None:
        """Write the SR of uint8 RGB [h, w, 3] into out[..., :3], one band of tile rows at a time."""
        h, w, _ = rgb.shape
        s = self.scale
        th, tw = self.tile_shape(h, w)
        padded = np.pad(rgb, ((0, max(th - h, 0)), (0, max(tw - w, 0)), (0, 0)))
        ys = tile_starts(padded.shape[0], th, self.overlap)
        xs = tile_starts(padded.shape[1], tw, self.overlap)
        wy, wx = blend_weights(ys, th, s), blend_weights(xs, tw, s)
        # band[0] is output row ys[row] * s; rows above the next tile row's start are final.
        band = np.zeros((th * s, padded.shape[1] * s, 3), np.float32)
        row = 0
        valid = np.array([min(h, th), min(w, tw)], np.int32)
        for (i, j), sr in self._tiles(padded, ys, xs, (th, tw), valid, progress):
            while row < i:
                done = (ys[row + 1] - ys[row]) * s
                _write_rows(out, ys[row] * s, band[:done])
                band[:-done] = band[done:]
                band[-done:] = 0
                row += 1
            x0 = xs[j] * s
            band[:, x0:x0 + tw * s] += sr * (wy[i][:, None, None] * wx[j][None, :, None])
        _write_rows(out, ys[row] * s, band)

    def _tiles(self, padded: np.ndarray, ys: list[int], xs: list[int], shape: tuple[int, int],
               valid: np.ndarray, progress: Callable[[int], Any] | None
               ) -> Iterator[tuple[tuple[int, int], np.ndarray]]:
        """((row, column), sr float32 [th*s, tw*s, 3]) per tile in row-major order.

        `valid` = (rows, columns) of every tile that are image, not padding. The next batch is
        dispatched before the previous one is fetched, so the device computes while the host
        blends. `progress(len(chunk))` follows each fetched batch.
        """
        th, tw = shape
        positions = [(i, j) for i in range(len(ys)) for j in range(len(xs))]
        batch = 1 if len(positions) == 1 else self.batch
        pending = None
        for first in range(0, len(positions), batch):
            chunk = positions[first:first + batch]
            lr = np.zeros((batch, th, tw, 3), np.float32)
            for n, (i, j) in enumerate(chunk):
                lr[n] = padded[ys[i]:ys[i] + th, xs[j]:xs[j] + tw]
            lr /= 255.0
            launched = (chunk, self.apply(self.variables, lr, valid))
            if pending is not None:
                yield from self._fetched(pending, progress)
            pending = launched
        yield from self._fetched(pending, progress)

    @staticmethod
    def _fetched(pending: tuple[list, jax.Array], progress: Callable[[int], Any] | None
                 ) -> Iterator[tuple[tuple[int, int], np.ndarray]]:
        chunk, sr = pending
        yield from zip(chunk, np.asarray(sr))
        if progress is not None:
            progress(len(chunk))


def common_scale(named: Sequence[tuple[str, Upscaler]], command: str) -> int:
    """The one `.scale` of the (name, upscaler) pairs; UserError listing them if they differ
    (`command`: what the user ran, e.g. "evaluate")."""
    scales = [upscaler.scale for _, upscaler in named]
    if len(set(scales)) > 1:
        listed = ", ".join(f"{name} x{upscaler.scale}" for name, upscaler in named)
        raise UserError(f"the checkpoints upscale by different factors ({listed}): {command} models of one scale "
                        "per run")
    return scales[0]


def cpu_cores() -> int:
    """CPU cores this process may run on (XLA:CPU uses them all)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _write_rows(out: np.ndarray, top: int, rows: np.ndarray) -> None:
    """Quantise finished float SR rows into out[top:, :, :3], dropping the padding."""
    count = min(rows.shape[0], out.shape[0] - top)
    if count > 0:
        out[top:top + count, :, :3] = sr_to_uint8(rows[:count, :out.shape[1]])


def masked_apply(generator: nn.Module, variables: Any, lr: jax.Array, valid: jax.Array) -> jax.Array:
    """G in inference mode on LR [B, h, w, 3] in [0, 1] whose top-left valid[0] x valid[1] is the image.

    Every convolution's input is zeroed outside the image (at that layer's resolution), as
    the convolution's 'SAME' zero padding would be on the exact shape; every other layer is
    pointwise or pixel-shuffle (`check_tileable` checks it). So the output's top-left
    valid * scale part equals `generator.apply(variables, lr[:, :valid[0], :valid[1]],
    train=False)` with one compiled shape for every valid size.
    """
    height = lr.shape[1]

    def zero_outside_image(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.Conv) and context.method_name == "__call__":
            x = args[0]
            factor = x.shape[1] // height
            rows = jnp.arange(x.shape[1]) < valid[0] * factor
            cols = jnp.arange(x.shape[2]) < valid[1] * factor
            args = (jnp.where((rows[:, None] & cols[None, :])[None, :, :, None], x, 0),) + args[1:]
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(zero_outside_image):
        return generator.apply(variables, lr, train=False)


def check_tileable(generator: nn.Module, variables: Any) -> None:
    """Raise ValueError unless `generator` in inference mode meets `masked_apply`'s premise.

    The premise: every layer is a stride-1, undilated 'SAME' `nn.Conv`, a PReLU, a BatchNorm
    on running averages, a pixel shuffle or an op on each pixel alone. Checked on the traced
    program of an 8 x 8 LR batch (`jax.make_jaxpr`: nothing is computed, so `variables` may
    be abstract): the settings of every call of a `_TRUSTED_LAYERS` module, and every
    primitive outside those calls and outside pixel shuffles, which must be `_POINTWISE`.
    """

    def trust_checked_layers(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__" or not isinstance(module, _TRUSTED_LAYERS):
            return next_fun(*args, **kwargs)  # traced through: its primitives are checked
        problem = _layer_problem(module, args, kwargs)
        if problem:
            raise _untileable(generator, [f"{'/'.join(module.path)}: {problem}"])
        with jax.named_scope(_TRUSTED_SCOPE):
            return next_fun(*args, **kwargs)

    lr = jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32)
    with nn.intercept_methods(trust_checked_layers):
        program = jax.make_jaxpr(functools.partial(generator.apply, train=False))(variables, lr)
    problems = sorted({f"{scope or 'top level'}: {primitive} is not pointwise"
                       for scope, primitive in _untrusted_ops(program.jaxpr)})
    if problems:
        raise _untileable(generator, problems)


def _untileable(generator: nn.Module, problems: list[str]) -> ValueError:
    return ValueError(f"{type(generator).__name__} cannot be tiled by masked_apply ({'; '.join(problems)}): "
                      "make the layer stride-1 'SAME' or pointwise, or extend masked_apply and check_tileable")


def _layer_problem(module: nn.Module, args: tuple, kwargs: dict) -> str | None:
    """What keeps one call of a `_TRUSTED_LAYERS` module from `masked_apply`'s premise (None: nothing)."""
    if isinstance(module, nn.Conv):
        ones = all(v == 1 for name in ("strides", "kernel_dilation", "input_dilation")
                   for v in np.ravel(getattr(module, name) or 1))
        if not ones or module.padding != "SAME":
            return (f"conv strides={module.strides} padding={module.padding!r} kernel_dilation="
                    f"{module.kernel_dilation} input_dilation={module.input_dilation}")
    if isinstance(module, nn.BatchNorm):
        running = kwargs.get("use_running_average", args[1] if len(args) > 1 else None)
        if not (module.use_running_average if running is None else running):
            return "BatchNorm on batch statistics (train mode)"
    return None


def _untrusted_ops(jaxpr: jex.core.Jaxpr, outer: str = "") -> Iterator[tuple[str, str]]:
    """(name scope, primitive) of each non-pointwise op outside trusted layers and pixel shuffles.

    Sub-programs (jit, custom_jvp, control flow) are searched with their caller's scope.
    """
    for eqn in jaxpr.eqns:
        scope = "/".join(filter(None, (outer, str(eqn.source_info.name_stack))))
        if {_TRUSTED_SCOPE, _SHUFFLE_SCOPE} & set(scope.split("/")):
            continue
        values = [v for value in eqn.params.values() for v in (value if isinstance(value, (tuple, list)) else (value,))]
        subs = [v for v in values if isinstance(v, (jex.core.Jaxpr, jex.core.ClosedJaxpr))]
        for sub in subs:
            yield from _untrusted_ops(getattr(sub, "jaxpr", sub), scope)
        if not subs and eqn.primitive.name not in _POINTWISE:
            yield scope, eqn.primitive.name


def load_generator(path: str | Path | None = None, *, tile: int = 128, overlap: int = 16, batch: int = 4,
                   dtype: str = "float32") -> Upscaler:
    """Restore a trained generator as an `Upscaler` (uint8 image -> uint8 image x scale).

    Args:
      path: a training workdir, its checkpoints/ folder or a step folder (the newest step is
        used), or the name of a shipped generator (`checkpoints.shipped_names()`); None: the
        shipped pretrained SRResNet x4.
      tile, overlap: LR tile size and the minimum overlap between neighbouring tiles, in
        pixels; tile = 0 runs each image whole.
      batch: tiles per forward pass.
      dtype: compute dtype, "float32" or "bfloat16" (parameters stay float32).
    """
    check_tiling(tile, overlap, batch)
    compute_dtype = config_lib.compute_dtype(dtype)
    path = checkpoints.find_generator(path)
    spec = checkpoints.read_generator_spec(path)
    abstract = jax.eval_shape(
        lambda: models.create_generator(spec).init(jax.random.key(0), jnp.zeros((1, 8, 8, 3))))
    variables = checkpoints.load_generator_variables(path, abstract)
    generator = models.create_generator(spec, compute_dtype)
    check_tileable(generator, abstract)
    apply = xla_cpu.jit(functools.partial(masked_apply, generator))
    return Upscaler(apply, variables, spec.scale, tile=tile, overlap=overlap, batch=batch, spec=spec,
                    checkpoint=str(path))
