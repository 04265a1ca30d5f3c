"""tools/ship.py: a trained model enters models/ in float16 with a manifest entry naming its style's licence."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
from helpers import REPOSITORY  # tests/helpers.py (pytest puts tests/ on sys.path)

from styler.model.architecture import Architecture
from styler.model.model_files import load_model_file, resolve_model, save_model
from styler.model.network import TransformerNet

SHIP = REPOSITORY / "tools" / "ship.py"


def _ship_module():
    spec = importlib.util.spec_from_file_location("ship", SHIP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _trained(path: Path, images: list[str]) -> Path:
    torch.manual_seed(0)
    network = TransformerNet(Architecture(width=0.125, residual_blocks=1, num_styles=len(images)))
    styles = [{"name": Path(image).stem.split("_")[1], "image": image} for image in images]
    save_model(path, network, [style["name"] for style in styles], {"styles": styles, "steps": 3, "data": "/x"})
    return path


def test_ship_stores_float16_and_records_licence(tmp_path):
    ship = _ship_module()
    trained = _trained(tmp_path / "run.pth", ["vangogh_starry_night.jpg"])
    shipped_dir = tmp_path / "models"
    shipped_dir.mkdir()
    assert ship.main([str(trained), "--name", "starry", "--models-dir", str(shipped_dir)]) == 0
    raw = torch.load(shipped_dir / "starry.pth", weights_only=True)
    assert {value.dtype for value in raw["state_dict"].values()} == {torch.float16}
    entry = json.loads((shipped_dir / "manifest.json").read_text())["models"][0]
    assert entry["name"] == "starry" and entry["styles"] == ["starry"]
    assert entry["style_images"][0]["artist"] == "Vincent van Gogh"
    assert "public domain" in entry["style_images"][0]["licence"]
    assert "non-commercial" in entry["training"]["data"]
    # The shipped model stylizes like the trained one, up to float16 rounding of the weights.
    original, shipped = load_model_file(trained).build(), resolve_model("starry", shipped_dir).build()
    photo = torch.rand(1, 3, 32, 32) * 255
    with torch.no_grad():
        assert (original(photo) - shipped(photo)).abs().max() < 1.0
    # Shipping again under the same name replaces the entry rather than adding a second one.
    assert ship.main([str(trained), "--name", "starry", "--models-dir", str(shipped_dir)]) == 0
    assert len(json.loads((shipped_dir / "manifest.json").read_text())["models"]) == 1


def test_ship_renames_styles_for_blending(tmp_path):
    ship = _ship_module()
    trained = _trained(tmp_path / "run.pth", ["vangogh_starry_night.jpg", "hokusai_great_wave.jpg"])
    assert (
        ship.main([str(trained), "--name", "mix", "--style-names", "starry,wave", "--models-dir", str(tmp_path)]) == 0
    )
    entry = json.loads((tmp_path / "manifest.json").read_text())["models"][0]
    assert entry["styles"] == ["starry", "wave"] == [image["name"] for image in entry["style_images"]]
    assert [image["artist"] for image in entry["style_images"]] == ["Vincent van Gogh", "Katsushika Hokusai"]
    assert resolve_model("mix", tmp_path).styles == ["starry", "wave"]
    assert ship.main([str(trained), "--name", "mix", "--style-names", "one", "--models-dir", str(tmp_path)]) == 2


def test_ship_records_the_run_a_model_started_from(tmp_path):
    ship = _ship_module()
    _trained(tmp_path / "recon.pth", ["vangogh_starry_night.jpg"])
    trained = _trained(tmp_path / "run.pth", ["vangogh_starry_night.jpg"])
    contents = torch.load(trained, weights_only=True)
    contents["training"]["init"] = "recon.pth"
    torch.save(contents, trained)
    assert ship.main([str(trained), "--name", "starry", "--models-dir", str(tmp_path)]) == 0
    entry = json.loads((tmp_path / "manifest.json").read_text())["models"][0]
    assert entry["training"]["init_training"]["steps"] == 3
    (tmp_path / "recon.pth").unlink()
    assert ship.main([str(trained), "--name", "again", "--models-dir", str(tmp_path)]) == 2


def test_ship_refuses_a_style_without_a_licence_record(tmp_path, capsys):
    ship = _ship_module()
    trained = _trained(tmp_path / "run.pth", ["my_own_painting.jpg"])
    assert ship.main([str(trained), "--name", "mine", "--models-dir", str(tmp_path)]) == 2
    assert "no licence record" in capsys.readouterr().err
    assert not (tmp_path / "mine.pth").exists() and not (tmp_path / "manifest.json").exists()


def test_ship_arbitrary_enters_an_arbitrary_model_with_its_paintings_licences(tmp_path):
    from styler.arbitrary.model_file import save_arbitrary_model
    from styler.arbitrary.network import Decoder
    from styler.model.model_files import read_manifest, read_model_contents

    ship = _ship_module()
    trained = tmp_path / "arbitrary-run.pth"
    save_arbitrary_model(trained, Decoder(0.0625), {"paintings": ["hokusai_great_wave.jpg"], "steps": 3}, half=False)
    shipped_dir = tmp_path / "models"
    shipped_dir.mkdir()
    assert ship.main([str(trained), "--name", "arbitrary", "--arbitrary", "--models-dir", str(shipped_dir)]) == 0
    contents = read_model_contents(shipped_dir / "arbitrary.pth")
    assert all(value.dtype == torch.float16 for value in contents["state_dict"].values())
    (entry,) = read_manifest(shipped_dir)
    assert entry.kind == "arbitrary" and entry.styles == []
    assert entry.style_images[0]["artist"] == "Katsushika Hokusai"
    assert entry.arch == {"encoder": "vgg16", "encoder_layer": "relu4_1", "decoder_width": 0.0625, "decoder_skips": []}
    unlicensed = tmp_path / "other.pth"
    save_arbitrary_model(unlicensed, Decoder(0.0625), {"paintings": ["mine.jpg"]})
    assert ship.main([str(unlicensed), "--name", "x", "--arbitrary", "--models-dir", str(shipped_dir)]) == 2


def test_ship_arbitrary_carries_a_small_encoder_credited_to_vgg16(tmp_path, run_cli, monkeypatch):
    from styler.arbitrary.model_file import arbitrary_model_from, save_arbitrary_model
    from styler.arbitrary.network import Decoder, SmallEncoder
    from styler.model.model_files import read_manifest, read_model_contents

    ship = _ship_module()
    trained, encoder = tmp_path / "small-run.pth", SmallEncoder(0.25)
    save_arbitrary_model(trained, Decoder(0.0625), {"paintings": ["hokusai_great_wave.jpg"]}, False, encoder)
    shipped_dir = tmp_path / "models"
    shipped_dir.mkdir()
    assert ship.main([str(trained), "--name", "fast", "--arbitrary", "--models-dir", str(shipped_dir)]) == 0
    shipped = arbitrary_model_from(read_model_contents(shipped_dir / "fast.pth"), shipped_dir / "fast.pth")
    assert shipped.encoder is not None
    for key, value in encoder.state_dict().items():
        assert torch.equal(shipped.encoder.state_dict()[key], value), key  # float32, unlike the decoder
    (entry,) = read_manifest(shipped_dir)
    assert entry.arch["encoder"] == "vgg16-small" and entry.arch["encoder_width"] == 0.25
    assert "CC BY 4.0" in entry.arch["credit"]
    monkeypatch.setenv("STYLER_MODELS_DIR", str(shipped_dir))
    listing = run_cli("models")
    assert "VGG16 x0.25 to relu4_1" in listing.stdout


def test_ship_arbitrary_names_the_decoder_it_started_from_and_its_run(tmp_path):
    from styler.arbitrary.model_file import save_arbitrary_model
    from styler.arbitrary.network import Decoder
    from styler.model.model_files import read_manifest

    ship = _ship_module()
    start = tmp_path / "runs" / "before.pth"
    start.parent.mkdir()
    save_arbitrary_model(start, Decoder(0.0625), {"paintings": ["hokusai_great_wave.jpg"], "steps_done": 7}, half=False)
    trained = tmp_path / "after.pth"
    record = {"paintings": ["hokusai_great_wave.jpg"], "steps": 3, "init": str(start.resolve())}
    save_arbitrary_model(trained, Decoder(0.0625), record, half=False)
    shipped_dir = tmp_path / "models"
    shipped_dir.mkdir()
    assert ship.main([str(trained), "--name", "arbitrary", "--arbitrary", "--models-dir", str(shipped_dir)]) == 0
    training = read_manifest(shipped_dir)[0].training
    assert training["init"] == "before.pth"
    assert training["init_training"]["steps_done"] == 7
