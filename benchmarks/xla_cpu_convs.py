"""Layer timings behind `srgan_jax/xla_cpu.py`: XLA's direct convolution vs the CPU forms.

    python benchmarks/xla_cpu_convs.py [--json out.json]

Milliseconds (median of 5 calls after 2 warm-ups), both sides compiled with
`xla_cpu.jit`, paper sizes at batch 16 (D sees real and fake: 32):
- G's 9x9, 64 -> 3 output convolution on [16, 96, 96, 64] (direct vs `row_split_conv`);
- D's first stride-2 convolution, 64 -> 64 on [32, 96, 96, 64] (direct vs `stride2_conv`);
each forward, input gradient alone, and input and kernel gradients together.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Callable

import jax
from jax import lax

from srgan_jax import xla_cpu

NHWC = ("NHWC", "HWIO", "NHWC")


def median_ms(function: Callable, *args: jax.Array, calls: int = 5, warmup: int = 2) -> float:
    for _ in range(warmup):
        jax.block_until_ready(function(*args))
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        jax.block_until_ready(function(*args))
        seconds.append(time.perf_counter() - start)
    return 1e3 * statistics.median(seconds)


def time_conv(conv: Callable, x: jax.Array, kernel: jax.Array, strides: tuple, padding) -> dict:
    """Forward, input-gradient and input + kernel gradient times of `conv` in milliseconds."""
    dims = lax.conv_dimension_numbers(x.shape, kernel.shape, NHWC)
    apply = lambda x, kernel: conv(x, kernel, strides, padding, dimension_numbers=dims)  # noqa: E731
    grad = jax.random.normal(jax.random.key(2), jax.eval_shape(apply, x, kernel).shape)
    forward = xla_cpu.jit(apply)
    input_grad = xla_cpu.jit(lambda x, k, g: jax.vjp(lambda x: apply(x, k), x)[1](g))
    grads = xla_cpu.jit(lambda x, k, g: jax.vjp(apply, x, k)[1](g))
    return {"forward_ms": median_ms(forward, x, kernel), "input_grad_ms": median_ms(input_grad, x, kernel, grad),
            "grads_ms": median_ms(grads, x, kernel, grad)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    key_x, key_k = jax.random.split(jax.random.key(0))
    tail_x = jax.random.normal(key_x, (16, 96, 96, 64))
    tail_kernel = jax.random.normal(key_k, (9, 9, 64, 3)) * 0.01
    strided_x = jax.random.normal(key_x, (32, 96, 96, 64))
    strided_kernel = jax.random.normal(key_k, (3, 3, 64, 64)) * 0.05
    results = {
        "backend": jax.default_backend(), "jax": jax.__version__, "compiler_options": xla_cpu.compiler_options(),
        "tail_9x9_direct": time_conv(lax.conv_general_dilated, tail_x, tail_kernel, (1, 1), "SAME"),
        "tail_9x9_row_split": time_conv(xla_cpu.row_split_conv, tail_x, tail_kernel, (1, 1), "SAME"),
        "d_stride2_direct": time_conv(lax.conv_general_dilated, strided_x, strided_kernel, (2, 2), [(1, 1)] * 2),
        "d_stride2_phases": time_conv(xla_cpu.stride2_conv, strided_x, strided_kernel, (2, 2), [(1, 1)] * 2),
    }
    text = json.dumps(results, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
