"""Out-of-core stylization (styler/model/out_of_core.py): pass by pass over row bands, with whole-image statistics,
it gives the whole-image result; its spill files never outlive a run."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
import torch
from helpers import smooth_image
from PIL import Image

from styler.errors import StylerError
from styler.io.images import Photo
from styler.memory import parse_bytes
from styler.model import out_of_core
from styler.model.architecture import Architecture
from styler.model.model_files import StyleModel
from styler.model.network import TransformerNet
from styler.model.out_of_core import RunningMoments, band_bytes_within, whole_image_bytes
from styler.model.stylizer import Stylizer, choose_style

SHAPES = {
    # johnson's shape at a tenth of its channels; lite's; the former lite, whose 9x9 stem has stride 2 (so the last
    # layer upsamples 2x); a multi-style (conditional instance norm) model blending two of its three styles
    "johnson": (Architecture(width=0.125, residual_blocks=2), None),
    "lite": (Architecture(width=0.125, residual_blocks=3, stem_stride=1), None),
    "stride-2 stem": (Architecture(width=0.125, residual_blocks=1, stem_stride=2), None),
    "multi-style": (Architecture(width=0.125, residual_blocks=1, num_styles=3), "a=0.7,c=0.3"),
}


def random_model(arch: Architecture) -> StyleModel:
    torch.manual_seed(arch.residual_blocks + 7 * arch.stem_stride + arch.num_styles)
    network = TransformerNet(arch)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
        network.deconv3.conv2d.weight.mul_(40.0)  # outputs spread over 0..255, not clamped to black
        network.deconv3.conv2d.bias.fill_(128.0)
    styles = ["a", "b", "c"][: arch.num_styles]
    return StyleModel(arch, styles, network.state_dict())


def stylizers(shape: str, **out_of_core_options) -> tuple[Stylizer, Stylizer]:
    arch, style = SHAPES[shape]
    model = random_model(arch)
    choice = choose_style(style, model.styles)
    device = torch.device("cpu")
    return Stylizer(model, choice, device), Stylizer(model, choice, device, **out_of_core_options)


def photo(tmp_path, width: int, height: int) -> Photo:
    with Image.open(smooth_image(tmp_path / "photo.png", width, height, seed=width)) as image:
        return Photo(image.convert("RGB"), None, None)


def pixels(result: Photo) -> np.ndarray:
    return np.asarray(result.rgb).astype(np.int16)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("width", "height", "band_rows"), [(45, 37, 1), (61, 33, 3), (40, 52, 7)])
def test_out_of_core_equals_the_whole_image_to_rounding(tmp_path, shape, width, height, band_rows):
    """Odd sizes (mirror padding at the bottom and right), bands that do not divide any layer's rows."""
    whole, banded = stylizers(shape, band_rows=band_rows)
    image = photo(tmp_path, width, height)
    assert banded.runs_out_of_core(image.size) and not whole.runs_out_of_core(image.size)
    expected, got = pixels(whole(image)), pixels(banded(image, spill_folder=tmp_path))
    assert got.shape == expected.shape == (height, width, 3)
    assert np.abs(got - expected).max() <= 1
    assert (got != expected).mean() < 0.01  # float32 rounding moves a rare pixel across a level, no more


@pytest.mark.parametrize("consume", [False, True])
def test_colour_preservation_and_strength_finish_each_band_alike(tmp_path, consume):
    """consume: the result is written over the photo's own pixels, each band after finish read the photo's."""
    whole, banded = stylizers("johnson", band_rows=5)
    image = photo(tmp_path, 47, 39)
    expected = pixels(whole(image, strength=0.6, preserve_color=True))
    given = Photo(image.rgb.copy(), None, None)
    result = banded(given, strength=0.6, preserve_color=True, consume=consume)
    assert np.abs(pixels(result) - expected).max() <= 1
    assert (result.rgb is given.rgb) == consume


def test_a_float16_spill_stays_close(tmp_path):
    """The smaller spill rounds every stored activation to float16: near the whole image, not equal to it."""
    whole, banded = stylizers("johnson", band_rows=4, spill="float16")
    image = photo(tmp_path, 44, 36)
    assert np.abs(pixels(banded(image)) - pixels(whole(image))).mean() < 1


@pytest.mark.parametrize("band", [1, 10, 67])
def test_running_moments_merge_bands_without_losing_precision(band):
    """A large offset (1e4, std 1) would cancel in a float32 sum of squares; merged by Chan's update in float64, the
    statistics of one-row bands are as exact as the whole tensor's: float32 rounding of a band's mean, no more."""
    x = (torch.randn(1, 4, 67, 53, dtype=torch.float64) + 1e4).float().contiguous(memory_format=torch.channels_last)
    moments = RunningMoments()
    for first in range(0, 67, band):
        moments.add(x[:, :, first : first + band])
    mean, var = moments.mean_and_var()
    reference = x.double()
    torch.testing.assert_close(mean, reference.mean(dim=(0, 2, 3)), rtol=1e-7, atol=0)
    torch.testing.assert_close(var, reference.var(dim=(0, 2, 3), unbiased=False), rtol=1e-3, atol=0)


def test_the_path_is_chosen_by_the_whole_image_estimate():
    arch = SHAPES["johnson"][0]
    model, device = random_model(arch), torch.device("cpu")
    choice = choose_style(None, model.styles)
    size = (6000, 4000)
    need = whole_image_bytes(arch, 6000 * 4000)
    assert not Stylizer(model, choice, device, max_memory=need).runs_out_of_core(size)
    assert Stylizer(model, choice, device, max_memory=need - 1).runs_out_of_core(size)
    assert not Stylizer(model, choice, device).runs_out_of_core(size)  # no budget: always whole


def test_the_estimate_grows_with_the_networks_widest_layers():
    johnson, lite = Architecture(), Architecture(width=0.25, residual_blocks=3)

    def per_pixel(arch: Architecture) -> float:
        return (whole_image_bytes(arch, 2 * 10**8) - whole_image_bytes(arch, 10**8)) / 10**8

    # measured: johnson 0.21-0.31 GiB per megapixel at 6-25 MP, lite 0.10 (docs/benchmarks.md, "Prints")
    assert 300 < per_pixel(johnson) < 400 and 100 < per_pixel(lite) < 150


def test_too_little_memory_even_out_of_core_names_the_option():
    with pytest.raises(StylerError, match="--max-memory"):
        band_bytes_within(2**30, 100_000_000, (12000, 8400))
    assert band_bytes_within(4 * 2**30, 100_000_000, (12000, 8400)) >= out_of_core.MIN_BAND_BYTES


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4G", 4 * 2**30), ("4GiB", 4 * 2**30), ("2500m", 2500 * 2**20), ("1.5G", int(1.5 * 2**30)), ("123", 123)],
)
def test_memory_sizes_parse(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["lots", "4X", "-1G", "0", "G", "inf", "0.5", "1e-3"])
def test_bad_memory_sizes_are_refused(text):
    assert parse_bytes(text) is None


# ------------------------------------------------------------------------------------------ the command


@pytest.fixture
def spills(monkeypatch) -> list:
    """Every spill file a run opens."""
    opened = []
    original = out_of_core.Spill.__init__

    def recording(self, *args, **kwargs):
        original(self, *args, **kwargs)
        opened.append(self)

    monkeypatch.setattr(out_of_core.Spill, "__init__", recording)
    return opened


def stylize_out_of_core(run_cli, monkeypatch, tiny_model, tmp_path, *extra):
    monkeypatch.setenv("STYLER_BAND_ROWS", "6")
    source = smooth_image(tmp_path / "in" / "big.png", 50, 40, seed=1)
    return source, run_cli("stylize", source, "-m", tiny_model, "-o", tmp_path / "out" / "big.png", *extra)


def test_the_command_stylizes_out_of_core_alike_and_says_so(run_cli, monkeypatch, tiny_model, tmp_path, spills):
    source, result = stylize_out_of_core(run_cli, monkeypatch, tiny_model, tmp_path)
    assert result.exit_code == 0, result.stderr
    assert "stylized out of core in" in result.stderr
    assert spills and all(spill.file.closed for spill in spills)
    monkeypatch.delenv("STYLER_BAND_ROWS")
    assert run_cli("stylize", source, "-m", tiny_model, "-o", tmp_path / "whole.png").exit_code == 0
    banded, whole = (
        np.asarray(Image.open(path)).astype(int) for path in (tmp_path / "out/big.png", tmp_path / "whole.png")
    )
    assert np.abs(banded - whole).max() <= 1


@pytest.mark.parametrize(
    ("failure", "exit_code", "message"),
    [
        (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), 2, "No space left on device"),
        (KeyboardInterrupt(), 130, "interrupted"),
    ],
)
def test_a_full_disk_or_ctrl_c_during_the_spill_leaves_nothing(
    run_cli, monkeypatch, tiny_model, tmp_path, spills, failure, exit_code, message
):
    writes = []

    def failing_pwrite(fd, data, offset):
        writes.append(offset)
        if len(writes) > 5:  # some bands in: the spill files hold data
            raise failure
        return os.pwrite(fd, data, offset)

    monkeypatch.setattr(out_of_core.os, "pwrite", failing_pwrite)
    _, result = stylize_out_of_core(run_cli, monkeypatch, tiny_model, tmp_path)
    assert result.exit_code == exit_code and message in result.stderr
    assert os.listdir(tmp_path / "out") == []  # no output, partial or whole, and no temporary file
    assert spills and all(spill.file.closed for spill in spills)


def test_spill_files_go_beside_the_output(run_cli, monkeypatch, tiny_model, tmp_path, spills):
    folders = []
    original = out_of_core.tempfile.TemporaryFile

    def recording(*args, **kwargs):
        folders.append(kwargs.get("dir"))
        return original(*args, **kwargs)

    monkeypatch.setattr(out_of_core.tempfile, "TemporaryFile", recording)
    _, result = stylize_out_of_core(run_cli, monkeypatch, tiny_model, tmp_path)
    assert result.exit_code == 0, result.stderr
    assert folders and set(folders) == {tmp_path / "out"}


def test_too_little_disk_is_refused_before_any_work(run_cli, monkeypatch, tiny_model, tmp_path, spills):
    monkeypatch.setattr(out_of_core.shutil, "disk_usage", lambda folder: type("Usage", (), {"free": 10})())
    _, result = stylize_out_of_core(run_cli, monkeypatch, tiny_model, tmp_path)
    assert result.exit_code == 2 and "of disk space" in result.stderr and "big.png" in result.stderr
    assert spills == [] and os.listdir(tmp_path / "out") == []


@pytest.mark.parametrize(
    "knob, value", [("STYLER_BAND_ROWS", "x"), ("STYLER_BAND_ROWS", "0"), ("STYLER_SPILL_DTYPE", "bf16")]
)
def test_bad_hidden_knobs_are_one_line(run_cli, monkeypatch, tiny_model, tmp_path, knob, value):
    monkeypatch.setenv(knob, value)
    source = smooth_image(tmp_path / "a.png", 20, 20, seed=0)
    result = run_cli("stylize", source, "-m", tiny_model, "-o", tmp_path / "out.png")
    assert result.exit_code == 2 and f"{knob}={value!r}" in result.stderr
    assert not (tmp_path / "out.png").exists()


def test_a_bad_max_memory_is_refused(run_cli, tiny_model, tmp_path):
    source = smooth_image(tmp_path / "a.png", 20, 20, seed=0)
    result = run_cli("stylize", source, "-m", tiny_model, "--max-memory", "lots")
    assert result.exit_code == 2 and "--max-memory 'lots'" in result.stderr
