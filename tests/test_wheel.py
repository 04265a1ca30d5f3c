"""The package as a user installs it: a wheel built from this repository (CPU kernels only, to stay quick), installed
into a folder outside the tree, stylizes a photo with a shipped model named on the command line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import REPOSITORY, smooth_image

# What a wheel is built from; the build writes build/ and *.egg-info, so it runs on a copy, not in the checkout.
SOURCES = ["pyproject.toml", "setup.py", "README.md", "styler", "instancenorm", "models"]


@pytest.mark.slow
def test_an_installed_wheel_stylizes_with_a_shipped_model_by_name(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPOSITORY / name).is_dir():
            shutil.copytree(REPOSITORY / name, source / name, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
        else:
            shutil.copy2(REPOSITORY / name, source / name)
    environment = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "STYLER_MODELS_DIR")}
    build = {**environment, "INSTANCENORM_CUDA": "0", "INSTANCENORM_CPU_VARIANTS": "0", "MAX_JOBS": "1"}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    built = subprocess.run(
        [*pip, "wheel", "--no-build-isolation", "--no-deps", "--wheel-dir", tmp_path / "dist", source],
        capture_output=True, text=True, env=build,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("styler-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {"styler/model/shipped/manifest.json", "styler/model/shipped/starry-lite.pth"} <= names
    # Every styler package of the tree is in the wheel (pyproject.toml lists them one by one).
    packages = {path.parent.relative_to(REPOSITORY).as_posix() for path in (REPOSITORY / "styler").rglob("__init__.py")}
    assert {f"{package}/__init__.py" for package in packages} <= names

    site = tmp_path / "site"
    installed = subprocess.run(
        [*pip, "install", "--no-deps", "--target", site, wheel], capture_output=True, text=True, env=environment
    )
    assert installed.returncode == 0, installed.stderr[-3000:]

    elsewhere = tmp_path / "elsewhere"
    photo = smooth_image(elsewhere / "photo.jpg", 40, 30, seed=1)
    run = {**environment, "PYTHONPATH": str(site)}  # ahead of the checkout's editable install
    where = subprocess.run(
        [sys.executable, "-c", "import styler; print(styler.__file__)"], capture_output=True, text=True, env=run,
        cwd=elsewhere,
    )  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout + where.stderr
    styled = subprocess.run(
        [site / "bin" / "styler", "stylize", photo.name, "-m", "starry-lite", "-o", "out.png"],
        capture_output=True, text=True, env=run, cwd=elsewhere,
    )  # fmt: skip
    assert styled.returncode == 0, styled.stderr
    assert (elsewhere / "out.png").is_file() and "stylized 1 of 1 images" in styled.stderr
