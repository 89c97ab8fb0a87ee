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
    defaults = dict(method="bicubic", checkpoint=None, data_dir="", sets=["Toy"], lr_source="auto", json=None)
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


def test_run_cli_reports_missing_set_and_writes_json(toy_set, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert evaluate.run_cli(_args(data_dir=str(toy_set), sets=["Toy", "Nope"], json=str(out))) == 0
    captured = capsys.readouterr()
    assert "Nope" in captured.err and "| bicubic | Toy |" in captured.out
    result = json.loads(out.read_text())
    assert set(result) == {"Toy"} and result["Toy"]["n"] == 2
    assert set(result["Toy"]["per_image"]) == {"a", "b"}


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
