"""Model files (styler format and bare fast_neural_style state_dicts), the manifest, and `styler models`."""

from __future__ import annotations

import itertools
import json
import pickle
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPOSITORY  # tests/helpers.py (pytest puts tests/ on sys.path)

from styler import __version__
from styler.errors import StylerError
from styler.io.files import sha256_of
from styler.model.architecture import Architecture, architecture
from styler.model.model_files import (
    ARBITRARY_KIND,
    is_arbitrary,
    load_model_file,
    manifest_entry,
    read_manifest,
    read_model_contents,
    resolve_model,
    save_model,
    write_manifest,
)
from styler.model.network import TransformerNet


def small_network(num_styles: int = 1) -> TransformerNet:
    torch.manual_seed(0)
    return TransformerNet(Architecture(width=0.125, residual_blocks=2, stem_stride=2, num_styles=num_styles))


def test_save_and_load_round_trip_keeps_weights_and_metadata(tmp_path):
    network = small_network(num_styles=2)
    path = tmp_path / "model.pth"
    save_model(path, network, ["starry", "wave"], training={"image_size": 256, "style_weight": 1e10})
    model = load_model_file(path)
    assert model.arch == network.arch
    assert model.styles == ["starry", "wave"]
    assert model.training == {"image_size": 256, "style_weight": 1e10}
    assert model.styler_version == __version__
    for key, value in network.state_dict().items():
        torch.testing.assert_close(model.state_dict[key], value, rtol=0, atol=0)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pth"]  # no temporary file left behind
    assert stat.S_IMODE(path.stat().st_mode) & 0o044  # readable by others, like any file the user writes


def test_the_file_is_a_plain_dict_that_weights_only_loading_accepts(tmp_path):
    save_model(tmp_path / "m.pth", small_network(), ["x"])
    contents = torch.load(tmp_path / "m.pth", weights_only=True)
    assert contents["format"] == "styler-model" and contents["format_version"] == 1
    assert contents["arch"] == {"width": 0.125, "residual_blocks": 2, "stem_stride": 2, "num_styles": 1}


def test_float16_files_load_as_float32(tmp_path):
    network = small_network()
    save_model(tmp_path / "half.pth", network, ["x"], half=True)
    stored = torch.load(tmp_path / "half.pth", weights_only=True)["state_dict"]
    assert all(value.dtype == torch.float16 for value in stored.values())
    loaded = load_model_file(tmp_path / "half.pth").state_dict
    for key, value in network.state_dict().items():
        assert loaded[key].dtype == torch.float32
        torch.testing.assert_close(loaded[key], value, rtol=1e-3, atol=1e-3)
    assert (tmp_path / "half.pth").stat().st_size < 0.6 * _saved_size(tmp_path / "full.pth", network)


def _saved_size(path, network) -> int:
    save_model(path, network, ["x"])
    return path.stat().st_size


def test_a_failed_save_leaves_the_previous_file_untouched(tmp_path, monkeypatch):
    path = tmp_path / "model.pth"
    save_model(path, small_network(), ["old"])
    before = path.read_bytes()

    def broken_save(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_model(path, small_network(), ["new"])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pth"]


def test_a_fast_neural_style_state_dict_loads_with_its_legacy_keys_dropped(tmp_path):
    """What pytorch/examples saves: bare tensors with its key names (test_network checks that our names are those),
    plus the running statistics that InstanceNorm2d stored in older torch versions."""
    torch.manual_seed(0)
    state = {key: torch.randn(value.shape) for key, value in TransformerNet().state_dict().items()}
    legacy = {
        f"{name}.{buffer}": torch.zeros(state[f"{name}.weight"].shape)
        for name in ("in1", "in5", "res3.in2")
        for buffer in ("running_mean", "running_var")
    }
    torch.save({**state, **legacy}, tmp_path / "candy.pth")

    model = load_model_file(tmp_path / "candy.pth")
    assert model.arch == architecture("johnson")
    assert model.styles == ["candy"]
    assert model.state_dict.keys() == state.keys()
    expected = TransformerNet().eval()
    expected.load_state_dict(state)
    x = torch.rand(1, 3, 24, 32) * 255
    with torch.inference_mode():
        torch.testing.assert_close(model.build()(x), expected(x), rtol=0, atol=0)


def test_a_bare_state_dict_of_a_compact_network_gets_its_width_and_blocks_from_the_shapes(tmp_path):
    network = TransformerNet(Architecture(width=0.5, residual_blocks=3))
    torch.save(network.state_dict(), tmp_path / "compact.pth")
    assert load_model_file(tmp_path / "compact.pth").arch == Architecture(width=0.5, residual_blocks=3)


@pytest.mark.parametrize(
    "name, contents, message",
    [
        ("empty.pth", b"", "not a readable model file"),
        ("text.pth", b"hello, I am not a model\n", "not a readable model file"),
        ("random.pth", bytes(range(256)) * 40, "not a readable model file"),
    ],
)
def test_files_that_are_not_models_give_one_line(tmp_path, name, contents, message):
    (tmp_path / name).write_bytes(contents)
    with pytest.raises(StylerError, match=message) as error:
        load_model_file(tmp_path / name)
    assert "\n" not in str(error.value)


def test_a_truncated_model_file_gives_one_line(tmp_path):
    save_model(tmp_path / "whole.pth", small_network(), ["x"])
    data = (tmp_path / "whole.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(StylerError, match="not a readable model file") as error:
        load_model_file(tmp_path / "cut.pth")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda data: data[: len(data) // 2], "a damaged or truncated torch file: failed reading zip archive: "),
        (lambda data: data[:-30], "a damaged or truncated torch file: failed reading zip archive: failed "),
        (lambda data: data[:100] + b"\x17" * 50 + data[150:], "damaged data: unsupported operand 23"),
    ],
)
def test_a_damaged_model_file_is_one_clean_line_naming_it_once(tmp_path, damage, reason):
    """torch's own text goes on with advice ("This is an internal miniz error. If you are seeing..."): only its
    first sentence is kept, whole, and the file is named once."""
    (tmp_path / "bad.pth").write_bytes(damage((REPOSITORY / "models" / "starry-lite.pth").read_bytes()))
    with pytest.raises(StylerError) as error:
        load_model_file(tmp_path / "bad.pth")
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'bad.pth'}: not a readable model file ({reason}")
    assert message.endswith(")") and "." not in message.removeprefix(str(tmp_path / "bad.pth")).split("(", 1)[1]
    assert message.count("bad.pth") == 1 and "\n" not in message and len(message) < 250


class Payload:
    """Unpickling this runs code: it creates the file `marker`. weights_only loading must refuse it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickled_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload-ran"
    with open(tmp_path / "evil.pth", "wb") as file:
        pickle.dump({"conv1.conv2d.weight": Payload(marker)}, file)
    with pytest.raises(StylerError, match="not a readable model file"):
        load_model_file(tmp_path / "evil.pth")
    assert not marker.exists()
    with open(tmp_path / "evil.pth", "rb") as file:  # the payload is live: loading the unsafe way runs it
        pickle.load(file)["conv1.conv2d.weight"].close()
    assert marker.exists()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.update(format_version=99), "format version 99"),
        (lambda c: c.update(arch={"width": -2}), "bad architecture"),
        (lambda c: c.update(styles=["a", "b"]), "should list 1 style"),
        (lambda c: c.pop("state_dict"), "lacks 'state_dict'"),
        (lambda c: c["state_dict"].update({"conv1.conv2d.weight": "not a tensor"}), "not a floating-point tensor"),
        (lambda c: c["state_dict"]["in1.weight"].fill_(float("nan")), "NaN or infinite"),
    ],
)
def test_damaged_styler_files_give_one_clear_line(tmp_path, change, message):
    save_model(tmp_path / "m.pth", small_network(), ["x"])
    contents = torch.load(tmp_path / "m.pth", weights_only=True)
    change(contents)
    torch.save(contents, tmp_path / "m.pth")
    with pytest.raises(StylerError, match=message):
        load_model_file(tmp_path / "m.pth")


def test_weights_that_do_not_fit_the_architecture_are_named(tmp_path):
    save_model(tmp_path / "m.pth", small_network(), ["x"])
    contents = torch.load(tmp_path / "m.pth", weights_only=True)
    del contents["state_dict"]["res2.in1.bias"]
    contents["state_dict"]["conv1.conv2d.weight"] = torch.zeros(5, 3, 9, 9)
    torch.save(contents, tmp_path / "m.pth")
    with pytest.raises(StylerError, match=r"missing: res2\.in1\.bias; wrong shape: conv1\.conv2d\.weight"):
        load_model_file(tmp_path / "m.pth").build()


def test_a_dict_without_network_weights_is_not_a_model(tmp_path):
    torch.save({"epoch": 3, "optimizer": {}}, tmp_path / "checkpoint.pth")
    with pytest.raises(StylerError, match="not a styler model file nor a fast_neural_style state_dict"):
        load_model_file(tmp_path / "checkpoint.pth")


# ------------------------------------------------------------------------------------------------ manifest


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A models folder with one shipped model, used through STYLER_MODELS_DIR like a real install would."""
    save_model(tmp_path / "starry.pth", small_network(), ["starry"], training={"loss_network": "random"})
    entry = manifest_entry(
        tmp_path / "starry.pth",
        name="starry",
        style_images=[{"name": "starry", "file": "vangogh_starry_night.jpg", "licence": "public domain"}],
        description="test model",
    )
    write_manifest([entry], tmp_path)
    monkeypatch.setenv("STYLER_MODELS_DIR", str(tmp_path))
    return tmp_path


def test_manifest_entries_describe_their_model_files(shipped):
    (entry,) = read_manifest()
    assert entry.name == "starry" and entry.file == "starry.pth" and entry.styles == ["starry"]
    assert entry.sha256 == sha256_of(shipped / "starry.pth")
    assert entry.arch == small_network().arch.to_dict()
    assert entry.training == {"loss_network": "random"}
    assert entry.styler_version == __version__


def test_a_shipped_model_is_found_by_name_and_checked(shipped):
    assert resolve_model("starry").styles == ["starry"]
    with open(shipped / "starry.pth", "ab") as file:
        file.write(b"tampered")
    with pytest.raises(StylerError, match="does not match the sha256"):
        resolve_model("starry")


def test_an_unknown_model_name_lists_the_shipped_ones(shipped):
    with pytest.raises(StylerError, match=r"no model named 'mosaic'.*shipped models: starry"):
        resolve_model("mosaic")


def test_a_model_file_is_found_by_path(shipped, tmp_path_factory):
    other = tmp_path_factory.mktemp("elsewhere") / "mine.pth"
    save_model(other, small_network(), ["mine"])
    assert resolve_model(str(other)).styles == ["mine"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "unreadable manifest"),
        ('{"models": []}', "manifest_version"),
        ('{"manifest_version": 1, "models": [{"name": "x"}]}', "bad model entry"),
    ],
)
def test_a_broken_manifest_is_one_line(tmp_path, text, message):
    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(StylerError, match=message):
        read_manifest(tmp_path)


def test_the_repository_manifest_is_valid_and_matches_its_files():
    directory = REPOSITORY / "models"
    assert (directory / "manifest.json").is_file()
    for entry in read_manifest(directory):  # a malformed manifest raises StylerError here
        assert sha256_of(directory / entry.file) == entry.sha256, entry.name
        if entry.kind == ARBITRARY_KIND:  # any painting: no styles inside, a decoder that must build
            from styler.arbitrary.model_file import arbitrary_model_from

            contents = read_model_contents(directory / entry.file)
            assert is_arbitrary(contents) and entry.styles == [], entry.name
            arbitrary_model_from(contents, directory / entry.file).build()
            continue
        assert load_model_file(directory / entry.file).styles == entry.styles, entry.name


def test_models_command_lists_names_as_json(shipped, run_cli):
    result = run_cli("models", "--json")
    assert result.exit_code == 0
    (record,) = json.loads(result.stdout)
    assert record["name"] == "starry" and record["styles"] == ["starry"]
    assert record["style_images"][0]["licence"] == "public domain"


def test_models_command_prints_a_table(shipped, run_cli):
    result = run_cli("models")
    assert result.exit_code == 0
    header, row = result.stdout.splitlines()
    assert header.split()[:2] == ["NAME", "STYLES"] and row.split()[:2] == ["starry", "starry"]


def test_models_command_with_a_broken_manifest_exits_2(tmp_path, monkeypatch, run_cli):
    (tmp_path / "manifest.json").write_text("{broken")
    monkeypatch.setenv("STYLER_MODELS_DIR", str(tmp_path))
    result = run_cli("models")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "unreadable manifest" in result.stderr


def test_models_command_answers_without_loading_torch(shipped):
    """`styler models` is a listing: it must not pay torch's ~1.3 s import."""
    probe = "import sys; from styler.cli import app; app(['models', '--json'])"
    check = "import atexit, sys; atexit.register(lambda: sys.stderr.write('torch' if 'torch' in sys.modules else 'no'))"
    result = subprocess.run(
        [sys.executable, "-c", f"{check}; {probe}"], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["name"] == "starry"
    assert result.stderr.endswith("no")


# ------------------------------------------------------------------------------------------ shipped models


def _outline_correlation(first: torch.Tensor, second: torch.Tensor) -> float:
    """How well two (1, 3, H, W) images' outlines coincide: correlation of their luminance gradient magnitudes,
    averaged over 4x4 cells so that brush texture (which adds edges of its own) does not drown the photo's."""

    from styler.io.images import luma

    def outlines(image: torch.Tensor) -> torch.Tensor:
        gray = luma(image)
        gradient = (gray[..., 1:, :-1] - gray[..., :-1, :-1]).abs() + (gray[..., :-1, 1:] - gray[..., :-1, :-1]).abs()
        return torch.nn.functional.avg_pool2d(gradient, 4).flatten()

    return torch.corrcoef(torch.stack([outlines(first), outlines(second)]))[0, 1].item()


def _shipped_styles() -> list:
    return [
        pytest.param(entry.name, style, id=f"{entry.name}:{style}")
        for entry in read_manifest(REPOSITORY / "models")
        for style in entry.styles
    ]


def _sample_photo(name: str) -> torch.Tensor:
    from PIL import Image

    from styler.io.images import image_to_tensor

    with Image.open(REPOSITORY / "samples" / "photos" / name) as photo:
        return image_to_tensor(photo.convert("RGB").resize((300, 200)))


@pytest.fixture(scope="module")
def sample_photo() -> torch.Tensor:
    return _sample_photo("coffee.jpg")


@pytest.fixture(scope="module")
def other_photo() -> torch.Tensor:
    return _sample_photo("rocket.jpg")


@pytest.mark.parametrize(("name", "style"), _shipped_styles())
def test_every_shipped_model_restyles_a_photo_and_keeps_its_outlines(name, style, sample_photo, other_photo):
    from styler.model.stylizer import Stylizer, choose_style

    model = resolve_model(name, REPOSITORY / "models")
    styled = Stylizer(model, choose_style(style, model.styles), torch.device("cpu"))
    output = styled.stylize_tensor(sample_photo)
    assert output.shape == sample_photo.shape and torch.isfinite(output).all()
    # Stylized: far from the photo on average, not a flat colour.
    assert (output - sample_photo).abs().mean() > 20
    assert output.std() > 20
    # Content kept: the output's outlines lie where the photo's are (0.30-0.40 for the shipped models), not where
    # another photo's are (-0.07-0.05), which shows what the measure is worth.
    assert _outline_correlation(output, sample_photo) > 0.2
    assert abs(_outline_correlation(output, other_photo)) < 0.15


def test_the_multi_style_model_gives_each_style_its_own_look(sample_photo):
    from styler.model.stylizer import Stylizer, choose_style

    (entry,) = [entry for entry in read_manifest(REPOSITORY / "models") if len(entry.styles) > 1]
    model = resolve_model(entry.name, REPOSITORY / "models")
    outputs = [
        Stylizer(model, choose_style(style, model.styles), torch.device("cpu")).stylize_tensor(sample_photo)
        for style in model.styles
    ]
    for (first, a), (second, b) in itertools.combinations(zip(model.styles, outputs, strict=True), 2):
        assert (a - b).abs().mean() > 10, (first, second)


# ---------------------------------------------------------------------------- plain reasons for the wrong file


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda path: path.write_text("e" * 101 + "\n"), "it is a text file; expected a model written by"),
        (lambda path: path.write_text("root:x:0:0:root:/root:/bin/bash\n"), "it is a text file;"),
        (lambda path: path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64)), "it is a PNG image;"),
        (lambda path: path.mkdir(), "is a folder; expected a model file"),
    ],
    ids=["text", "passwd", "image", "folder"],
)
def test_the_wrong_kind_of_file_is_named_in_one_plain_sentence(tmp_path, make, reason):
    make(tmp_path / "given")
    with pytest.raises(StylerError) as error:
        load_model_file(tmp_path / "given")
    assert reason in str(error.value) and "\n" not in str(error.value)
    assert "(101)" not in str(error.value) and "pop from empty list" not in str(error.value)
