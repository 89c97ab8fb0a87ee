"""Test-wide setup: the repository root on sys.path (for `benchmarks.torch_reference`), and a
small folder of training images."""

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory) -> Path:
    """Six 80x64 RGB PNGs: bicubic-enlarged random pixels (learnable, unlike white noise)."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(6):
        small = rng.integers(0, 256, size=(8, 10, 3), dtype=np.uint8)
        Image.fromarray(small).resize((80, 64), Image.BICUBIC).save(folder / f"im{i}.png")
    return folder
