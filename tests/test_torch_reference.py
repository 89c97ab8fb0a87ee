"""benchmarks/torch_reference.py: the PyTorch reference itself (no JAX involved).

Its command line in every mode at tiny sizes, the paper's parameter counts, the torchvision
VGG19 layout and preprocessing. Everything runs on the CPU in a few seconds.
"""

import json

import pytest

torch = pytest.importorskip("torch", reason="torch (CPU wheel: pip install torch==2.13.0) is the reference")
nn = torch.nn

from benchmarks import torch_reference  # noqa: E402

JSON_KEYS = {"mode", "batch", "hr_size", "blocks", "features", "device", "amp", "channels_last", "compile",
             "threads", "steps", "warmup", "ms_per_step", "images_per_s", "step_s", "torch"}


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """main(--threads 1) calls torch.set_num_threads; give the other tests their thread count back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("mode", ["g", "gan", "vgg_gan", "infer"])
def test_main_runs_each_mode_and_writes_the_documented_json(mode, tmp_path, capsys):
    out = tmp_path / "torch.json"
    returned = torch_reference.main(["--mode", mode, "--batch", "2", "--hr-size", "32", "--blocks", "1",
                                     "--features", "8", "--steps", "1", "--warmup", "0", "--threads", "1",
                                     "--device", "cpu", "--json", str(out)])
    result = json.loads(out.read_text())
    assert JSON_KEYS <= set(result)
    assert result == json.loads(json.dumps(returned))
    assert (result["mode"], result["batch"], result["hr_size"], result["blocks"], result["features"]) == \
        (mode, 2, 32, 1, 8)
    assert (result["device"], result["threads"], result["steps"], result["warmup"]) == ("cpu", 1, 1, 0)
    assert result["amp"] is False and result["channels_last"] is False and result["compile"] is False
    assert len(result["step_s"]) == 1 and result["step_s"][0] > 0
    assert result["images_per_s"] > 0
    assert result["images_per_s"] == pytest.approx(2 / result["step_s"][0])
    assert result["ms_per_step"] == pytest.approx(1e3 * result["step_s"][0])
    assert result["torch"] == torch.__version__
    assert f"{mode}:" in capsys.readouterr().out  # the one printed line


def test_bad_arguments_are_rejected_before_any_work():
    with pytest.raises(SystemExit):
        torch_reference.main(["--mode", "nope"])
    with pytest.raises(SystemExit):
        torch_reference.main(["--hr-size", "30", "--device", "cpu"])  # LR side must be hr / 4


def test_paper_parameter_counts():
    generator = torch_reference.Generator()  # B = 16, 64 features, x4
    discriminator = torch_reference.Discriminator()  # 96 px HR
    assert sum(p.numel() for p in generator.parameters()) == 1_550_659
    assert sum(p.numel() for p in discriminator.parameters()) == 23_565_505
    assert len(generator.blocks) == 16 and len(generator.ups) == len(generator.up_a) == 2
    assert discriminator.fc1.in_features == 6 * 6 * 512


def test_shapes_ranges_and_prelu_init():
    torch.manual_seed(0)
    generator = torch_reference.Generator(blocks=1, features=8).eval()
    assert all(torch.all(m.weight == 0.25) for m in generator.modules() if isinstance(m, nn.PReLU))
    with torch.no_grad():
        sr = generator(torch.rand(2, 3, 5, 7))
        logits = torch_reference.Discriminator(32).eval()(torch.rand(3, 3, 32, 32) * 2 - 1)
    assert sr.shape == (2, 3, 20, 28) and sr.abs().max() <= 1
    assert logits.shape == (3,)
    with pytest.raises(ValueError, match="power of 2"):
        torch_reference.Generator(scale=3)


def test_vgg19_features_has_torchvisions_layout_and_init():
    torch.manual_seed(0)
    features = torch_reference.vgg19_features()
    assert len(features) == 37  # torchvision's vgg19().features: indices 0..36
    convs = [i for i, m in enumerate(features) if isinstance(m, nn.Conv2d)]
    assert convs == [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
    assert tuple(convs) == torch_reference.VGG19_CONV_INDICES
    assert all(isinstance(features[i + 1], nn.ReLU) for i in convs)
    assert [i for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d)] == [4, 9, 18, 27, 36]
    assert [features[i].out_channels for i in convs] == [64] * 2 + [128] * 2 + [256] * 4 + [512] * 8
    assert all(features[i].kernel_size == (3, 3) and features[i].padding == (1, 1) for i in convs)
    assert all(torch.all(features[i].bias == 0) for i in convs)
    # kaiming_normal_(fan_out, relu): std = sqrt(2 / (out_channels * 9))
    conv5_4 = features[34].weight
    assert conv5_4.std().item() == pytest.approx((2 / (512 * 9)) ** 0.5, rel=0.02)
    assert isinstance(features[torch_reference.RELU5_4_INDEX], nn.ReLU)
    assert torch_reference.VGG_FEATURE_SCALE == 1 / 12.75


def test_vgg_preprocessing_is_torchvisions_on_zero_one_rgb():
    x = torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1)
    expected = (torch.tensor([0.0, 0.5, 1.0]) - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor(
        [0.229, 0.224, 0.225])
    torch.testing.assert_close(torch_reference.vgg_preprocess(x).flatten(), expected)


def test_vgg_content_is_frozen_and_stops_at_relu5_4():
    torch.manual_seed(0)
    content = torch_reference.VGGContent().train()
    assert not content.training and not any(p.requires_grad for p in content.parameters())
    assert len(content.features) == torch_reference.RELU5_4_INDEX + 1
    sr = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_(True)
    phi = content(sr)
    assert phi.shape == (1, 512, 2, 2) and phi.min() >= 0  # after the ReLU, before the last pool
    phi.sum().backward()
    assert sr.grad is not None and sr.grad.abs().max() > 0
