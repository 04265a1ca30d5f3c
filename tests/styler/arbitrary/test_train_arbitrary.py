"""`styler train-arbitrary`: a tiny run with random VGG16 weights writes a usable model, checkpoints and previews,
and a resumed run ends where an uninterrupted one does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from styler.arbitrary.model_file import arbitrary_model_from
from styler.model.model_files import read_model_contents


def tiny(photos: Path, work: Path, *extra: str | Path) -> list[str | Path]:
    return [
        "train-arbitrary", "--data", photos, "--out", work / "arbitrary.pth", "--checkpoint-dir", work / "ck",
        "--image-size", "32", "--batch-size", "2", "--decoder-width", "0.0625", "--no-amp", "--device", "cpu",
        "--checkpoint-every", "2", "--preview-every", "2", *extra,
    ]  # fmt: skip


def decoder_weights(path: Path) -> dict[str, torch.Tensor]:
    contents = read_model_contents(path)
    return contents["decoder"] if "decoder" in contents else arbitrary_model_from(contents, path).state_dict


def test_a_tiny_run_writes_model_checkpoints_and_previews(run_cli, random_vgg16, photos, style, tmp_path):
    result = run_cli(*tiny(photos, tmp_path, "--steps", "3", "--painting", style))
    assert result.exit_code == 0, result.stderr
    model = arbitrary_model_from(read_model_contents(tmp_path / "arbitrary.pth"), tmp_path / "arbitrary.pth")
    assert model.training["steps_done"] == 3 and model.training["paintings"] == [style.name]
    assert model.training["style_weight"] == 10.0 and "AdaIN" in model.training["loss"]
    assert (tmp_path / "ck" / "step-0000002.ckpt").is_file()
    assert (tmp_path / "ck" / "step-0000003.ckpt").is_file()  # the last step's, off the every-2 grid
    assert (tmp_path / "ck" / "preview-0000002.jpg").is_file()
    # A checkpoint works wherever a model file does.
    stylized = run_cli(
        "stylize", photos / "photo0.jpg", "-m", tmp_path / "ck" / "step-0000002.ckpt", "--style-image", style,
        "--style-size", "64", "-o", tmp_path / "out.png",
    )  # fmt: skip
    assert stylized.exit_code == 0, stylized.stderr
    assert (tmp_path / "out.png").is_file()


def test_resuming_gives_the_uninterrupted_runs_weights(run_cli, random_vgg16, photos, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert run_cli(*tiny(photos, straight, "--steps", "4")).exit_code == 0
    result = run_cli(
        "train-arbitrary", "--resume", straight / "ck" / "step-0000002.ckpt",
        "--checkpoint-dir", resumed / "ck", "--out", resumed / "arbitrary.pth",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    first = decoder_weights(straight / "ck" / "step-0000004.ckpt")
    second = decoder_weights(resumed / "ck" / "step-0000004.ckpt")
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_without_photos_or_output_it_says_what_to_give(run_cli, random_vgg16, tmp_path):
    result = run_cli("train-arbitrary", "--steps", "1")
    assert result.exit_code == 2
    assert "--data" in result.stderr and "--out" in result.stderr


def test_painting_crops_come_at_several_palettes_and_scales(photos, tmp_path):
    from PIL import Image

    from styler.arbitrary.training import ArbitraryConfig, Images

    red = tmp_path / "red.png"
    Image.new("RGB", (120, 90), (200, 10, 10)).save(red)
    config = ArbitraryConfig(
        photos=[str(path) for path in sorted(photos.iterdir())], paintings=[str(red)], previews=[], out="x",
        checkpoint_dir="y", image_size=32, painting_sizes=(40, 120), painting_share=1.0, palette_shuffle=0.5,
    )  # fmt: skip
    images = Images(config)
    generator = torch.Generator().manual_seed(0)
    crops = [images.style_crop(generator) for _ in range(40)]
    assert all(crop.shape == (3, 32, 32) for crop in crops)
    red_channels = {int(crop.float().mean((1, 2)).argmax()) for crop in crops}
    assert 0 in red_channels and len(red_channels) > 1  # the original palette, and permuted ones


def test_a_recipe_changed_on_resuming_is_recorded_with_its_step(run_cli, random_vgg16, photos, tmp_path):
    assert run_cli(*tiny(photos, tmp_path, "--steps", "2")).exit_code == 0
    result = run_cli(
        "train-arbitrary", "--resume", tmp_path / "ck" / "step-0000002.ckpt", "--steps", "3", "--style-weight", "4",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    training = arbitrary_model_from(
        read_model_contents(tmp_path / "arbitrary.pth"), tmp_path / "arbitrary.pth"
    ).training
    assert training["style_weight"] == 4 and training["resumed"] == [{"step": 2, "steps": 3, "style_weight": 4}]


def test_skips_are_chosen_recorded_and_kept_on_resuming(run_cli, random_vgg16, photos, tmp_path):
    plain = run_cli(*tiny(photos, tmp_path / "plain", "--steps", "2", "--skip", "none"))
    assert plain.exit_code == 0, plain.stderr
    model = arbitrary_model_from(read_model_contents(tmp_path / "plain" / "arbitrary.pth"), tmp_path)
    assert model.decoder_skips == () and model.training["decoder_skips"] == []
    assert model.training["content_at_skips"] is True and "relu4_1 vs" not in model.training["loss"]
    relu4_only = run_cli(*tiny(photos, tmp_path / "r4", "--steps", "1", "--no-skip-content"))
    assert relu4_only.exit_code == 0, relu4_only.stderr
    recipe = arbitrary_model_from(read_model_contents(tmp_path / "r4" / "arbitrary.pth"), tmp_path).training
    assert recipe["content_at_skips"] is False and "relu4_1 vs" in recipe["loss"]
    # The default reads relu2_1 and relu3_1 too; --init starts it from the plain decoder.
    warm = run_cli(*tiny(photos, tmp_path / "warm", "--steps", "2", "--init", tmp_path / "plain" / "arbitrary.pth"))
    assert warm.exit_code == 0, warm.stderr
    model = arbitrary_model_from(read_model_contents(tmp_path / "warm" / "arbitrary.pth"), tmp_path)
    assert model.decoder_skips == ("relu2_1", "relu3_1")
    assert model.training["init"] == str(tmp_path / "plain" / "arbitrary.pth")
    changed = run_cli(
        "train-arbitrary", "--resume", tmp_path / "plain" / "ck" / "step-0000002.ckpt", "--skip", "relu2_1"
    )
    assert changed.exit_code == 2 and "--init" in changed.stderr
    unknown = run_cli(*tiny(photos, tmp_path / "x", "--steps", "1", "--skip", "relu4_1"))
    assert unknown.exit_code == 2 and "--skip relu4_1" in unknown.stderr
    assert not (tmp_path / "x").exists()


def test_the_content_loss_inverts_every_layer_the_decoder_reads(photos, tmp_path):
    import torch.nn.functional as F

    from styler.arbitrary.network import CONTENT_LAYER, STYLE_LAYERS
    from styler.arbitrary.training import ArbitraryConfig, DecoderTraining

    config = ArbitraryConfig(
        photos=[str(path) for path in sorted(photos.iterdir())], paintings=[], previews=[], out="x",
        checkpoint_dir="y", image_size=32, batch_size=2, decoder_width=0.0625,
    )  # fmt: skip
    training = DecoderTraining(config, None)
    with torch.no_grad():  # a decoder whose skips are switched on
        for projection in training.decoder.projections.values():
            projection.weight.normal_()
    batch = training.images.batch(torch.Generator().manual_seed(0))
    with torch.no_grad():
        result, targets, _ = training.decode(*batch)
        features = training.encoder(result, STYLE_LAYERS)
        errors = {layer: F.mse_loss(features[layer], target) for layer, target in targets.items()}
        assert set(errors) == {"relu2_1", "relu3_1", CONTENT_LAYER}
        torch.testing.assert_close(training.losses(*batch).content, sum(errors.values()))
        config.content_at_skips = False
        torch.testing.assert_close(training.losses(*batch).content, errors[CONTENT_LAYER])


@pytest.mark.parametrize(
    "option, value", [("--checkpoint-every", "0"), ("--steps", "0"), ("--image-size", "16"), ("--lr", "0")]
)
def test_unusable_settings_are_one_line(run_cli, random_vgg16, photos, tmp_path, option, value):
    result = run_cli(*tiny(photos, tmp_path, "--steps", "2", option, value))
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert f"{option} {value}" in result.stderr
    assert not (tmp_path / "arbitrary.pth").exists()


def test_init_refuses_what_is_not_an_arbitrary_model_before_any_work(
    run_cli, random_vgg16, photos, tiny_model, tmp_path
):
    listing = tmp_path / "list.pth"
    torch.save([1, 2], listing)
    for init in (tiny_model, listing):
        work = tmp_path / init.stem
        result = run_cli(*tiny(photos, work, "--steps", "1", "--init", init))
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert f"--init {init}" in result.stderr
        assert not work.exists()


def test_skips_in_any_order_are_the_same_decoder(run_cli, random_vgg16, photos, tmp_path):
    assert run_cli(*tiny(photos, tmp_path, "--steps", "2", "--skip", "relu3_1", "--skip", "relu2_1")).exit_code == 0
    model = arbitrary_model_from(read_model_contents(tmp_path / "arbitrary.pth"), tmp_path)
    assert model.training["decoder_skips"] == ["relu2_1", "relu3_1"]
    resumed = run_cli(
        "train-arbitrary", "--resume", tmp_path / "ck" / "step-0000002.ckpt", "--steps", "3",
        "--skip", "relu3_1", "--skip", "relu2_1", "--out", tmp_path / "more.pth",
    )  # fmt: skip
    assert resumed.exit_code == 0, resumed.stderr


def test_a_narrower_decoder_starts_from_a_wider_ones_strongest_channels():
    from styler.arbitrary.network import Decoder
    from styler.arbitrary.training import narrowed_from

    torch.manual_seed(0)
    wide = Decoder(0.125, ("relu2_1", "relu3_1"))
    with torch.no_grad():
        for projection in wide.projections.values():
            projection.weight.normal_()
    same = narrowed_from(wide, Decoder(0.125, wide.skips))
    assert all(torch.equal(value, same[key]) for key, value in wide.state_dict().items())  # all kept, in order
    narrow, fresh = Decoder(0.0625, wide.skips), Decoder(0.0625, wide.skips)
    narrow.load_state_dict(narrowed_from(wide, narrow))
    features = {"relu4_1": torch.rand(2, 512, 4, 5), "relu3_1": torch.rand(2, 256, 8, 10)}
    features["relu2_1"] = torch.rand(2, 128, 16, 20)
    with torch.no_grad():
        target = wide(features)
        assert (narrow(features) - target).abs().mean() < (fresh(features) - target).abs().mean()


def test_init_from_a_wider_decoder_narrows_it_and_refuses_a_narrower_one(run_cli, random_vgg16, photos, tmp_path):
    assert run_cli(*tiny(photos, tmp_path / "wide", "--steps", "1", "--decoder-width", "0.125")).exit_code == 0
    wide = tmp_path / "wide" / "arbitrary.pth"
    narrowed = run_cli(*tiny(photos, tmp_path / "narrow", "--steps", "1", "--init", wide))
    assert narrowed.exit_code == 0, narrowed.stderr
    assert run_cli(*tiny(photos, tmp_path / "narrow2", "--steps", "1")).exit_code == 0
    refused = run_cli(
        *tiny(photos, tmp_path / "wider", "--steps", "1", "--decoder-width", "0.25", "--init", wide)
    )  # fmt: skip
    assert refused.exit_code == 2 and "a width-0.125 decoder; this run's is 0.25" in refused.stderr
    fewer = run_cli(*tiny(photos, tmp_path / "fewer", "--steps", "1", "--skip", "none", "--init", wide))
    assert fewer.exit_code == 2 and "--init" in fewer.stderr and "relu2_1" in fewer.stderr
