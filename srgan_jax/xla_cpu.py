"""Every XLA:CPU speed trick of the project: compile options and two convolution forms.

Chosen by timing on 2 CPU cores with jaxlib 0.10 (README "Benchmarks" has the numbers and
`benchmarks/xla_cpu_convs.py` the layer timings); on GPU and TPU none of this is used. The
convolutions are drop-in replacements for `jax.lax.conv_general_dilated` (pass one as
`nn.Conv(..., conv_general_dilated=...)`): same parameters, same results up to summation
order, and they fall back to the plain convolution for any case they do not cover.

- `jit`: `jax.jit` with `compiler_options()`; every jitted train, eval and inference step
  is compiled through it. (`jax.pmap` takes no compiler options: pmap steps compile with
  XLA's defaults.)
- `compiler_options`: XLA:CPU in jaxlib 0.10 hands single convolutions to YNNPACK by
  default; for these models XLA's own (Eigen) convolution kernels are faster, so the
  options keep YNNPACK for dots and reductions only.
- `row_split_conv`: a k x k convolution with few output channels (the generator's
  9 x 9, 64 -> 3 output layer) as a 1 x k convolution to k times the channels plus k row
  shifts.
- `stride2_conv`: a 3 x 3 stride-2 convolution whose input gradient is four stride-1
  convolutions over the output-pixel phases, instead of XLA's convolution over a
  zero-dilated gradient (three quarters of whose multiplications are by zero). Being a
  `jax.custom_vjp`, it supports reverse-mode differentiation only (no `jax.jvp`).
- `tail_conv` / `strided_conv`: the form the model factory (`srgan_jax.models`) hands the
  generator and the discriminator as a module field: one of the above on the CPU, None
  (the plain convolution) elsewhere.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"
# Fusions left to YNNPACK: single dots and reductions; convolutions go to XLA's Eigen kernels.
_YNN_FUSIONS = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
_NHWC = ("NHWC", "HWIO", "NHWC")


def on_cpu() -> bool:
    """Whether computations are compiled for XLA:CPU (the default backend is the CPU)."""
    return jax.default_backend() == "cpu"


def compiler_options() -> dict[str, Any] | None:
    """Options for `jax.jit(..., compiler_options=...)`: the YNNPACK fusion choice on CPU.

    None on other backends, when `XLA_FLAGS` already sets the option (the user's choice
    wins), and on XLA versions that do not have it.
    """
    options = _accepted_options()
    return None if options is None else dict(options)


@functools.cache
def _accepted_options() -> tuple[tuple[str, str], ...] | None:
    if not on_cpu() or _YNN_OPTION in os.environ.get("XLA_FLAGS", ""):
        return None
    options = ((_YNN_OPTION, _YNN_FUSIONS),)
    try:  # each XLA release may add or drop experimental options; an unknown one fails compilation
        jax.jit(lambda x: x + 1).lower(np.float32(0)).compile(dict(options))
    except Exception as err:  # XLA reports an unknown option or value as a generic runtime error
        logging.getLogger(__name__).warning(
            "this XLA does not take %s (%s): CPU steps compile with XLA's defaults, which are slower here",
            _YNN_OPTION, str(err).splitlines()[0])
        return None
    return options


def jit(fun: Callable, **kwargs: Any) -> Callable:
    """`jax.jit(fun, **kwargs)` compiled with `compiler_options()` (XLA's defaults off the CPU)."""
    return jax.jit(fun, compiler_options=compiler_options(), **kwargs)


def tail_conv() -> Callable | None:
    """The generator's 9x9 output convolution form: `row_split_conv` on the CPU, else None."""
    return row_split_conv if on_cpu() else None


def strided_conv() -> Callable | None:
    """The discriminator's stride-2 convolution form: `stride2_conv` on the CPU, else None."""
    return stride2_conv if on_cpu() else None


def _is_plain_nhwc(lhs: jax.Array, rhs: jax.Array, lhs_dilation: Sequence[int] | None,
                   rhs_dilation: Sequence[int] | None, dimension_numbers: Any, feature_group_count: int) -> bool:
    """NHWC input, HWIO kernel, no dilation, no feature groups."""
    if dimension_numbers is None or feature_group_count != 1:
        return False
    layout = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    return (layout == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
            and all(d == 1 for d in lhs_dilation or (1,)) and all(d == 1 for d in rhs_dilation or (1,)))


def _pads_both_axes_by(padding: Any, amount: int) -> bool:
    """Whether explicit `padding` pads both spatial axes by `amount` on each side (strings: False)."""
    return not isinstance(padding, str) and [tuple(p) for p in padding] == [(amount, amount)] * 2


def row_split_conv(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int], padding: Any,
                   lhs_dilation: Sequence[int] | None = None, rhs_dilation: Sequence[int] | None = None,
                   dimension_numbers: Any = None, feature_group_count: int = 1, precision: Any = None) -> jax.Array:
    """`lax.conv_general_dilated` for a k x k, stride-1, 'SAME' NHWC convolution, k odd.

    With kernel K [k, k, C, O]: a 1 x k convolution with K rearranged to [1, k, C, k * O]
    gives, in channel group i, row i of the kernel applied to every input row; output row
    h is the sum over i of group i of row h + i - k // 2 (rows outside are zero padding).
    The partial sums are kept in float32 whatever the input dtype, so a bfloat16
    convolution rounds once, as the direct one does.
    """
    k = rhs.shape[0]
    half = k // 2
    # 'SAME' with stride 1 and an odd kernel pads half on each side.
    covered = (rhs.shape[1] == k and k % 2 == 1 and tuple(window_strides) == (1, 1)
               and (padding == "SAME" or _pads_both_axes_by(padding, half))
               and _is_plain_nhwc(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count))
    if not covered:
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                        dimension_numbers, feature_group_count, precision=precision)
    in_features, out_features = rhs.shape[2], rhs.shape[3]
    row_kernel = rhs.transpose(1, 2, 0, 3).reshape(1, k, in_features, k * out_features)
    rows = lax.conv_general_dilated(lhs, row_kernel, (1, 1), ((0, 0), (half, half)), dimension_numbers=_NHWC,
                                    precision=precision, preferred_element_type=jnp.float32)
    batch, height, width, _ = rows.shape
    rows = rows.reshape(batch, height, width, k, out_features)
    rows = jnp.pad(rows, ((0, 0), (half, half), (0, 0), (0, 0), (0, 0)))
    return sum(rows[:, i:i + height, :, i] for i in range(k)).astype(lhs.dtype)


# Kernel taps (along one axis) that meet input phase 0 (x[2o]: tap 1) and phase 1
# (x[2o - 1]: tap 0, x[2o + 1]: tap 2) in a 3-tap stride-2 convolution with padding 1.
_PHASE_TAPS = ((1,), (0, 2))


def _phase_conv(x: jax.Array, kernel: jax.Array, precision: Any) -> jax.Array:
    """The 3 x 3 stride-2 padding-1 convolution as a sum of four stride-1 convolutions.

    x [B, H, W, C] with H, W even is split into its four (row parity, column parity)
    phases [B, H/2, W/2, C]; each meets only its taps (1, 2 or 4 of the 9). Only used for
    its gradient with respect to x, which is then stride-1 convolutions too.
    """
    batch, height, width, channels = x.shape
    phases = x.reshape(batch, height // 2, 2, width // 2, 2, channels)
    out = 0
    for row_phase, row_taps in enumerate(_PHASE_TAPS):
        for col_phase, col_taps in enumerate(_PHASE_TAPS):
            part = phases[:, :, row_phase, :, col_phase]
            part = jnp.pad(part, ((0, 0), (len(row_taps) - 1, 0), (len(col_taps) - 1, 0), (0, 0)))
            taps = kernel[np.array(row_taps)][:, np.array(col_taps)]
            out = out + lax.conv_general_dilated(part, taps, (1, 1), "VALID", dimension_numbers=_NHWC,
                                                 precision=precision)
    return out


def _direct_stride2(x: jax.Array, kernel: jax.Array, precision: Any) -> jax.Array:
    return lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)), dimension_numbers=_NHWC,
                                    precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _stride2_conv3x3(x: jax.Array, kernel: jax.Array, precision: Any) -> jax.Array:
    return _direct_stride2(x, kernel, precision)


def _stride2_forward(x, kernel, precision):
    return _direct_stride2(x, kernel, precision), (x, kernel)


def _stride2_backward(precision, residuals, grad):
    x, kernel = residuals
    (x_grad,) = jax.linear_transpose(lambda x: _phase_conv(x, kernel, precision), x)(grad)
    (kernel_grad,) = jax.linear_transpose(lambda kernel: _direct_stride2(x, kernel, precision), kernel)(grad)
    return x_grad, kernel_grad


_stride2_conv3x3.defvjp(_stride2_forward, _stride2_backward)


def stride2_conv(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int], padding: Any,
                 lhs_dilation: Sequence[int] | None = None, rhs_dilation: Sequence[int] | None = None,
                 dimension_numbers: Any = None, feature_group_count: int = 1, precision: Any = None) -> jax.Array:
    """`lax.conv_general_dilated` for a 3 x 3, stride-2, padding-1 NHWC convolution of an even-sized input.

    The forward pass is the direct convolution, and so is the kernel gradient; the input
    gradient is computed from `_phase_conv`, with no multiplications by inserted zeros.
    """
    covered = (rhs.shape[:2] == (3, 3) and tuple(window_strides) == (2, 2) and _pads_both_axes_by(padding, 1)
               and lhs.shape[1] % 2 == 0 and lhs.shape[2] % 2 == 0
               and _is_plain_nhwc(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count))
    if not covered:
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                        dimension_numbers, feature_group_count, precision=precision)
    return _stride2_conv3x3(lhs, rhs, precision)
