"""Generator / discriminator: parameter counts, pixel shuffle order, and forward passes
checked against the PyTorch modules of benchmarks/torch_reference.py (independent truth)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srgan_jax.config import GeneratorSpec
from srgan_jax.models import create_discriminator, create_generator
from srgan_jax.networks.discriminator import Discriminator
from srgan_jax.networks.generator import Generator
from srgan_jax.networks.layers import pixel_shuffle

torch = pytest.importorskip("torch", reason="torch (CPU wheel: pip install torch==2.13.0) is the reference")
nn = torch.nn

from benchmarks.torch_reference import Discriminator as TorchDiscriminator  # noqa: E402
from benchmarks.torch_reference import Generator as TorchGenerator  # noqa: E402


def count(params):
    return sum(x.size for x in jax.tree.leaves(params))


# ----------------------------------------------------------------- torch reference
# The modules are benchmarks/torch_reference.py's (the benchmark's PyTorch side too).


def t2n(t):
    return t.detach().numpy().copy()  # a copy: torch updates BN buffers in place


def conv_vars(conv):
    return {"kernel": t2n(conv.weight).transpose(2, 3, 1, 0), "bias": t2n(conv.bias)}


def bn_vars(bn):
    return ({"scale": t2n(bn.weight), "bias": t2n(bn.bias)},
            {"mean": t2n(bn.running_mean), "var": t2n(bn.running_var)})


def randomize(module):
    """Non-default BN statistics and PReLU slopes so the mapping is really tested."""
    gen = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = 1 + 0.1 * torch.randn(m.weight.shape, generator=gen)
            m.bias.data = 0.1 * torch.randn(m.bias.shape, generator=gen)
            m.running_mean = 0.1 * torch.randn(m.running_mean.shape, generator=gen)
            m.running_var = 1 + 0.1 * torch.rand(m.running_var.shape, generator=gen)
        if isinstance(m, nn.PReLU):
            m.weight.data = 0.25 + 0.1 * torch.randn(m.weight.shape, generator=gen)


def generator_variables_from_torch(tg):
    params, stats = {}, {}
    params["head_conv"] = conv_vars(tg.head)
    params["head_prelu"] = {"slope": t2n(tg.head_a.weight)}
    for i, block in enumerate(tg.blocks):
        p1, s1 = bn_vars(block.b1)
        p2, s2 = bn_vars(block.b2)
        params[f"block_{i}"] = {"Conv_0": conv_vars(block.c1), "BatchNorm_0": p1, "PReLU_0": {"slope": t2n(block.a.weight)},
                                "Conv_1": conv_vars(block.c2), "BatchNorm_1": p2}
        stats[f"block_{i}"] = {"BatchNorm_0": s1, "BatchNorm_1": s2}
    params["body_conv"] = conv_vars(tg.body)
    params["body_bn"], stats["body_bn"] = bn_vars(tg.body_bn)
    for i, (conv, act) in enumerate(zip(tg.ups, tg.up_a)):
        params[f"upsample_{i}_conv"] = conv_vars(conv)
        params[f"upsample_{i}_prelu"] = {"slope": t2n(act.weight)}
    params["tail_conv"] = conv_vars(tg.tail)
    return {"params": params, "batch_stats": stats}


# ----------------------------------------------------------------- tests


def test_parameter_counts_match_the_paper_sized_torch_modules():
    g_vars = jax.eval_shape(lambda: Generator().init(jax.random.key(0), jnp.zeros((1, 24, 24, 3))))
    d_vars = jax.eval_shape(lambda: Discriminator().init(jax.random.key(0), jnp.zeros((1, 96, 96, 3))))
    torch_g = sum(p.numel() for p in TorchGenerator(blocks=16, features=64).parameters())
    torch_d = sum(p.numel() for p in TorchDiscriminator(96).parameters())
    assert count(g_vars["params"]) == torch_g == 1_550_659
    assert count(d_vars["params"]) == torch_d == 23_565_505


@pytest.mark.parametrize("r", [2, 3])
def test_pixel_shuffle_matches_torch_and_the_channel_formula(r):
    c, h, w = 3, 4, 5
    x = np.random.default_rng(0).normal(size=(2, h, w, c * r * r)).astype(np.float32)
    ours = np.asarray(pixel_shuffle(jnp.asarray(x), r))
    ref = nn.PixelShuffle(r)(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(ours, ref)
    # out[b, y*r + i, x*r + j, ch] = in[b, y, x, ch*r*r + i*r + j]
    for ch, i, j in [(0, 0, 1), (2, 1, 0), (1, 1, 1)]:
        np.testing.assert_array_equal(ours[:, i::r, j::r, ch], x[..., ch * r * r + i * r + j])


@pytest.mark.parametrize("train", [False, True])
def test_generator_forward_matches_torch(train):
    torch.manual_seed(0)
    tg = TorchGenerator(blocks=2, features=16)
    randomize(tg)
    tg.train(train)
    lr = np.random.default_rng(1).uniform(size=(2, 11, 7, 3)).astype(np.float32)  # odd, non-square
    variables = generator_variables_from_torch(tg)
    with torch.no_grad():
        ref = tg(torch.from_numpy(lr.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
    with jax.default_matmul_precision("highest"):
        out = create_generator(GeneratorSpec(num_blocks=2, features=16)).apply(variables, lr, train=train,
                                                         mutable=["batch_stats"] if train else False)
    sr = out[0] if train else out
    assert sr.shape == (2, 44, 28, 3)
    np.testing.assert_allclose(np.asarray(sr), ref, atol=2e-5)
    if train:  # running means move like PyTorch's (momentum 0.1)
        torch_mean = t2n(tg.body_bn.running_mean)
        np.testing.assert_allclose(np.asarray(out[1]["batch_stats"]["body_bn"]["mean"]), torch_mean, atol=1e-5)


def test_x3_generator_forward_matches_torch():
    # torch_reference.Generator has x2 stages only: its trunk, with the one x3 stage swapped in.
    torch.manual_seed(0)
    tg = TorchGenerator(blocks=1, features=8, scale=2)
    tg.ups[0] = nn.Conv2d(8, 8 * 9, kernel_size=3, padding=1)
    randomize(tg)
    tg.eval()
    lr = np.random.default_rng(1).uniform(size=(2, 11, 7, 3)).astype(np.float32)
    with torch.no_grad():
        skip = tg.head_a(tg.head(torch.from_numpy(lr.transpose(0, 3, 1, 2))))
        h = tg.body_bn(tg.body(tg.blocks[0](skip))) + skip
        h = tg.up_a[0](nn.functional.pixel_shuffle(tg.ups[0](h), 3))
        ref = torch.tanh(tg.tail(h)).numpy().transpose(0, 2, 3, 1)
    with jax.default_matmul_precision("highest"):
        sr = create_generator(GeneratorSpec(num_blocks=1, features=8, scale=3)).apply(
            generator_variables_from_torch(tg), lr)
    assert sr.shape == (2, 33, 21, 3)
    np.testing.assert_allclose(np.asarray(sr), ref, atol=2e-5)


def discriminator_variables_from_torch(td):
    params = {"Conv_0": conv_vars(td.first)}
    for i, (conv, bn) in enumerate(zip(td.convs, td.bns)):
        params[f"Conv_{i + 1}"] = conv_vars(conv)
        params[f"BatchNorm_{i}"] = bn_vars(bn)[0]
    params["Dense_0"] = {"kernel": t2n(td.fc1.weight).T, "bias": t2n(td.fc1.bias)}
    params["Dense_1"] = {"kernel": t2n(td.fc2.weight).T, "bias": t2n(td.fc2.bias)}
    stats = {f"BatchNorm_{i}": bn_vars(bn)[1] for i, bn in enumerate(td.bns)}
    return {"params": params, "batch_stats": stats}


def test_discriminator_forward_matches_torch_including_strided_padding():
    torch.manual_seed(0)
    td = TorchDiscriminator(32)
    randomize(td)
    td.train(True)
    x = np.random.default_rng(2).uniform(-1, 1, size=(4, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        ref = td(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    with jax.default_matmul_precision("highest"):
        logits, _ = create_discriminator().apply(discriminator_variables_from_torch(td), x, train=True,
                                          mutable=["batch_stats"])
    assert logits.shape == (4,)
    np.testing.assert_allclose(np.asarray(logits), ref, atol=1e-4, rtol=1e-4)


def assert_close_to_torch_grad(ours, torch_grad, transpose=None):
    want = t2n(torch_grad) if transpose is None else t2n(torch_grad).transpose(transpose)
    np.testing.assert_allclose(np.asarray(ours), want, atol=1e-4 * np.abs(want).max())


def test_discriminator_gradients_match_torch():
    """Input and parameter gradients, through the CPU stride-2 convolutions' own VJP."""
    torch.manual_seed(0)
    td = TorchDiscriminator(32)
    randomize(td)
    x = np.random.default_rng(3).uniform(-1, 1, size=(4, 32, 32, 3)).astype(np.float32)
    weights = np.array([1.0, -2.0, 0.5, 3.0], np.float32)
    tx = torch.from_numpy(x.transpose(0, 3, 1, 2)).requires_grad_(True)
    (td(tx) * torch.from_numpy(weights)).sum().backward()
    variables = discriminator_variables_from_torch(td)

    def loss(params, x):
        logits, _ = create_discriminator().apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                                          train=True, mutable=["batch_stats"])
        return jnp.sum(logits * weights)

    with jax.default_matmul_precision("highest"):
        params_grad, x_grad = jax.grad(loss, argnums=(0, 1))(variables["params"], x)
    assert_close_to_torch_grad(x_grad, tx.grad, (0, 2, 3, 1))
    for i, conv in enumerate([td.first, *td.convs]):  # Conv_1, 3, 5, 7 are the stride-2 ones
        assert_close_to_torch_grad(params_grad[f"Conv_{i}"]["kernel"], conv.weight.grad, (2, 3, 1, 0))
    # The other convolutions feed training-mode BatchNorm, so their bias gradients are 0 up to rounding.
    assert_close_to_torch_grad(params_grad["Conv_0"]["bias"], td.first.bias.grad)


def test_generator_gradients_match_torch():
    """Input and parameter gradients, through the CPU row-split output convolution."""
    torch.manual_seed(0)
    tg = TorchGenerator(blocks=1, features=16)
    randomize(tg)
    lr = np.random.default_rng(4).uniform(size=(2, 6, 5, 3)).astype(np.float32)
    cotangent = np.random.default_rng(5).normal(size=(2, 24, 20, 3)).astype(np.float32)
    tlr = torch.from_numpy(lr.transpose(0, 3, 1, 2)).requires_grad_(True)
    (tg(tlr) * torch.from_numpy(cotangent.transpose(0, 3, 1, 2))).sum().backward()
    variables = generator_variables_from_torch(tg)

    def loss(params, lr):
        sr, _ = create_generator(GeneratorSpec(num_blocks=1, features=16)).apply(
            {"params": params, "batch_stats": variables["batch_stats"]}, lr, train=True, mutable=["batch_stats"])
        return jnp.sum(sr * cotangent)

    with jax.default_matmul_precision("highest"):
        params_grad, lr_grad = jax.grad(loss, argnums=(0, 1))(variables["params"], lr)
    assert_close_to_torch_grad(lr_grad, tlr.grad, (0, 2, 3, 1))
    for name, conv in [("tail_conv", tg.tail), ("head_conv", tg.head), ("upsample_1_conv", tg.ups[1])]:
        assert_close_to_torch_grad(params_grad[name]["kernel"], conv.weight.grad, (2, 3, 1, 0))
        assert_close_to_torch_grad(params_grad[name]["bias"], conv.bias.grad)


def test_generator_is_fully_convolutional_and_bfloat16_keeps_float32_params():
    model = Generator(num_blocks=1, features=8, dtype=jnp.bfloat16)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 6, 6, 3)))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
    for shape in [(1, 5, 9, 3), (2, 16, 3, 3)]:
        sr = model.apply(variables, jnp.ones(shape))
        assert sr.shape == (shape[0], shape[1] * 4, shape[2] * 4, 3)
        assert float(jnp.max(jnp.abs(sr))) <= 1.0
