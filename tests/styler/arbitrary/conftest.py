"""Fixtures for the arbitrary-style tests: random VGG16 weights where `styler weights vgg16` puts them, and a tiny
random arbitrary-style model, shipped in a models folder of its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from styler import vgg16
from styler.arbitrary.model_file import save_arbitrary_model
from styler.arbitrary.network import Decoder
from styler.io.files import sha256_of


@pytest.fixture
def random_vgg16(no_installed_vgg16_weights) -> Path:
    """Random VGG16 weights in the converted file's place and format (the tests never need the real ones)."""
    torch.manual_seed(0)
    path = vgg16.converted_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    layers = vgg16.VGG16Features().layers.state_dict()
    torch.save({"format": vgg16.FORMAT, "state_dict": {f"features.{k}": v for k, v in layers.items()}}, path)
    path.with_name(path.name + ".sha256").write_text(sha256_of(path) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_arbitrary_model(tmp_path_factory) -> Path:
    """A random decoder at 1/16 of the paper's width, its output spread over the pixel range: random VGG16 features
    are tiny (about 0.01), so the first convolution is scaled up for the photo to show through the biases."""
    torch.manual_seed(3)
    decoder = Decoder(width=0.0625)
    with torch.no_grad():
        decoder.layers[1].weight.mul_(100.0)
        last = decoder.layers[-1]
        last.weight.mul_(20.0)
    path = tmp_path_factory.mktemp("arbitrary") / "tiny-arbitrary.pth"
    save_arbitrary_model(path, decoder, {"purpose": "tests"})
    return path


@pytest.fixture
def shipped_arbitrary(tmp_path, tiny_arbitrary_model, tiny_model, monkeypatch) -> Path:
    """A models folder whose manifest lists the tiny arbitrary model as `arbitrary` and a single-style `tiny`."""
    folder = tmp_path / "models"
    folder.mkdir()
    entries = []
    for name, source, kind in (("arbitrary", tiny_arbitrary_model, "arbitrary"), ("tiny", tiny_model, "style")):
        target = folder / source.name
        target.write_bytes(source.read_bytes())
        entries.append(
            {
                "name": name,
                "file": target.name,
                "sha256": sha256_of(target),
                "styles": [] if kind == "arbitrary" else ["tiny"],
                "style_images": [],
                "arch": {},
                "training": {},
                "styler_version": "test",
                "kind": kind,
            }
        )
    (folder / "manifest.json").write_text(json.dumps({"manifest_version": 1, "models": entries}))
    monkeypatch.setenv("STYLER_MODELS_DIR", str(folder))
    return folder
