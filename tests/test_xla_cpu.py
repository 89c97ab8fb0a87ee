"""XLA:CPU speed-ups: the two convolution forms against `lax.conv_general_dilated` (values
and both gradients), their use through `nn.Conv`, and the compile-option probe."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from srgan_jax import models, xla_cpu
from srgan_jax.config import GeneratorSpec

NHWC = ("NHWC", "HWIO", "NHWC")


def reference(x, kernel, strides, padding):
    return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=NHWC,
                                    precision=lax.Precision.HIGHEST)


def value_and_grads(conv, x, kernel, strides, padding):
    """conv(x, kernel), and the gradients of sum(conv * cotangent) with respect to x and kernel."""
    out_shape = jax.eval_shape(lambda: reference(x, kernel, strides, padding)).shape
    cotangent = jax.random.normal(jax.random.key(7), out_shape)
    dims = lax.conv_dimension_numbers(x.shape, kernel.shape, NHWC)

    def loss(x, kernel):
        out = conv(x, kernel, strides, padding, dimension_numbers=dims, precision=lax.Precision.HIGHEST)
        return jnp.sum(out * cotangent), out

    (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(x, kernel)
    return out, grads


def assert_matches_reference(conv, x_shape, kernel_shape, strides, padding):
    kx, kk = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, x_shape)
    kernel = jax.random.normal(kk, kernel_shape) / np.sqrt(np.prod(kernel_shape[:3]))
    ours = value_and_grads(conv, x, kernel, strides, padding)
    ref = value_and_grads(lambda x, k, s, p, **kw: reference(x, k, s, p), x, kernel, strides, padding)
    for got, want in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
        assert got.shape == want.shape
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5 * float(jnp.abs(want).max()))


@pytest.mark.parametrize("x_shape,kernel_shape,padding", [
    ((2, 12, 10, 16), (9, 9, 16, 3), "SAME"),  # the generator's tail, small
    ((1, 7, 5, 4), (3, 3, 4, 2), ((1, 1), (1, 1))),  # explicit symmetric padding
    ((2, 6, 9, 3), (5, 5, 3, 6), "SAME"),  # more outputs than inputs
])
def test_row_split_conv_matches_the_direct_convolution_and_its_gradients(x_shape, kernel_shape, padding):
    assert_matches_reference(xla_cpu.row_split_conv, x_shape, kernel_shape, (1, 1), padding)


@pytest.mark.parametrize("x_shape,kernel_shape", [
    ((2, 16, 12, 8), (3, 3, 8, 16)),
    ((3, 6, 6, 5), (3, 3, 5, 4)),
    ((1, 2, 2, 3), (3, 3, 3, 2)),  # smallest even input: one output pixel
])
def test_stride2_conv_matches_the_direct_convolution_and_its_gradients(x_shape, kernel_shape):
    assert_matches_reference(xla_cpu.stride2_conv, x_shape, kernel_shape, (2, 2), ((1, 1), (1, 1)))


@pytest.mark.parametrize("conv,x_shape,kernel_shape,strides,padding", [
    (xla_cpu.stride2_conv, (2, 7, 8, 3), (3, 3, 3, 4), (2, 2), ((1, 1), (1, 1))),  # odd height
    (xla_cpu.stride2_conv, (2, 8, 8, 3), (3, 3, 3, 4), (1, 1), ((1, 1), (1, 1))),  # stride 1
    (xla_cpu.stride2_conv, (2, 8, 8, 3), (3, 3, 3, 4), (2, 2), "SAME"),  # PyTorch padding differs
    (xla_cpu.row_split_conv, (2, 8, 8, 3), (4, 4, 3, 2), (1, 1), "SAME"),  # even kernel
    (xla_cpu.row_split_conv, (2, 8, 8, 3), (3, 3, 3, 2), (2, 2), "SAME"),  # strided
    (xla_cpu.row_split_conv, (2, 8, 8, 3), (3, 3, 3, 2), (1, 1), "VALID"),
])
def test_uncovered_cases_fall_back_to_the_direct_convolution(conv, x_shape, kernel_shape, strides, padding):
    assert_matches_reference(conv, x_shape, kernel_shape, strides, padding)


def test_nn_conv_with_either_form_keeps_nn_conv_parameters_and_output():
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 6))
    for conv_fn, kwargs in [(xla_cpu.row_split_conv, {"kernel_size": (9, 9)}),
                            (xla_cpu.stride2_conv, {"kernel_size": (3, 3), "strides": (2, 2), "padding": 1})]:
        plain = nn.Conv(3, **kwargs)
        fast = nn.Conv(3, **kwargs, conv_general_dilated=conv_fn)
        variables = plain.init(jax.random.key(0), x)
        assert jax.tree.map(jnp.shape, fast.init(jax.random.key(0), x)) == jax.tree.map(jnp.shape, variables)
        np.testing.assert_array_equal(fast.init(jax.random.key(0), x)["params"]["kernel"],
                                      variables["params"]["kernel"])
        with jax.default_matmul_precision("highest"):
            np.testing.assert_allclose(fast.apply(variables, x), plain.apply(variables, x), atol=1e-5)


@pytest.mark.skipif(not xla_cpu.on_cpu(), reason="the CPU forms are only used when JAX runs on the CPU")
def test_the_model_factory_hands_the_cpu_forms_to_the_networks():
    generator = models.create_generator(GeneratorSpec(num_blocks=1, features=8))
    assert generator.tail_conv is xla_cpu.row_split_conv
    g_jaxpr = str(jax.make_jaxpr(lambda x: generator.init_with_output(jax.random.key(0), x))(jnp.zeros((1, 6, 6, 3))))
    assert "27]" in g_jaxpr  # the tail's 1 x 9 convolution to 9 * 3 channels
    d = models.create_discriminator()
    assert d.strided_conv is xla_cpu.stride2_conv
    x = jnp.zeros((2, 32, 32, 3))
    variables = d.init(jax.random.key(0), x)
    d_jaxpr = str(jax.make_jaxpr(lambda x: d.apply(variables, x, mutable=["batch_stats"]))(x))
    assert d_jaxpr.count("custom_vjp_call") == 4  # the four stride-2 convolutions


@pytest.mark.skipif(not xla_cpu.on_cpu(), reason="compiler options are only set for XLA:CPU")
def test_jit_takes_convolutions_off_ynnpack_and_keeps_results():
    options = xla_cpu.compiler_options()
    assert options is not None and "xla_cpu_experimental_ynn_fusion_type" in options
    x = jax.random.normal(jax.random.key(0), (16, 48, 48, 64))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, 64, 64)) / 24.0
    f = lambda x, k: jnp.tanh(reference(x, k, (1, 1), "SAME"))  # noqa: E731
    default, ours = jax.jit(f).lower(x, kernel).compile(), xla_cpu.jit(f).lower(x, kernel).compile()
    assert "__ynn_fusion" in default.as_text() and "__ynn_fusion" not in ours.as_text()
    np.testing.assert_allclose(ours(x, kernel), default(x, kernel), atol=1e-5)


def test_compiler_options_are_none_when_xla_rejects_them(monkeypatch, caplog):
    monkeypatch.setattr(xla_cpu, "_YNN_FUSIONS", "LIBRARY_FUSION_TYPE_NOT_A_TYPE")
    xla_cpu._accepted_options.cache_clear()
    try:
        assert xla_cpu.compiler_options() is None
        assert "does not take xla_cpu_experimental_ynn_fusion_type" in caplog.text
    finally:
        xla_cpu._accepted_options.cache_clear()


def test_compiler_options_leave_a_user_set_xla_flag_alone(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=-individual_dot")
    xla_cpu._accepted_options.cache_clear()
    try:
        assert xla_cpu.compiler_options() is None
    finally:
        xla_cpu._accepted_options.cache_clear()


def test_row_split_conv_in_bfloat16_is_as_accurate_as_the_direct_convolution():
    x = jax.random.normal(jax.random.key(0), (4, 32, 32, 64))
    kernel = jax.random.normal(jax.random.key(1), (9, 9, 64, 3)) / 72.0
    dims = lax.conv_dimension_numbers(x.shape, kernel.shape, NHWC)
    exact = reference(x, kernel, (1, 1), "SAME")
    x16, kernel16 = x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16)
    ours = xla_cpu.row_split_conv(x16, kernel16, (1, 1), "SAME", dimension_numbers=dims)
    direct = lax.conv_general_dilated(x16, kernel16, (1, 1), "SAME", dimension_numbers=dims)
    assert ours.dtype == jnp.bfloat16
    rms = lambda y: float(jnp.sqrt(jnp.mean((y.astype(jnp.float32) - exact) ** 2)))  # noqa: E731
    assert rms(ours) <= 1.1 * rms(direct)
