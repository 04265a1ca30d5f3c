"""The encoder's cut, the decoder mirroring it, and the arbitrary-style model file."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from styler.arbitrary.model_file import arbitrary_model_from, model_dict, save_arbitrary_model
from styler.arbitrary.network import CONTENT_LAYER, STYLE_LAYERS, Decoder, Encoder, decoder_plan
from styler.errors import StylerError
from styler.model.model_files import is_arbitrary, load_model_file, read_model_contents
from styler.vgg16 import VGG16Features


def test_the_encoder_stops_at_the_content_layer():
    encoder = Encoder()
    assert len(encoder.vgg.layers) == VGG16Features.RELU_INDEX[CONTENT_LAYER] + 1
    assert isinstance(encoder.vgg.layers[-1], nn.ReLU)
    features = encoder(torch.rand(1, 3, 32, 40) * 255, STYLE_LAYERS)
    assert [tuple(features[name].shape) for name in STYLE_LAYERS] == [
        (1, 64, 32, 40), (1, 128, 16, 20), (1, 256, 8, 10), (1, encoder.channels(), 4, 5),
    ]  # fmt: skip
    assert not any(parameter.requires_grad for parameter in encoder.parameters())


def test_the_decoder_mirrors_the_encoder():
    plan = decoder_plan(1.0)
    convolutions = [(c_out, c_in) for layer in Encoder().vgg.layers if isinstance(layer, nn.Conv2d)
                    for c_in, c_out in [(layer.in_channels, layer.out_channels)]]  # fmt: skip
    assert [step for step in plan if step is not None] == convolutions[::-1]
    assert plan.count(None) == sum(isinstance(layer, nn.MaxPool2d) for layer in Encoder().vgg.layers)


@pytest.mark.parametrize("width", [1.0, 0.5, 0.0625])
def test_the_decoder_returns_an_image_of_the_photos_size(width):
    decoder = Decoder(width)
    features = Encoder()(torch.rand(2, 3, 48, 32) * 255)[CONTENT_LAYER]
    image = decoder(features)
    assert image.shape == (2, 3, 48, 32)
    assert decoder.size_multiple == 8
    inner = [layer.out_channels for layer in decoder.layers if isinstance(layer, nn.Conv2d)][:-1]
    assert inner == [step[1] for step in decoder_plan(width) if step is not None][:-1]
    assert inner[0] == round(256 * width)


def test_model_files_round_trip_in_float16(tmp_path):
    torch.manual_seed(0)
    decoder = Decoder(0.25)
    path = tmp_path / "arbitrary.pth"
    save_arbitrary_model(path, decoder, {"steps": 7})
    contents = read_model_contents(path)  # torch.load(weights_only=True)
    assert is_arbitrary(contents) and contents["kind"] == "arbitrary"
    assert all(value.dtype == torch.float16 for value in contents["state_dict"].values())
    model = arbitrary_model_from(contents, path)
    assert model.training == {"steps": 7} and model.decoder_width == 0.25
    for key, value in model.build().state_dict().items():
        torch.testing.assert_close(value, decoder.state_dict()[key], rtol=1e-3, atol=1e-4)


def test_a_single_style_loader_refuses_an_arbitrary_model_with_a_hint(tmp_path):
    path = tmp_path / "arbitrary.pth"
    save_arbitrary_model(path, Decoder(0.0625), {})
    with pytest.raises(StylerError, match="--style-image"):
        load_model_file(path)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"format_version": 9}, "format version"),
        ({"encoder": {"network": "vgg16", "layer": "relu5_1"}}, "encoder"),
        ({"decoder": {"width": -1}}, "decoder width"),
        ({"state_dict": None}, "state_dict"),
    ],
)
def test_damaged_model_files_are_one_line(tmp_path, change, message):
    contents = {**model_dict(Decoder(0.0625), {}), **change}
    with pytest.raises(StylerError, match=message):
        arbitrary_model_from(contents, tmp_path / "x.pth")


def test_weights_of_another_width_are_refused(tmp_path):
    contents = model_dict(Decoder(0.0625), {})
    contents["decoder"] = {"width": 0.125}
    with pytest.raises(StylerError, match="do not fit"):
        arbitrary_model_from(contents, tmp_path / "x.pth").build()


def test_skips_start_switched_off_and_then_carry_the_shallow_features():
    torch.manual_seed(0)
    plain, skipping = Decoder(0.0625), Decoder(0.0625, ("relu3_1", "relu1_1", "relu2_1"))
    assert skipping.skips == ("relu1_1", "relu2_1", "relu3_1") and skipping.inputs == (CONTENT_LAYER, *skipping.skips)
    missing, unexpected = skipping.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(key.startswith("projections.") for key in missing) and len(missing) == 6
    features = Encoder()(torch.rand(1, 3, 32, 24) * 255, skipping.inputs)
    # Zero projections: the same pictures as the decoder without skips.
    torch.testing.assert_close(skipping(features), plain(features[CONTENT_LAYER]))
    shapes = {name: (p.in_channels, p.out_channels) for name, p in skipping.projections.items()}
    assert shapes == {"relu3_1": (256, 16), "relu2_1": (128, 8), "relu1_1": (64, 4)}  # into the level's width
    for name in skipping.skips:
        changed = Decoder(0.0625, skipping.skips)
        changed.load_state_dict(skipping.state_dict())
        with torch.no_grad():
            changed.projections[name].weight.normal_()
        altered = {**features, name: features[name] * 2}
        assert not torch.allclose(changed(altered), changed(features)), name  # that level's features are read


def test_unknown_skips_are_refused():
    with pytest.raises(ValueError, match="relu4_1"):
        Decoder(0.0625, ("relu4_1",))


def test_skips_travel_in_the_model_file_and_older_files_have_none(tmp_path):
    torch.manual_seed(0)
    decoder = Decoder(0.0625, ("relu2_1",))
    with torch.no_grad():
        decoder.projections["relu2_1"].weight.normal_()
    path = tmp_path / "skip.pth"
    save_arbitrary_model(path, decoder, {})
    model = arbitrary_model_from(read_model_contents(path), path)
    assert model.decoder_skips == ("relu2_1",)
    torch.testing.assert_close(
        model.build().projections["relu2_1"].weight, decoder.projections["relu2_1"].weight, rtol=1e-3, atol=1e-4
    )
    older = model_dict(Decoder(0.0625), {})
    older["decoder"] = {"width": 0.0625}  # as files written before skips
    assert arbitrary_model_from(older, path).decoder_skips == ()
    refused = {**older, "decoder": {"width": 0.0625, "skips": ["relu9_9"]}}
    with pytest.raises(StylerError, match="skips"):
        arbitrary_model_from(refused, path)
    no_projection = model_dict(Decoder(0.0625), {})
    no_projection["decoder"]["skips"] = ["relu2_1"]
    with pytest.raises(StylerError, match="do not fit.*relu2_1"):
        arbitrary_model_from(no_projection, path).build()


def test_a_warm_start_takes_a_plain_decoders_weights_and_zero_skips(tmp_path):
    from styler.arbitrary.training import warm_start

    torch.manual_seed(0)
    plain = Decoder(0.0625)
    path = tmp_path / "plain.pth"
    save_arbitrary_model(path, plain, {}, half=False)
    skipping = Decoder(0.0625, ("relu2_1", "relu3_1"))
    with torch.no_grad():
        for projection in skipping.projections.values():
            projection.weight.fill_(1.0)
    warm_start(skipping, str(path))
    for key, value in plain.state_dict().items():
        assert torch.equal(skipping.state_dict()[key], value), key
    assert all(not p.weight.any() for p in skipping.projections.values())
    with pytest.raises(StylerError, match="width"):
        warm_start(Decoder(0.125), str(path))
