"""Benchmark loading and scoring: baselines on Set5, and per-file problems that do not stop a set."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
from PIL import Image

from conftest import write_tiny_checkpoint  # tests/ is on sys.path (pytest's rootdir import)
from srgan_jax import cli, evaluate
from srgan_jax.errors import UserError


def _data_dir() -> Path:
    return Path(os.environ.get("SRGAN_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")


def _save(path: Path, shape: tuple[int, ...], seed: int = 0) -> None:
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    image = 128 + 60 * np.sin(x / 5.0) * np.cos(y / 7.0) + np.random.default_rng(seed).normal(0, 5, shape[:2])
    image = np.clip(image, 0, 255).astype(np.uint8)
    Image.fromarray(np.stack([image] * 3, -1) if len(shape) == 3 else image).save(path)


def _evaluate(data_dir: Path | str, sets: Sequence[str] = ("Toy",), **options) -> evaluate.Evaluation:
    """`evaluate_benchmarks` with --method bicubic unless `options` say otherwise."""
    return evaluate.evaluate_benchmarks(data_dir, sets, **{"method": "bicubic", **options})


@pytest.fixture
def toy_set(tmp_path: Path) -> Path:
    """tmp_path/Toy: a.png (64x48 RGB), b.png (66x50 gray: mod-cropped to 64x48), no LR folder."""
    (tmp_path / "Toy").mkdir()
    _save(tmp_path / "Toy" / "a.png", (48, 64, 3), seed=0)
    _save(tmp_path / "Toy" / "b.png", (50, 66), seed=1)
    return tmp_path


def test_make_lr_modcrops_and_converts_gray(toy_set):
    pairs, errors = evaluate.load_image_pairs(toy_set, "Toy", 4)
    assert errors == []
    assert evaluate.resolve_lr_source(toy_set, "Toy", 4) == "make"
    assert [(name, lr.shape, hr.shape) for name, lr, hr in pairs] == [
        ("a", (12, 16, 3), (48, 64, 3)),
        ("b", (12, 16, 3), (48, 64, 3)),
    ]


def test_corrupt_image_is_reported_and_others_evaluated(toy_set):
    (toy_set / "Toy" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    pairs, errors = evaluate.load_image_pairs(toy_set, "Toy", 4)
    assert [name for name, _, _ in pairs] == ["a", "b"]
    assert len(errors) == 1 and "broken.png" in errors[0] and "\n" not in errors[0]
    result = evaluate.evaluate_set(evaluate.baselines(4)["bicubic"], pairs, 4)
    assert result["n"] == 2 and set(result["per_image"]) == {"a", "b"}


def test_shipped_lr_size_mismatch_is_named(toy_set):
    (toy_set / "Toy_LR_x4").mkdir()
    _save(toy_set / "Toy_LR_x4" / "a.png", (12, 16, 3))
    _save(toy_set / "Toy_LR_x4" / "b.png", (13, 16))
    pairs, errors = evaluate.load_image_pairs(toy_set, "Toy", 4)
    assert evaluate.resolve_lr_source(toy_set, "Toy", 4) == "shipped"
    assert [name for name, _, _ in pairs] == ["a"]
    assert len(errors) == 1 and "b.png" in errors[0] and "16x13" in errors[0]


def test_missing_and_empty_sets_are_named(tmp_path):
    (tmp_path / "Empty").mkdir()
    pairs, errors = evaluate.load_image_pairs(tmp_path, "Nope", 4)
    assert pairs == [] and len(errors) == 1 and str(tmp_path / "Nope") in errors[0]
    pairs, errors = evaluate.load_image_pairs(tmp_path, "Empty", 4)
    assert pairs == [] and "Empty" in errors[0]
    pairs, errors = evaluate.load_image_pairs(tmp_path, "Empty", 4, lr_source="shipped")
    assert pairs == [] and len(errors) == 1


def test_evaluate_reports_missing_set_scores_the_others_and_exits_1(toy_set, tmp_path, capsys):
    out = tmp_path / "r.json"
    argv = ["evaluate", "--method", "bicubic", "--data-dir", str(toy_set)]
    assert cli.main([*argv, "--sets", "Toy,Nope", "--json", str(out)]) == 1
    captured = capsys.readouterr()
    assert "Nope" in captured.err and "| bicubic | Toy |" in captured.out
    result = json.loads(out.read_text())
    assert set(result) == {"Toy"} and result["Toy"]["n"] == 2
    assert set(result["Toy"]["per_image"]) == {"a", "b"}
    assert cli.main([*argv, "--sets", "Toy"]) == 0


def test_nothing_evaluated_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no images"):
        _evaluate(tmp_path, ["Nope"])
    with pytest.raises(UserError, match="--data-dir"):
        _evaluate(tmp_path / "missing")


def test_format_table_columns():
    table = evaluate.format_table(
        {"bicubic": {"Set5": {"psnr": 28.4234, "ssim": 0.81012, "n": 5}}}, {"Set5": "shipped"}
    )
    assert table.splitlines()[0] == "| method | set | PSNR (dB) | SSIM | images | LR source |"
    assert table.splitlines()[2] == "| bicubic | Set5 | 28.42 | 0.8101 | 5 | shipped |"


def test_set5_baselines():
    data = _data_dir()
    if not (data / "Set5").is_dir():
        pytest.skip(f"Set5 not found under {data} (set SRGAN_DATA_DIR)")
    pairs, errors = evaluate.load_image_pairs(data, "Set5", 4)
    assert errors == [] and len(pairs) == 5
    baselines = evaluate.baselines(4)
    bicubic = evaluate.evaluate_set(baselines["bicubic"], pairs, 4)
    nearest = evaluate.evaluate_set(baselines["nearest"], pairs, 4)
    # The paper's bicubic Set5 x4 figure is 28.43 dB.
    assert 28.2 < bicubic["psnr"] < 28.6 and 0.79 < bicubic["ssim"] < 0.83
    assert nearest["psnr"] < bicubic["psnr"] and nearest["ssim"] < bicubic["ssim"]


def test_niqe_column_hr_reference_and_perception_distortion_plot(tmp_path, capsys, monkeypatch):
    """--metrics adds NIQE (of each method's SR and of HR itself, Y, crop 4); --plot writes the figure."""
    from PIL import Image as PILImage

    from srgan_jax import niqe

    (tmp_path / "Big").mkdir()  # NIQE needs a 96x96 block after the 4-px crop
    for i in range(2):
        _save(tmp_path / "Big" / f"im{i}.png", (112, 120, 3), seed=i)
    out, plot = tmp_path / "r.json", tmp_path / "figs" / "pd.png"
    # Nearest-neighbour stands in for the model, so the test needs no checkpoint.
    baselines = evaluate.baselines(4)
    monkeypatch.setattr(evaluate, "_methods", lambda *_: ({"model": baselines["nearest"], **baselines}, 4))
    evaluation = _evaluate(tmp_path, ["Big"], method=None, metric_names=["psnr", "ssim", "niqe"], plot=plot,
                           json_path=out)
    assert evaluation.problems == []
    table = capsys.readouterr().out
    assert "| NIQE |" in table and "| HR | Big | - | - |" in table
    result = json.loads(out.read_text())
    pairs, _ = evaluate.load_image_pairs(tmp_path, "Big", 4)
    name, lr, hr = pairs[0]
    assert result["HR"]["Big"]["per_image"][name] == {"niqe": niqe.niqe(hr, crop_border=4)}
    sr = evaluate.bicubic_upscale(lr, 4)
    assert result["bicubic"]["Big"]["per_image"][name]["niqe"] == niqe.niqe(sr, crop_border=4)
    assert result["bicubic"]["Big"]["per_image"][name]["psnr"] == evaluate.metrics.psnr(sr, hr)
    with PILImage.open(plot) as figure:
        assert figure.format == "PNG" and figure.size == (420, 340)


def test_plot_needs_psnr_and_niqe(toy_set, tmp_path):
    with pytest.raises(UserError, match="--plot draws PSNR against NIQE"):
        _evaluate(toy_set, plot=tmp_path / "pd.png")
    with pytest.raises(UserError, match="--metrics psnr,lpips"):
        _evaluate(toy_set, metric_names=["psnr", "lpips"])
    with pytest.raises(UserError, match="drop niqe from --metrics"):  # 48x64: no 96x96 NIQE block
        _evaluate(toy_set, metric_names=["niqe"])


# --------------------------------------------------------------------------- the scale comes from the model


@pytest.fixture(scope="module")
def x2_checkpoint(tmp_path_factory) -> Path:
    """conftest's `tiny_checkpoint` at x2."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("workdir_x2"), scale=2)


@pytest.fixture
def two_set(tmp_path: Path) -> Path:
    """tmp_path/Two: a.png (48x64 RGB), b.png (51x65 gray: mod-cropped to 50x64 at x2, 48x64 at x4);
    Two_LR_x4/ holds x4 LR images, which an x2 evaluation must not read."""
    (tmp_path / "Two").mkdir()
    _save(tmp_path / "Two" / "a.png", (48, 64, 3), seed=0)
    _save(tmp_path / "Two" / "b.png", (51, 65), seed=1)
    (tmp_path / "Two_LR_x4").mkdir()
    _save(tmp_path / "Two_LR_x4" / "a.png", (12, 16, 3), seed=2)
    _save(tmp_path / "Two_LR_x4" / "b.png", (12, 16), seed=3)
    return tmp_path


def _one_line_error(argv: list[str], capsys) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("srgan-jax evaluate: error: ") and "\n" not in err
    return err


def test_an_x2_model_is_scored_at_x2_without_a_scale_flag(x2_checkpoint, two_set, capsys):
    from srgan_jax.data.images import mod_crop, read_rgb
    from srgan_jax.data.imresize import imresize
    from srgan_jax.upscaling import engine

    out = two_set / "r.json"
    argv = ["evaluate", "--checkpoint", str(x2_checkpoint), "--data-dir", str(two_set), "--sets", "Two"]
    assert cli.main([*argv, "--json", str(out)]) == 0
    assert "| model | Two |" in capsys.readouterr().out
    result = json.loads(out.read_text())
    upscaler = engine.load_generator(x2_checkpoint)
    assert upscaler.scale == 2
    for name in ("a", "b"):
        # The protocol at x2 (SPEC): HR mod-cropped to 2, LR = MATLAB bicubic / 2 (no Two_LR_x2/),
        # a 2-px border crop. The model's own output: the same program on the same input.
        hr = mod_crop(read_rgb(two_set / "Two" / f"{name}.png"), 2)
        lr = imresize(hr, scale=0.5)
        sr = upscaler(lr)
        assert sr.shape == hr.shape
        assert result["model"]["Two"]["per_image"][name]["psnr"] == evaluate.metrics.psnr(sr, hr, crop_border=2)
        bicubic = imresize(lr, scale=2)
        assert result["bicubic"]["Two"]["per_image"][name]["psnr"] == evaluate.metrics.psnr(bicubic, hr, crop_border=2)


def test_checkpoints_of_different_scales_are_refused_in_one_line(x2_checkpoint, tiny_checkpoint, two_set, capsys):
    err = _one_line_error(["evaluate", "--checkpoint", str(x2_checkpoint), "--checkpoint", str(tiny_checkpoint),
                           "--data-dir", str(two_set), "--sets", "Two"], capsys)
    assert "different factors" in err and f"{x2_checkpoint} x2" in err and f"{tiny_checkpoint} x4" in err
    assert "evaluate models of one scale" in err
    image = next((two_set / "Two").glob("*.png"))
    assert cli.main(["compare", str(image), "--checkpoint", str(x2_checkpoint), "--label", "a",
                     "--checkpoint", str(tiny_checkpoint), "--label", "b", "-o", str(two_set / "fig.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "srgan-jax compare: error: the checkpoints upscale by different factors (a x2, b x4): compare " \
                  "models of one scale per run"
    assert not (two_set / "fig.png").exists()


def test_a_scale_flag_must_match_the_checkpoint(tiny_checkpoint, two_set, capsys):
    argv = ["evaluate", "--checkpoint", str(tiny_checkpoint), "--data-dir", str(two_set), "--sets", "Two"]
    err = _one_line_error([*argv, "--scale", "2"], capsys)
    assert "--scale 2 contradicts the checkpoint's x4" in err
    err = _one_line_error(["evaluate", "--method", "bicubic", "--scale", "1", "--data-dir", str(two_set)], capsys)
    assert "--scale 1" in err


def test_a_baseline_alone_runs_at_the_scale_flag_and_4_without(two_set):
    from srgan_jax.data.imresize import imresize

    at_2 = _evaluate(two_set, ["Two"], scale=2)
    assert at_2.scale == 2 and at_2.lr_source_used == {"Two": "make"}
    at_4 = _evaluate(two_set, ["Two"])
    assert at_4.scale == 4 and at_4.lr_source_used == {"Two": "shipped"}
    pairs, _ = evaluate.load_image_pairs(two_set, "Two", 2)
    for name, lr, hr in pairs:
        assert lr.shape[0] * 2 == hr.shape[0] == (48 if name == "a" else 50)
        expected = evaluate.metrics.psnr(imresize(lr, scale=2), hr, crop_border=2)
        assert at_2.results["bicubic"]["Two"]["per_image"][name]["psnr"] == expected


def test_plot_labels_stay_inside_the_panel_and_clear_of_each_other_and_of_other_dots():
    from PIL import Image, ImageDraw, ImageFont

    from srgan_jax import pd_plot

    draw, font = ImageDraw.Draw(Image.new("RGB", (400, 300))), ImageFont.load_default()
    points = {"srresnet_x4": (380.0, 150.0), "srgan_mse_x4": (370.0, 158.0), "bicubic": (100.0, 100.0)}
    boxes = {}
    for method, (left, top) in pd_plot._label_positions(draw, points, 390.0, font).items():
        boxes[method] = (left, top, left + draw.textlength(method, font=font), top + pd_plot._LABEL_H)
    for method, (left, top, right, bottom) in boxes.items():
        assert right <= 390.0, method  # inside the panel (the shipped figure clipped "srgan_mse_x")
        for other, (x, y) in points.items():
            if other != method:
                assert not (left - 5 < x < right + 5 and top - 5 < y < bottom + 5), (method, other)
        for other, box in boxes.items():
            if other != method:
                assert right <= box[0] or box[2] <= left or bottom <= box[1] or box[3] <= top, (method, other)
