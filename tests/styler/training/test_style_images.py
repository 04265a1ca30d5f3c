"""`styler train --style`: paintings too big, too small or too elongated are refused before any work, in one line
that says what to do."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import claimed_size_png, tiny_run  # tests/helpers.py (pytest puts tests/ on sys.path)
from PIL import Image


def refused(run_cli, photos, painting, tmp_path, *extra) -> str:
    result = run_cli(*tiny_run(photos, painting, tmp_path, *extra))
    assert result.exit_code == 2
    assert result.stderr.startswith("styler: error: --style") and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "model.pth").exists() and not (tmp_path / "checkpoints").exists()
    return result.stderr


def test_an_oversized_painting_gets_advice_that_train_can_follow(run_cli, photos, tmp_path):
    painting = claimed_size_png(tmp_path / "huge.png", 20_000, 20_000)
    message = refused(run_cli, photos, painting, tmp_path)
    assert "decompression bomb" in message and "train has no --max-pixels: scale the painting down" in message
    assert "raise the limit with --max-pixels" not in message


@pytest.mark.parametrize("size", [(1, 1), (8, 8), (63, 300)])
def test_a_painting_too_small_to_have_strokes_is_refused_before_scaling(run_cli, photos, tmp_path, size):
    painting = tmp_path / "tiny.png"
    Image.new("RGB", size, (200, 120, 40)).save(painting)
    message = refused(run_cli, photos, painting, tmp_path)
    assert f"{size[0]}x{size[1]} is too small a painting to learn strokes from (at least 64 pixels a side)" in message


@pytest.mark.parametrize(
    "size, style_size, scaled",
    [((3000, 100), "256", "256x9"), ((100, 2000), "128", "6x128")],
)
def test_an_elongated_painting_names_its_size_and_the_scaling(run_cli, photos, tmp_path, size, style_size, scaled):
    painting = tmp_path / "scroll.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), np.uint8)).save(painting)
    message = refused(run_cli, photos, painting, tmp_path, "--style-size", style_size)
    expected = f"{size[0]}x{size[1]} scaled to a long side of --style-size {style_size} is {scaled}, under 44 pixels"
    assert expected in message and "crop it to a less elongated shape or raise --style-size" in message


def test_a_small_painting_within_the_limits_trains(run_cli, photos, tmp_path):
    painting = tmp_path / "small.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 200, 3), np.uint8)).save(painting)
    result = run_cli(*tiny_run(photos, painting, tmp_path, "--max-steps", "1"))
    assert result.exit_code == 0, result.stderr
