"""The small encoder distilled from VGG16: its shape, its start from VGG16, the distillation loss and command, and an
arbitrary model that carries it (trained with `train-arbitrary --encoder`, used with no VGG16 weights present)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from styler.arbitrary.distill import distillation_loss, start_from_vgg16
from styler.arbitrary.model_file import (
    arbitrary_model_from,
    read_small_encoder,
    save_arbitrary_model,
    save_encoder,
)
from styler.arbitrary.network import CONTENT_LAYER, Decoder, Encoder, SmallEncoder
from styler.errors import StylerError
from styler.model.model_files import read_model_contents
from styler.vgg16 import VGG16Features


def tiny_distill(photos: Path, work: Path, *extra: str | Path) -> list[str | Path]:
    return [
        "distill-encoder", "--data", photos, "--out", work / "small.pth", "--checkpoint-dir", work / "ck",
        "--image-size", "32", "--batch-size", "2", "--no-amp", "--device", "cpu", "--checkpoint-every", "2", *extra,
    ]  # fmt: skip


def relative_error(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> float:
    return sum(float((ours[k] - v).square().mean() / v.square().mean()) for k, v in theirs.items())


def test_the_small_encoder_is_vgg16s_layout_narrowed_with_heads_back_to_its_channels():
    small, full = SmallEncoder(0.25), Encoder()
    small_convs = [layer for layer in small.layers if isinstance(layer, nn.Conv2d)]
    full_convs = [layer for layer in full.vgg.layers if isinstance(layer, nn.Conv2d)]
    assert [c.out_channels for c in small_convs] == [c.out_channels // 4 for c in full_convs]
    images = torch.rand(2, 3, 48, 40) * 255
    ours, theirs = small(images, SmallEncoder.LAYERS), full(images, SmallEncoder.LAYERS)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    assert all(bool((value >= 0).all()) for value in ours.values())  # post-ReLU, as VGG16's


def test_the_start_from_vgg16_keeps_its_strongest_filters_and_fits_the_heads():
    torch.manual_seed(0)
    teacher, images = Encoder(), torch.rand(4, 3, 48, 48) * 255
    random_start = SmallEncoder(0.25)
    started = SmallEncoder(0.25)
    start_from_vgg16(started, teacher, images)
    first, vgg_first = started.layers[0], teacher.vgg.layers[0]
    strongest = vgg_first.weight.flatten(1).norm(dim=1).argsort(descending=True)[: first.out_channels].sort().values
    torch.testing.assert_close(first.weight, vgg_first.weight[strongest])
    with torch.no_grad():
        target = teacher(images, SmallEncoder.LAYERS)
        assert relative_error(started(images, SmallEncoder.LAYERS), target) < 0.5 * relative_error(
            random_start(images, SmallEncoder.LAYERS), target
        )


def test_the_distillation_loss_counts_features_and_their_statistics_relative_to_vgg16s_scale():
    torch.manual_seed(0)
    teacher = {"relu2_1": torch.rand(2, 8, 6, 6), CONTENT_LAYER: 100 * torch.rand(2, 16, 3, 3)}
    same = distillation_loss(dict(teacher), teacher)
    assert float(same.total) == 0.0
    shifted = distillation_loss({k: v + 0.1 * v.square().mean().sqrt() for k, v in teacher.items()}, teacher)
    assert float(shifted.statistics) > 0 and float(shifted.features) > 0
    # Each layer relative to its own scale: the 100x larger layer weighs as much as the other.
    one = distillation_loss({"a": teacher["relu2_1"] * 1.1}, {"a": teacher["relu2_1"]})
    hundred = distillation_loss({"a": teacher[CONTENT_LAYER] * 1.1}, {"a": teacher[CONTENT_LAYER]})
    assert float(one.features) == pytest.approx(float(hundred.features), rel=1e-4)


def test_distill_encoder_writes_an_encoder_that_resumes_exactly(run_cli, random_vgg16, photos, style, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    result = run_cli(*tiny_distill(photos, straight, "--steps", "4", "--painting", style))
    assert result.exit_code == 0, result.stderr
    encoder = read_small_encoder(straight / "small.pth")
    assert encoder.width == 0.5 and not any(p.requires_grad for p in encoder.parameters())
    again = run_cli(
        "distill-encoder", "--resume", straight / "ck" / "step-0000002.ckpt",
        "--checkpoint-dir", resumed / "ck", "--out", resumed / "small.pth",
    )  # fmt: skip
    assert again.exit_code == 0, again.stderr
    first, second = read_small_encoder(straight / "small.pth"), read_small_encoder(resumed / "small.pth")
    for (key, value), other in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(value, other), key
    refused = run_cli("distill-encoder", "--resume", straight / "ck" / "step-0000004.ckpt", "--width", "0.25")
    assert refused.exit_code == 2 and "--width" in refused.stderr


@pytest.mark.parametrize("option, value", [("--width", "0"), ("--width", "1.5"), ("--steps", "0"), ("--lr", "0")])
def test_distill_encoder_refuses_unusable_settings_in_one_line(run_cli, random_vgg16, photos, tmp_path, option, value):
    result = run_cli(*tiny_distill(photos, tmp_path / "w", "--steps", "2", option, value))
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"{option} {value}" in result.stderr
    assert not (tmp_path / "w" / "small.pth").exists()


@pytest.fixture
def small_encoder_file(tmp_path) -> Path:
    torch.manual_seed(1)
    path = tmp_path / "small-encoder.pth"
    save_encoder(path, SmallEncoder(0.25), {"purpose": "tests"})
    return path


def train_on_small(photos: Path, work: Path, encoder: Path, *extra: str | Path) -> list[str | Path]:
    return [
        "train-arbitrary", "--data", photos, "--out", work / "arbitrary.pth", "--checkpoint-dir", work / "ck",
        "--image-size", "32", "--batch-size", "2", "--decoder-width", "0.0625", "--no-amp", "--device", "cpu",
        "--checkpoint-every", "2", "--encoder", encoder, *extra,
    ]  # fmt: skip


def test_a_decoder_trained_on_the_small_encoder_carries_it_and_needs_no_vgg16(
    run_cli, random_vgg16, photos, style, small_encoder_file, tmp_path, monkeypatch
):
    result = run_cli(*train_on_small(photos, tmp_path, small_encoder_file, "--steps", "2", "--painting", style))
    assert result.exit_code == 0, result.stderr
    model_path = tmp_path / "arbitrary.pth"
    model = arbitrary_model_from(read_model_contents(model_path), model_path)
    assert not model.uses_vgg16 and "small" in model.training["encoder"]
    carried, given = model.encoder.state_dict(), read_small_encoder(small_encoder_file).state_dict()
    assert all(torch.equal(carried[key], given[key]) for key in given)
    # A resumed run keeps the encoder from its checkpoint, even with the file gone; --encoder is not for resuming.
    small_encoder_file.unlink()
    resumed = run_cli(
        "train-arbitrary", "--resume", tmp_path / "ck" / "step-0000002.ckpt", "--steps", "3",
        "--out", tmp_path / "more.pth",
    )  # fmt: skip
    assert resumed.exit_code == 0, resumed.stderr
    more = arbitrary_model_from(read_model_contents(tmp_path / "more.pth"), tmp_path / "more.pth")
    assert all(torch.equal(more.encoder.state_dict()[key], carried[key]) for key in carried)
    refused = run_cli("train-arbitrary", "--resume", tmp_path / "ck" / "step-0000003.ckpt", "--encoder", model_path)
    assert refused.exit_code == 2 and "--encoder" in refused.stderr
    # The small encoder is what the model reads: changing it changes the picture.
    photo = photos / "photo0.jpg"
    vgg16_file = random_vgg16
    vgg16_file.unlink()  # stylizing needs no VGG16 at all
    outputs = []
    for name, scale in (("a", 1.0), ("b", 1.5)):
        contents = read_model_contents(model_path)
        weights = [k for k in contents["state_dict"] if k.startswith("layers.") and k.endswith(".weight")]
        last = max(weights, key=lambda k: int(k.split(".")[1]))
        contents["state_dict"][last] = contents["state_dict"][last] * 50  # a 2-step decoder is nearly flat
        contents["encoder"]["state_dict"] = {k: v * scale for k, v in contents["encoder"]["state_dict"].items()}
        model_file = tmp_path / f"{name}.pth"
        torch.save(contents, model_file)
        out = tmp_path / f"{name}.png"
        stylized = run_cli(
            "stylize", photo, "-m", model_file, "--style-image", style, "--style-size", "64", "-o", out,
            "--no-match-colors",
        )  # fmt: skip
        assert stylized.exit_code == 0, stylized.stderr
        outputs.append(torch.from_numpy(np.asarray(Image.open(out).convert("RGB")).copy()))
    assert not torch.equal(outputs[0], outputs[1])


def test_an_encoder_that_is_not_one_is_refused_in_one_line_before_any_work(
    run_cli, random_vgg16, photos, tiny_arbitrary_model, tmp_path
):
    listing = tmp_path / "list.pth"
    torch.save([1, 2], listing)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    for encoder in (listing, garbage, tiny_arbitrary_model):  # the last: a VGG16 model, which carries none
        work = tmp_path / encoder.stem
        result = run_cli(*train_on_small(photos, work, encoder, "--steps", "1"))
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert f"--encoder {encoder}" in result.stderr
        assert not work.exists()


def test_a_model_carrying_a_damaged_encoder_is_one_line(tmp_path):
    path = tmp_path / "m.pth"
    save_arbitrary_model(path, Decoder(0.0625), {}, encoder=SmallEncoder(0.25))
    contents = read_model_contents(path)
    assert arbitrary_model_from(contents, path).encoder is not None
    contents["encoder"]["state_dict"].pop(next(iter(contents["encoder"]["state_dict"])))
    with pytest.raises(StylerError, match="do not fit a width-0.25 small encoder"):
        arbitrary_model_from(contents, path)
    contents["encoder"] = {"network": "vgg16-small", "layer": CONTENT_LAYER, "width": "wide"}
    with pytest.raises(StylerError, match="no valid small encoder"):
        arbitrary_model_from(contents, path)


def test_heads_read_the_relu_of_their_layer():
    indices = [VGG16Features.RELU_INDEX[name] for name in SmallEncoder.LAYERS]
    small = SmallEncoder(0.25)
    assert all(isinstance(small.layers[index], nn.ReLU) for index in indices)


def test_the_decoder_trains_on_the_small_encoders_features_and_is_judged_by_vgg16s(photos, small_encoder_file):
    from styler.arbitrary.adain import adain_layers, style_statistics
    from styler.arbitrary.training import ArbitraryConfig, DecoderTraining

    config = ArbitraryConfig(
        photos=[str(path) for path in sorted(photos.iterdir())], paintings=[], previews=[], out="x",
        checkpoint_dir="y", image_size=32, batch_size=2, decoder_width=0.0625, encoder=str(small_encoder_file),
    )  # fmt: skip
    training = DecoderTraining(config, None)
    assert training.encoder is training.small_encoder and training.vgg is not training.encoder
    photos_batch, styles = training.images.batch(torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, targets, style_features = training.decode(photos_batch, styles)
        small = training.small_encoder
        expected = adain_layers(
            small(photos_batch, training.decoder.inputs),
            {k: style_statistics(v) for k, v in small(styles, training.decoder.inputs).items()},
        )
        vgg_styles = training.vgg(styles, ("relu1_1",))
    for layer, target in targets.items():
        torch.testing.assert_close(target, expected[layer])
    torch.testing.assert_close(style_features["relu1_1"], vgg_styles["relu1_1"])  # the style loss measures with VGG16


def test_a_new_distillation_starts_from_vgg16_and_a_resumed_one_from_its_checkpoint(photos, tmp_path):
    from styler.arbitrary.distill import EncoderConfig, EncoderDistillation

    config = EncoderConfig(
        photos=[str(path) for path in sorted(photos.iterdir())], paintings=[], out=str(tmp_path / "e.pth"),
        checkpoint_dir=str(tmp_path / "ck"), image_size=32, batch_size=2,
    )  # fmt: skip
    fresh = EncoderDistillation(config, None)
    first, vgg_first = fresh.encoder.layers[0], fresh.teacher.vgg.layers[0]
    assert any(torch.equal(first.weight[0], filter_) for filter_ in vgg_first.weight)
    fresh.train_step()
    resumed = EncoderDistillation(config, None, fresh.checkpoint())
    assert resumed.step == 1
    for key, value in fresh.encoder.state_dict().items():
        assert torch.equal(value, resumed.encoder.state_dict()[key]), key
