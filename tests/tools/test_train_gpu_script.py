"""tools/train_gpu.sh, the one-go training script for a lent GPU, on its CPU path: every stage leaves a model, and
an exhausted time budget stops it cleanly. Tiny photos, random VGG16 weights (nothing downloads)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch
from helpers import REPOSITORY, smooth_image, stripes  # tests/helpers.py (pytest puts tests/ on sys.path)

from styler.model.model_files import load_model_file
from styler.vgg16 import VGG16Features

SCRIPT = REPOSITORY / "tools" / "train_gpu.sh"
PAINTINGS = ("vangogh_starry_night", "hokusai_great_wave", "kandinsky_composition_vii")


@pytest.fixture
def environment(tmp_path) -> dict[str, str]:
    for index in range(8):
        smooth_image(tmp_path / "photos" / f"photo{index}.jpg", 80, 60, seed=index)
    (tmp_path / "styles").mkdir()
    for index, name in enumerate(PAINTINGS):
        stripes(tmp_path / "styles" / f"{name}.png", ((40 * index, 200, 90), (10, 20, 200 - 50 * index)))
        shutil.move(tmp_path / "styles" / f"{name}.png", tmp_path / "styles" / f"{name}.jpg")  # the names it expects
    weights = tmp_path / "vgg16.pth"
    torch.save({f"features.{key}": value for key, value in VGG16Features().layers.state_dict().items()}, weights)
    return {
        **os.environ,
        "DEVICE": "cpu",
        "DATA": str(tmp_path / "photos"),
        "STYLES": str(tmp_path / "styles"),
        "STYLER": f"{sys.executable} -m styler",
        "STEPS_CAP": "2",
        "LOSS_ARGS": f"--vgg-weights {weights}",
        "EXTRA": "--image-size 64 --workers 0",
        "PYTHONPATH": str(REPOSITORY),
    }


@pytest.mark.slow
def test_every_stage_leaves_a_model(environment, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        ["sh", SCRIPT, out, "900"], env=environment, cwd=REPOSITORY, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr
    lite = [f"{name}-lite{stage}" for name in ("starry", "wave", "kandinsky") for stage in ("-pixel", "")]
    names = ["base", "starry", "wave", "kandinsky", "mix", *lite]
    for name in names:
        assert (out / name / "step-0000002.ckpt").is_file() and (out / f"{name}.log").is_file(), name
        model = load_model_file(out / f"{name}.pth")
        assert model.training["steps"] == 2 and model.training["device"] == "cpu", name
    assert load_model_file(out / "mix.pth").styles == list(PAINTINGS)
    wave_lite = load_model_file(out / "wave-lite.pth").training
    assert wave_lite["teachers"] == ["wave.pth"] and wave_lite["init"] == "wave-lite-pixel.pth"
    assert wave_lite["loss_network"] == "vgg16"
    assert "all stages" in result.stderr


def test_an_exhausted_budget_stops_without_starting_a_stage(environment, tmp_path):
    result = subprocess.run(
        ["sh", SCRIPT, tmp_path / "out", "0"],
        env=environment,
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "no time left for base" in result.stderr and not list((tmp_path / "out").glob("*.pth"))
