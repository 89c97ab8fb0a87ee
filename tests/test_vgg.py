"""VGG19 port: converted torchvision / Keras weights reproduce those frameworks' own features.

Ground truth comes from the frameworks themselves (the torch VGG19 body of
benchmarks/torch_reference.py, in torchvision's `vgg19().features` layout,
`keras.applications.VGG19` and Keras's `preprocess_input`), with random weights so nothing
is downloaded. Images are small (2x32x32) to keep the module fast on two CPU cores.
"""

from __future__ import annotations

import hashlib
import json
import sys
from types import SimpleNamespace

import flax.serialization
import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srgan_jax import vgg_weights
from srgan_jax.networks import vgg19
from srgan_jax.errors import UserError

COMPARED = ("relu1_2", "relu2_2", "conv3_4", "relu5_4")
# Keras 3 on numpy 2 warns on every tensor -> array conversion; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

KERAS_NAMES = {"relu1_2": "block1_conv2", "relu2_2": "block2_conv2", "relu3_4": "block3_conv4",
               "relu5_4": "block5_conv4"}
TORCH_INDEX = dict(zip([name for name, _, _ in vgg19.CONVS], (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """[2, 32, 32, 3] RGB in [-1, 1]."""
    return np.random.default_rng(0).uniform(-1.0, 1.0, (2, 32, 32, 3)).astype(np.float32)


def _features(path, images, layers=COMPARED) -> dict[str, np.ndarray]:
    extractor = vgg_weights.load_feature_extractor(path, layers=layers)
    with jax.default_matmul_precision("highest"):
        return {name: np.asarray(value) for name, value in extractor(jnp.asarray(images)).items()}


def _convert(source, layout, out):
    vgg_weights.convert_vgg19(source, layout, out)
    return out


def _assert_close(ours: np.ndarray, reference: np.ndarray, name: str) -> None:
    assert ours.shape == reference.shape, name
    scale = np.abs(reference).max()
    assert scale > 0, f"{name}: reference features are all zero, the comparison would be vacuous"
    assert np.abs(ours - reference).max() < 1e-4 * scale, name


# --------------------------------------------------------------------------- Keras


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory, images):
    """One random-weight keras VGG19 (plus a small dense head that conversion must ignore),
    saved three ways, and Keras's own post-ReLU features for `images`."""
    keras = pytest.importorskip("keras")
    body = keras.applications.VGG19(weights=None, include_top=False, input_shape=(32, 32, 3))
    head = keras.layers.Dense(4, name="predictions")(keras.layers.Flatten(name="flatten")(body.output))
    model = keras.Model(body.input, head)
    folder = tmp_path_factory.mktemp("keras")
    files = {kind: folder / f"vgg19{kind}" for kind in (".weights.h5", ".h5", ".keras")}
    model.save_weights(files[".weights.h5"])
    model.save(files[".h5"])
    model.save(files[".keras"])
    taps = keras.Model(body.input, [body.get_layer(KERAS_NAMES[name]).output for name in KERAS_NAMES])
    rgb255 = (images.astype(np.float64) + 1.0) * 127.5
    caffe_input = keras.applications.vgg19.preprocess_input(rgb255.copy())
    reference = dict(zip(KERAS_NAMES, (np.asarray(out) for out in taps(caffe_input.astype(np.float32)))))
    return SimpleNamespace(files=files, folder=folder, reference=reference, caffe_input=caffe_input)


@pytest.mark.parametrize("kind", [".weights.h5", ".h5", ".keras"])
def test_keras_conversion_matches_keras_features(keras_files, images, tmp_path, kind):
    out = tmp_path / "vgg19.msgpack"
    meta = vgg_weights.convert_vgg19(keras_files.files[kind], "keras", out)
    assert meta["preprocessing"] == "caffe" and meta["layers"] == 16
    ours = _features(out, images, layers=COMPARED + ("relu3_4",))
    for name in ("relu1_2", "relu2_2", "relu3_4", "relu5_4"):
        _assert_close(ours[name], keras_files.reference[name], name)
    # Keras only exposes post-ReLU outputs: the pre-activation must ReLU to them and hold negatives.
    _assert_close(np.maximum(ours["conv3_4"], 0), keras_files.reference["relu3_4"], "conv3_4")
    assert ours["conv3_4"].min() < 0


def test_keras_preprocessing_matches_preprocess_input(keras_files, images):
    ours = np.asarray(vgg19.preprocess(jnp.asarray(images), "caffe"))
    np.testing.assert_allclose(ours, keras_files.caffe_input, atol=1e-4)


def test_legacy_keras_notop_layout_with_extra_layers(keras_files, images, tmp_path):
    """The keras-applications file names layers blockB_convC with datasets blockB_convC_W_1:0 / _b_1:0."""
    params, _ = vgg_weights.load_params(_convert(keras_files.files[".h5"], "keras", tmp_path / "ref.msgpack"))
    legacy = tmp_path / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
    with h5py.File(legacy, "w") as h5:
        names = []
        for name, _, _ in vgg19.CONVS:
            block, conv = name[4], name[6]
            layer = f"block{block}_conv{conv}"
            group = h5.create_group(layer)
            group.create_dataset(f"{layer}_W_1:0", data=params[name]["kernel"])
            group.create_dataset(f"{layer}_b_1:0", data=params[name]["bias"])
            names.append(layer)
        h5.create_group("fc1").create_dataset("fc1_W_1:0", data=np.zeros((8, 4), np.float32))
        h5.attrs["layer_names"] = [n.encode() for n in names + ["fc1"]]
    converted, _ = vgg_weights.load_params(_convert(legacy, "keras", tmp_path / "legacy.msgpack"))
    for name in params:
        np.testing.assert_array_equal(converted[name]["kernel"], params[name]["kernel"])
        np.testing.assert_array_equal(converted[name]["bias"], params[name]["bias"])


# --------------------------------------------------------------------------- torchvision


@pytest.fixture(scope="module")
def torch_files(tmp_path_factory, images):
    """A random-init torch VGG19 `features` stack saved as .pth / .safetensors / .npz (with
    classifier keys that conversion must ignore), and torch's own features for `images`."""
    torch = pytest.importorskip("torch", reason="torch not importable: torchvision-layout .pth test needs it")
    from torch import nn

    from benchmarks import torch_reference

    torch.manual_seed(0)
    features = torch_reference.vgg19_features().eval()  # torchvision's layout and init (zero biases)
    for module in features:
        if isinstance(module, nn.Conv2d):  # a nonzero bias, to test that it loads
            nn.init.uniform_(module.bias, -0.1, 0.1)
    state = {f"features.{key}": value for key, value in features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(16, 8)
    state["classifier.0.bias"] = torch.zeros(16)

    folder = tmp_path_factory.mktemp("torch")
    files = {kind: folder / f"vgg19{kind}" for kind in (".pth", ".safetensors", ".npz")}
    torch.save(state, files[".pth"])
    from safetensors.numpy import save_file

    numpy_state = {key: value.numpy() for key, value in state.items()}
    save_file(numpy_state, str(files[".safetensors"]))
    np.savez(files[".npz"], **numpy_state)

    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (torch.from_numpy(images).permute(0, 3, 1, 2) + 1.0) / 2.0
    x = (x - mean) / std
    taps = {TORCH_INDEX[name.replace("relu", "conv")] + (1 if name.startswith("relu") else 0): name
            for name in COMPARED}
    reference = {}
    with torch.no_grad():
        for index, module in enumerate(features):
            x = module(x)
            if index in taps:
                reference[taps[index]] = x.permute(0, 2, 3, 1).numpy().copy()
            if len(reference) == len(taps):
                break
    return SimpleNamespace(files=files, reference=reference, numpy_state=numpy_state)


@pytest.mark.parametrize("kind", [".pth", ".safetensors", ".npz"])
def test_torchvision_conversion_matches_torch_features(torch_files, images, tmp_path, kind):
    out = tmp_path / "vgg19.msgpack"
    meta = vgg_weights.convert_vgg19(torch_files.files[kind], "torchvision", out)
    assert meta["preprocessing"] == "torchvision" and meta["layout"] == "torchvision"
    ours = _features(out, images)
    for name in COMPARED:
        _assert_close(ours[name], torch_files.reference[name], name)
    assert ours["conv3_4"].min() < 0  # pre-activation really is before the ReLU


def test_sidecar_records_provenance(torch_files, tmp_path):
    out = tmp_path / "w.msgpack"
    vgg_weights.convert_vgg19(torch_files.files[".npz"], "torchvision", out)
    meta = json.loads(vgg_weights.sidecar_path(out).read_text())
    assert meta["source"] == "vgg19.npz"
    assert meta["source_sha256"] == hashlib.sha256(torch_files.files[".npz"].read_bytes()).hexdigest()
    assert meta["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert meta["mean"] == [0.485, 0.456, 0.406] and meta["std"] == [0.229, 0.224, 0.225]
    assert meta["channel_order"] == "RGB"


def test_cli_prints_path_hash_and_layer_count(torch_files, tmp_path, capsys):
    from srgan_jax import cli

    out = tmp_path / "sub" / "vgg19.msgpack"
    assert cli.main(["convert-vgg19", str(torch_files.files[".safetensors"]), "--from", "torchvision",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and json.loads(vgg_weights.sidecar_path(out).read_text())["sha256"] in printed
    assert "16 conv layers" in printed


# --------------------------------------------------------------------------- module behaviour


def test_module_returns_requested_layers_and_stops_early():
    x = jnp.zeros((1, 16, 16, 3))
    variables = vgg19.VGG19(layers=("conv2_1", "relu1_2")).init(jax.random.PRNGKey(0), x)
    assert sorted(variables["params"]) == ["conv1_1", "conv1_2", "conv2_1"]  # nothing deeper was built
    out = vgg19.VGG19(layers=("conv2_1", "relu1_2")).apply(variables, x)
    assert set(out) == {"conv2_1", "relu1_2"}
    assert out["relu1_2"].shape == (1, 16, 16, 64) and out["conv2_1"].shape == (1, 8, 8, 128)


def test_preprocessing_of_generator_range():
    x = np.array([[[[-1.0, 0.0, 1.0]]]], np.float32)
    torchvision = np.asarray(vgg19.preprocess(jnp.asarray(x), "torchvision"))
    expected = (np.array([0.0, 0.5, 1.0]) - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(torchvision[0, 0, 0], expected, rtol=1e-6)
    caffe = np.asarray(vgg19.preprocess(jnp.asarray(x), "caffe"))
    np.testing.assert_allclose(caffe[0, 0, 0], [255.0 - 103.939, 127.5 - 116.779, 0.0 - 123.68], rtol=1e-6)


def test_extractor_is_preprocessing_then_module():
    extractor = vgg19.random_feature_extractor(("relu1_2",), seed=1, preprocessing="caffe")
    x = jax.random.uniform(jax.random.PRNGKey(2), (1, 8, 8, 3), minval=-1.0, maxval=1.0)
    manual = vgg19.VGG19(layers=("relu1_2",)).apply({"params": extractor.params}, vgg19.preprocess(x, "caffe"))
    np.testing.assert_allclose(extractor(x)["relu1_2"], manual["relu1_2"], rtol=1e-5, atol=1e-5)


def test_no_gradient_to_vgg_params_but_gradient_to_images():
    extractor = vgg19.random_feature_extractor(("relu2_2",), seed=0)
    x = jax.random.uniform(jax.random.PRNGKey(1), (1, 8, 8, 3), minval=-1.0, maxval=1.0)

    def total(params, images):
        return jnp.sum(extractor.replace(params=params)(images)["relu2_2"])

    params_grad, images_grad = jax.grad(total, argnums=(0, 1))(extractor.params, x)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree_util.tree_leaves(params_grad))
    assert float(jnp.abs(images_grad).max()) > 0.0


def test_extractor_works_under_jit_as_argument_and_closure():
    extractor = vgg19.random_feature_extractor(("relu1_1",), seed=0)
    x = jnp.full((1, 4, 4, 3), 0.25)
    as_argument = jax.jit(lambda fe, images: fe(images))(extractor, x)["relu1_1"]
    as_closure = jax.jit(lambda images: extractor(images))(x)["relu1_1"]
    np.testing.assert_allclose(as_argument, as_closure, rtol=1e-6)


def test_unknown_layer_name_is_a_user_error():
    with pytest.raises(ValueError, match="relu5_4"):
        vgg19.random_feature_extractor(("relu5_5",))


# --------------------------------------------------------------------------- errors


def _save_npz(path, state):
    np.savez(path, **state)
    return path


def test_missing_files_name_the_convert_command(tmp_path):
    with pytest.raises(UserError, match="convert-vgg19"):
        vgg_weights.load_feature_extractor(tmp_path / "absent.msgpack")
    with pytest.raises(UserError, match="not found"):
        vgg_weights.convert_vgg19(tmp_path / "absent.pth", "torchvision", tmp_path / "out.msgpack")


def test_pth_without_torch_suggests_safetensors(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    path = tmp_path / "vgg19-dcbb9e9d.pth"
    path.write_bytes(b"PK")  # not empty: an empty file is reported as such first
    with pytest.raises(UserError, match="needs PyTorch.*safetensors or .npz"):
        vgg_weights.convert_vgg19(path, "torchvision", tmp_path / "out.msgpack")


def test_classifier_only_and_wrong_shape_state_dicts_are_rejected(tmp_path):
    classifier = _save_npz(tmp_path / "classifier.npz", {"classifier.0.weight": np.zeros((4, 8), np.float32)})
    with pytest.raises(UserError, match="features.0.weight.*torchvision.models.vgg19"):
        vgg_weights.convert_vgg19(classifier, "torchvision", tmp_path / "out.msgpack")
    wrong = {f"features.{i}.weight": np.zeros((64, 3, 3, 3), np.float32) for i in TORCH_INDEX.values()}
    wrong.update({f"features.{i}.bias": np.zeros(64, np.float32) for i in TORCH_INDEX.values()})
    with pytest.raises(UserError, match="conv1_2 has kernel"):
        vgg_weights.convert_vgg19(_save_npz(tmp_path / "wrong.npz", wrong), "torchvision", tmp_path / "out.msgpack")
    assert not (tmp_path / "out.msgpack").exists()


def test_wrong_layout_flag_says_which_to_use(tmp_path):
    keras_file = tmp_path / "vgg19.h5"
    keras_file.write_bytes(b"")
    torch_file = tmp_path / "vgg19.pth"
    torch_file.write_bytes(b"")
    with pytest.raises(UserError, match="--from keras"):
        vgg_weights.convert_vgg19(keras_file, "torchvision", tmp_path / "out.msgpack")
    with pytest.raises(UserError, match="--from torchvision"):
        vgg_weights.convert_vgg19(torch_file, "keras", tmp_path / "out.msgpack")
    with pytest.raises(UserError, match="convert it first: srgan-jax convert-vgg19 .*--from keras"):
        vgg_weights.load_feature_extractor(keras_file)


def test_non_vgg_keras_file_is_rejected(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as h5:
        h5.create_group("dense").create_dataset("kernel", data=np.zeros((4, 4), np.float32))
    with pytest.raises(UserError, match="no VGG19 conv layers"):
        vgg_weights.convert_vgg19(path, "keras", tmp_path / "out.msgpack")


def test_converted_file_without_sidecar_or_with_wrong_shapes(tmp_path):
    extractor = vgg19.random_feature_extractor(("relu5_4",), seed=0)
    params = jax.tree_util.tree_map(np.asarray, extractor.params)
    path = tmp_path / "vgg19.msgpack"
    path.write_bytes(flax.serialization.msgpack_serialize({"params": params}))
    with pytest.raises(UserError, match="no sidecar .*convert-vgg19"):
        vgg_weights.load_feature_extractor(path)

    params["conv5_4"]["kernel"] = params["conv5_4"]["kernel"][..., :8]
    data = flax.serialization.msgpack_serialize({"params": params})
    path.write_bytes(data)
    vgg_weights.sidecar_path(path).write_text(json.dumps(
        {"preprocessing": "torchvision", "sha256": hashlib.sha256(data).hexdigest()}))
    with pytest.raises(UserError, match="conv5_4 has kernel .*convert-vgg19"):
        vgg_weights.load_feature_extractor(path)

    path.write_bytes(data + b"x")
    with pytest.raises(UserError, match="sha256 mismatch"):
        vgg_weights.load_feature_extractor(path)


# --------------------------------------------------------------------------- damaged and hostile files

_SMALL_STATE = {"features.0.weight": np.ones((64, 3, 3, 3), np.float32), "features.0.bias": np.ones(64, np.float32)}


def _cut(path, keep=0.5):
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])
    return path


def _flip(path, start, count=32):
    data = bytearray(path.read_bytes())
    data[start:start + count] = bytes(b ^ 0xFF for b in data[start:start + count])
    path.write_bytes(bytes(data))
    return path


def _pth(path, legacy=False):
    torch = pytest.importorskip("torch")
    torch.save({k: torch.from_numpy(v) for k, v in _SMALL_STATE.items()}, path,
               _use_new_zipfile_serialization=not legacy)
    return path


def _safetensors(path):
    from safetensors.numpy import save_file

    save_file(_SMALL_STATE, str(path))
    return path


def _h5(path):
    with h5py.File(path, "w") as h5:
        group = h5.create_group("block1_conv1")
        group.create_dataset("kernel", data=np.ones((3, 3, 3, 64), np.float32))
        group.create_dataset("bias", data=np.ones(64, np.float32))
    return path


def _keras_archive(path, inner: bytes):
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model.weights.h5", inner)
    return path


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _npy_named_npz(folder):
    np.save(folder / "w.npy", np.ones(3))
    return (folder / "w.npy").rename(folder / "w.npz")


DAMAGED_SOURCES = {  # name: (--from, make the file in a folder, what the one line must say)
    "truncated .pth": ("torchvision", lambda d: _cut(_pth(d / "w.pth")), "damaged or incomplete"),
    "truncated legacy .pth": ("torchvision", lambda d: _cut(_pth(d / "w.pth", legacy=True)), "damaged"),
    "garbage .pth": ("torchvision", lambda d: _write(d / "w.pth", b"not a pickle" * 8), "damaged"),
    "empty .pth": ("torchvision", lambda d: _write(d / "w.pth", b""), "empty"),
    "truncated .safetensors": ("torchvision", lambda d: _cut(_safetensors(d / "w.safetensors")), "SafetensorError"),
    "damaged .safetensors header": ("torchvision", lambda d: _flip(_safetensors(d / "w.safetensors"), 20),
                                    "SafetensorError"),
    "truncated .npz": ("torchvision", lambda d: _cut(_save_npz(d / "w.npz", _SMALL_STATE)), "not a complete .npz"),
    "flipped bytes in .npz": ("torchvision", lambda d: _flip(_save_npz(d / "w.npz", _SMALL_STATE), 400), "CRC"),
    "object array .npz": ("torchvision", lambda d: _save_npz(d / "w.npz", {"a": np.array([object()], dtype=object)}),
                          "object arrays (pickled Python objects) and is refused"),
    ".npy named .npz": ("torchvision", _npy_named_npz, "not a complete .npz"),
    "truncated .h5": ("keras", lambda d: _cut(_h5(d / "w.h5")), "truncated file"),
    "truncated .h5 in .keras": ("keras", lambda d: _keras_archive(d / "w.keras", _cut(_h5(d / "w.h5")).read_bytes()),
                                "truncated file"),
    "flipped bytes in .keras": ("keras", lambda d: _flip(_keras_archive(d / "w.keras", _h5(d / "w.h5").read_bytes()),
                                                         1000), "CRC"),
}


@pytest.mark.parametrize("damage", DAMAGED_SOURCES)
def test_a_damaged_weight_file_is_one_line_naming_it(tmp_path, damage, capsys):
    from srgan_jax import cli

    layout, make, says = DAMAGED_SOURCES[damage]
    source = make(tmp_path)
    out = tmp_path / "out" / "vgg19.msgpack"
    assert cli.main(["convert-vgg19", str(source), "--from", layout, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"srgan-jax convert-vgg19: error: {source}") and says in err, err
    assert not out.exists()


def test_a_pth_holding_other_objects_is_refused_without_running_them(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from srgan_jax import cli

    ran = tmp_path / "ran"

    class Payload:
        def __reduce__(self):  # what a hostile pickle does: call any function when loaded
            return (open, (str(ran), "w"))

    source = tmp_path / "vgg19.pth"
    torch.save({"features.0.weight": Payload()}, source)
    assert cli.main(["convert-vgg19", str(source), "--from", "torchvision", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"srgan-jax convert-vgg19: error: {source} holds objects other than tensors (")
    assert "is refused, as loading them could run code" in err and "state_dict()" in err
    assert "weights_only" not in err and not ran.exists()


@pytest.mark.parametrize("sidecar, says", [("{not json", "cannot be read as JSON"), ("[1, 2]", "holds a JSON list")])
def test_a_damaged_sidecar_is_one_line(tmp_path, sidecar, says):
    path = tmp_path / "vgg19.msgpack"
    path.write_bytes(b"")
    vgg_weights.sidecar_path(path).write_text(sidecar)
    with pytest.raises(UserError, match=says) as raised:
        vgg_weights.load_feature_extractor(path)
    assert len(str(raised.value).splitlines()) == 1


def test_nan_weights_are_reported_as_damage(tmp_path):
    state = {f"features.{i}.{kind}": np.zeros(shape, np.float32) for (_, c_in, c_out), i in
             zip(vgg19.CONVS, TORCH_INDEX.values()) for kind, shape in (("weight", (c_out, c_in, 3, 3)),
                                                                        ("bias", (c_out,)))}
    state["features.5.bias"][3] = np.nan
    with pytest.raises(UserError, match="conv2_1 holds NaN or Inf weights: the file is damaged"):
        vgg_weights.convert_vgg19(_save_npz(tmp_path / "w.npz", state), "torchvision", tmp_path / "o.msgpack")
