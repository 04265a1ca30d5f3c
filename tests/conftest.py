"""Shared fixtures: tiny random models, generated images, the CLI, and the optional shared data folder."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from helpers import smooth_image, stripes  # tests/helpers.py (pytest puts tests/ on sys.path)
from hypothesis import settings
from PIL import Image
from typer.testing import CliRunner

# Property tests (tests/instancenorm/test_kernel_properties.py): the same bounded set of examples on every run unless
# HYPOTHESIS_PROFILE says otherwise ("thorough" for a long local search); no example database in the repository.
settings.register_profile("ci", derandomize=True, max_examples=150, deadline=None, database=None, print_blob=True)
settings.register_profile("thorough", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def no_installed_vgg16_weights(tmp_path_factory, monkeypatch):
    """Tests never see the VGG16 weights `styler weights vgg16` installed on this machine: an empty folder instead."""
    monkeypatch.setenv("STYLER_WEIGHTS_DIR", str(tmp_path_factory.mktemp("no-weights")))


@pytest.fixture(scope="session")
def odd_images() -> Path:
    """The bad-input corpus (../shared/data/odd-images); tests using it skip where the shared folder is absent."""
    folder = SHARED_DATA / "odd-images"
    if not folder.is_dir():
        pytest.skip(f"shared data not present: {folder} (only in a checkout with ../shared beside it)")
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A random single-style model small enough to stylize test images in milliseconds."""
    return _save_random_model(tmp_path_factory.mktemp("models") / "tiny.pth", styles=["tiny"])


@pytest.fixture(scope="session")
def tiny_multi_style_model(tmp_path_factory) -> Path:
    return _save_random_model(tmp_path_factory.mktemp("models") / "multi.pth", styles=["starry", "wave", "kandinsky"])


def _save_random_model(path: Path, styles: list[str]) -> Path:
    import torch

    from styler.model.architecture import Architecture
    from styler.model.model_files import save_model
    from styler.model.network import TransformerNet

    torch.manual_seed(len(styles))
    network = TransformerNet(Architecture(width=0.125, residual_blocks=1, num_styles=len(styles)))
    with torch.no_grad():  # distinct per-style parameters, so picking a style visibly matters
        for parameter in network.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
        # Outputs spread over 0..255 like a trained model's, not a few units around 0 that clamp to black.
        network.deconv3.conv2d.weight.mul_(40.0)
        network.deconv3.conv2d.bias.fill_(128.0)
    save_model(path, network, styles, training={"purpose": "tests"})
    return path


def _random_pixels(width: int, height: int, channels: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, channels), dtype=np.uint8)


@pytest.fixture
def random_pixels() -> Callable[..., np.ndarray]:
    """random_pixels(width, height, channels, seed=0): a uint8 (height, width, channels) array."""
    return _random_pixels


@pytest.fixture
def make_image(tmp_path) -> Callable[..., Path]:
    """make_image(name, width, height, mode="RGB", **save_options) writes random pixels and returns the path."""

    def make(name: str, width: int, height: int, mode: str = "RGB", **save_options) -> Path:
        channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
        pixels = _random_pixels(width, height, channels)
        image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)
        path = tmp_path / name
        image.save(path, **save_options)
        return path

    return make


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli() -> Callable[..., CliResult]:
    """run_cli("stylize", "a.png", ...) runs the styler CLI in-process and returns its exit code and both streams."""
    from styler.cli import app

    def run(*arguments: str | Path) -> CliResult:
        result = CliRunner().invoke(app, [str(argument) for argument in arguments])
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return CliResult(result.exit_code, result.stdout, result.stderr)

    return run


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    for index in range(8):
        smooth_image(folder / f"photo{index}.jpg", 80, 60, seed=index)
    return folder


@pytest.fixture
def style(tmp_path) -> Path:
    return stripes(tmp_path / "stripes.png")
