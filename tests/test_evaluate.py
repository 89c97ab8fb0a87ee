"""Benchmark loading and scoring: baselines on Set5, and per-file problems that do not stop a set."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from srgan_jax import evaluate
from srgan_jax.errors import UserError


def _data_dir() -> Path:
    return Path(os.environ.get("SRGAN_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")


def _save(path: Path, shape: tuple[int, ...], seed: int = 0) -> None:
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    image = 128 + 60 * np.sin(x / 5.0) * np.cos(y / 7.0) + np.random.default_rng(seed).normal(0, 5, shape[:2])
    image = np.clip(image, 0, 255).astype(np.uint8)
    Image.fromarray(np.stack([image] * 3, -1) if len(shape) == 3 else image).save(path)


def _args(**kwargs) -> argparse.Namespace:
    defaults = dict(method="bicubic", checkpoint=None, data_dir="", sets=["Toy"], lr_source="auto", json=None,
                    metrics=["psnr", "ssim"], plot=None, lpips_weights=None)
    return argparse.Namespace(**{**defaults, **kwargs})


@pytest.fixture
def toy_set(tmp_path: Path) -> Path:
    """tmp_path/Toy: a.png (64x48 RGB), b.png (66x50 gray: mod-cropped to 64x48), no LR folder."""
    (tmp_path / "Toy").mkdir()
    _save(tmp_path / "Toy" / "a.png", (48, 64, 3), seed=0)
    _save(tmp_path / "Toy" / "b.png", (50, 66), seed=1)
    return tmp_path


def test_make_lr_modcrops_and_converts_gray(toy_set):
    pairs, errors = evaluate.load_image_pairs(toy_set, "Toy")
    assert errors == []
    assert evaluate.resolve_lr_source(toy_set, "Toy") == "make"
    assert [(name, lr.shape, hr.shape) for name, lr, hr in pairs] == [
        ("a", (12, 16, 3), (48, 64, 3)),
        ("b", (12, 16, 3), (48, 64, 3)),
    ]


def test_corrupt_image_is_reported_and_others_evaluated(toy_set):
    (toy_set / "Toy" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    pairs, errors = evaluate.load_image_pairs(toy_set, "Toy")
    assert [name for name, _, _ in pairs] == ["a", "b"]
    assert len(errors) == 1 and "broken.png" in errors[0] and "\n" not in errors[0]
    result = evaluate.evaluate_set(evaluate.bicubic_upscale, pairs)
    assert result["n"] == 2 and set(result["per_image"]) == {"a", "b"}


def test_shipped_lr_size_mismatch_is_named(toy_set):
    (toy_set / "Toy_LR_x4").mkdir()
    _save(toy_set / "Toy_LR_x4" / "a.png", (12, 16, 3))
    _save(toy_set / "Toy_LR_x4" / "b.png", (13, 16))
    pairs, errors = evaluate.load_image_pairs(toy_set, "Toy")
    assert evaluate.resolve_lr_source(toy_set, "Toy") == "shipped"
    assert [name for name, _, _ in pairs] == ["a"]
    assert len(errors) == 1 and "b.png" in errors[0] and "16x13" in errors[0]


def test_missing_and_empty_sets_are_named(tmp_path):
    (tmp_path / "Empty").mkdir()
    pairs, errors = evaluate.load_image_pairs(tmp_path, "Nope")
    assert pairs == [] and len(errors) == 1 and str(tmp_path / "Nope") in errors[0]
    pairs, errors = evaluate.load_image_pairs(tmp_path, "Empty")
    assert pairs == [] and "Empty" in errors[0]
    pairs, errors = evaluate.load_image_pairs(tmp_path, "Empty", lr_source="shipped")
    assert pairs == [] and len(errors) == 1


def test_run_cli_reports_missing_set_scores_the_others_and_exits_1(toy_set, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert evaluate.run_cli(_args(data_dir=str(toy_set), sets=["Toy", "Nope"], json=str(out))) == 1
    captured = capsys.readouterr()
    assert "Nope" in captured.err and "| bicubic | Toy |" in captured.out
    result = json.loads(out.read_text())
    assert set(result) == {"Toy"} and result["Toy"]["n"] == 2
    assert set(result["Toy"]["per_image"]) == {"a", "b"}
    assert evaluate.run_cli(_args(data_dir=str(toy_set), sets=["Toy"])) == 0


def test_run_cli_nothing_evaluated_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no images"):
        evaluate.run_cli(_args(data_dir=str(tmp_path), sets=["Nope"]))
    with pytest.raises(UserError, match="--data-dir"):
        evaluate.run_cli(_args(data_dir=str(tmp_path / "missing")))


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
    pairs, errors = evaluate.load_image_pairs(data, "Set5")
    assert errors == [] and len(pairs) == 5
    bicubic = evaluate.evaluate_set(evaluate.bicubic_upscale, pairs)
    nearest = evaluate.evaluate_set(evaluate.nearest_upscale, pairs)
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
    monkeypatch.setattr(evaluate, "_methods", lambda _: {"model": evaluate.nearest_upscale, **evaluate.BASELINES})
    args = _args(method=None, data_dir=str(tmp_path), sets=["Big"], metrics=["psnr", "ssim", "niqe"],
                 plot=str(plot), json=str(out))
    assert evaluate.run_cli(args) == 0
    table = capsys.readouterr().out
    assert "| NIQE |" in table and "| HR | Big | - | - |" in table
    result = json.loads(out.read_text())
    pairs, _ = evaluate.load_image_pairs(tmp_path, "Big")
    name, lr, hr = pairs[0]
    assert result["HR"]["Big"]["per_image"][name] == {"niqe": niqe.niqe(hr, crop_border=4)}
    sr = evaluate.bicubic_upscale(lr)
    assert result["bicubic"]["Big"]["per_image"][name]["niqe"] == niqe.niqe(sr, crop_border=4)
    assert result["bicubic"]["Big"]["per_image"][name]["psnr"] == evaluate.metrics.psnr(sr, hr)
    with PILImage.open(plot) as figure:
        assert figure.format == "PNG" and figure.size == (420, 340)


def test_plot_needs_psnr_and_niqe(toy_set, tmp_path):
    with pytest.raises(UserError, match="--plot draws PSNR against NIQE"):
        evaluate.run_cli(_args(data_dir=str(toy_set), plot=str(tmp_path / "pd.png")))
    with pytest.raises(UserError, match="--metrics psnr,lpips"):
        evaluate.run_cli(_args(data_dir=str(toy_set), metrics=["psnr", "lpips"]))
    with pytest.raises(UserError, match="drop niqe from --metrics"):  # 48x64: no 96x96 NIQE block
        evaluate.run_cli(_args(data_dir=str(toy_set), metrics=["niqe"]))


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
