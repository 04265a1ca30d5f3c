"""`styler stylize` end to end through the CLI, plus the pieces of its pipeline (padding, colour, sizes, styles)."""

from __future__ import annotations

import json
import os
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPOSITORY  # tests/helpers.py (pytest puts tests/ on sys.path)
from PIL import Image
from typer.testing import CliRunner

from styler import __version__
from styler.cli import app, complete_model
from styler.errors import StylerError
from styler.io.files import shown_name
from styler.model.architecture import architecture
from styler.model.model_files import StyleModel
from styler.model.stylizer import choose_style, keep_colors, mirror_pad_to, output_tag, target_size

# What each odd image must give: readable ones an output of their oriented size, the rest one error line.
ODD_IMAGES_THAT_FAIL = {
    "bmp_badbitcount.bmp": "damaged or unsupported",
    "broken.png": "not an image file",
    "broken_data_stream.png": "damaged or unsupported",
    "decompression_bomb.gif": "decompression bomb",
    "decompression_bomb.ico": "decompression bomb",
    "empty.jpg": "not an image file",
    "negative_size.ppm": "not an image file",
    "png_decompression_dos.png": "damaged or unsupported",
    "pngtest_bad.png.bin": "not an image file",
    "text_not_image.jpg": "not an image file",
    "truncated_end_chunk.png": "damaged or unsupported",
    "truncated_image.png": "truncated",
    "truncated_jpeg.jpg": "truncated",
    "unknown_compression_method.png": "not an image file",
    "zero_width.gif": "not an image file",
}
ODD_IMAGE_SIZES = {  # (width, height) after EXIF orientation, for the ones whose stored size differs or matters
    "orientation_rectangle.jpg": (1, 2),
    "hopper_orientation_6.jpg": (128, 128),
    "tRNS_null_1x1.png": (1, 1),
    "itxt_chunks.png": (2400, 2000),
    "iss634.gif": (245, 245),
}


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image).astype(np.int64)


def stylize(run_cli, model: Path, *arguments):
    return run_cli("stylize", "--model", model, *arguments)


# ----------------------------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("width, height", [(321, 481), (1, 1), (7, 3), (3, 7), (64, 48)])
def test_output_has_exactly_the_input_size(run_cli, tiny_model, make_image, width, height):
    source = make_image("photo.png", width, height)
    result = stylize(run_cli, tiny_model, source)
    assert result.exit_code == 0, result.stderr
    output = source.with_name("photo-tiny.png")
    assert result.stdout.strip() == str(output)
    with Image.open(output) as written:
        assert written.size == (width, height) and written.mode == "RGB"
    assert not np.array_equal(pixels(output), pixels(source))  # it was stylized, not copied


@pytest.mark.parametrize("arch", ["johnson", "lite"])
@pytest.mark.parametrize("height, width", [(1, 1), (7, 3), (13, 29), (33, 8)])
def test_the_pipeline_gives_the_input_size_for_each_architecture(arch, height, width):
    from styler.model.architecture import architecture
    from styler.model.model_files import StyleModel
    from styler.model.network import TransformerNet
    from styler.model.stylizer import StyleChoice, Stylizer

    network = TransformerNet(architecture(arch))
    model = StyleModel(network.arch, ["x"], network.state_dict())
    stylizer = Stylizer(model, StyleChoice("x", None), torch.device("cpu"))
    assert stylizer.stylize_tensor(torch.rand(1, 3, height, width) * 255).shape == (1, 3, height, width)


@pytest.mark.parametrize(
    "height, width, target", [(1, 1, (8, 8)), (7, 3, (8, 16)), (5, 6, (16, 16)), (321, 481, (328, 488))]
)
def test_mirror_padding_reaches_the_target_and_keeps_the_image_in_the_corner(height, width, target):
    x = torch.rand(1, 3, height, width)
    padded = mirror_pad_to(x, *target)
    assert padded.shape[-2:] == target
    assert torch.equal(padded[..., :height, :width], x)


def test_mirror_padding_mirrors():
    row = torch.tensor([[[[1.0, 2.0, 3.0]]]]).expand(1, 1, 2, 3)
    assert mirror_pad_to(row, 2, 5)[0, 0, 0].tolist() == [1, 2, 3, 2, 1]


@pytest.mark.parametrize(
    "size, scale, max_size, expected",
    [
        ((1000, 500), None, None, (1000, 500)),
        ((1000, 500), 0.5, None, (500, 250)),
        ((1000, 500), None, 400, (400, 200)),
        ((1000, 500), 2.0, 1500, (1500, 750)),
        ((300, 200), None, 400, (300, 200)),  # --max-size only shrinks
        ((5, 1000), None, 10, (1, 10)),  # never below one pixel
    ],
)
def test_target_size(size, scale, max_size, expected):
    assert target_size(size, scale, max_size) == expected


def test_max_size_and_scale_through_the_cli(run_cli, tiny_model, make_image, tmp_path):
    source = make_image("big.png", 200, 100)
    assert stylize(run_cli, tiny_model, source, "--max-size", "50", "-o", tmp_path / "a.png").exit_code == 0
    assert stylize(run_cli, tiny_model, source, "--scale", "0.25", "-o", tmp_path / "b.png").exit_code == 0
    assert Image.open(tmp_path / "a.png").size == (50, 25)
    assert Image.open(tmp_path / "b.png").size == (50, 25)


# ---------------------------------------------------------------------- modes, orientation, alpha, colour


def test_strength_zero_returns_the_photo_itself(run_cli, tiny_model, make_image):
    source = make_image("photo.png", 31, 17)
    assert stylize(run_cli, tiny_model, source, "--strength", "0").exit_code == 0
    assert np.array_equal(pixels(source.with_name("photo-tiny.png")), pixels(source))


@pytest.mark.parametrize("strength", [0.5, 0.2])  # 0.2 tells s from 1 - s, which 0.5 cannot
def test_strength_blends_linearly(run_cli, tiny_model, make_image, tmp_path, strength):
    source = make_image("photo.png", 31, 17)
    for value in (1, strength):
        assert (
            stylize(run_cli, tiny_model, source, "--strength", value, "-o", tmp_path / f"s{value}.png").exit_code == 0
        )
    full, blended = pixels(tmp_path / "s1.png"), pixels(tmp_path / f"s{strength}.png")
    assert np.abs(blended - (strength * full + (1 - strength) * pixels(source))).max() <= 1.0


def test_exif_rotation_is_applied_before_stylizing(run_cli, tiny_model, tmp_path, random_pixels):
    stored = Image.fromarray(random_pixels(40, 24, 3), "RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # camera held upright: show the stored pixels rotated 90 degrees clockwise
    stored.save(tmp_path / "upright.png", exif=exif)
    assert stylize(run_cli, tiny_model, tmp_path / "upright.png", "--strength", "0").exit_code == 0
    output = pixels(tmp_path / "upright-tiny.png")
    assert output.shape == (40, 24, 3)
    assert np.array_equal(output, np.asarray(stored.transpose(Image.Transpose.ROTATE_270)))


def test_alpha_is_kept_and_the_colour_stylized(run_cli, tiny_model, tmp_path, random_pixels):
    rgba = random_pixels(30, 20, 4)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "logo.png")
    assert stylize(run_cli, tiny_model, tmp_path / "logo.png").exit_code == 0
    output = pixels(tmp_path / "logo-tiny.png")
    assert output.shape == (20, 30, 4)
    assert np.array_equal(output[..., 3], rgba[..., 3])
    assert not np.array_equal(output[..., :3], rgba[..., :3])


def test_alpha_is_kept_resized_through_max_size(run_cli, tiny_model, tmp_path, random_pixels):
    rgba = random_pixels(60, 40, 4)
    rgba[..., 3] = np.where(np.arange(60) < 30, 0, 255)  # left half clear, right half opaque
    Image.fromarray(rgba, "RGBA").save(tmp_path / "logo.png")
    assert stylize(run_cli, tiny_model, tmp_path / "logo.png", "--max-size", "30").exit_code == 0
    output = pixels(tmp_path / "logo-tiny.png")
    assert output.shape == (20, 30, 4)
    expected = Image.fromarray(rgba[..., 3]).resize((30, 20), Image.Resampling.LANCZOS, reducing_gap=3.0)
    assert np.array_equal(output[..., 3], np.asarray(expected))
    assert (output[:, :12, 3] == 0).all() and (output[:, 18:, 3] == 255).all()


def test_alpha_is_composited_onto_white_for_jpeg_output(run_cli, tiny_model, tmp_path):
    Image.new("RGBA", (16, 16), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert stylize(run_cli, tiny_model, tmp_path / "clear.png", "-o", tmp_path / "clear.jpg").exit_code == 0
    assert pixels(tmp_path / "clear.jpg").min() > 240


@pytest.mark.parametrize(
    "name, image",
    [
        ("grey.png", Image.new("L", (9, 5), 120)),
        ("palette.gif", Image.new("P", (9, 5), 3)),
        ("sixteen.png", Image.new("I;16", (9, 5), 30000)),
        ("cmyk.jpg", Image.new("CMYK", (9, 5), (10, 200, 30, 0))),
        ("bilevel.bmp", Image.new("1", (9, 5), 1)),
    ],
)
def test_other_modes_are_converted_and_stylized(run_cli, tiny_model, tmp_path, name, image):
    image.save(tmp_path / name)
    result = stylize(run_cli, tiny_model, tmp_path / name)
    assert result.exit_code == 0, result.stderr
    output = Path(result.stdout.strip())
    expected_suffix = ".png" if name.endswith(".gif") else Path(name).suffix
    assert output.name == f"{Path(name).stem}-tiny{expected_suffix}"
    with Image.open(output) as written:
        assert written.size == (9, 5) and written.mode == "RGB"


def test_icc_profile_is_kept(run_cli, tiny_model, tmp_path):
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.new("RGB", (12, 12), (200, 100, 50)).save(tmp_path / "tagged.jpg", icc_profile=profile)
    assert stylize(run_cli, tiny_model, tmp_path / "tagged.jpg").exit_code == 0
    with Image.open(tmp_path / "tagged-tiny.jpg") as written:
        assert written.info.get("icc_profile") == profile


def test_preserve_color_keeps_the_photos_chroma():
    torch.manual_seed(0)
    content, styled = torch.rand(1, 3, 8, 8) * 200 + 20, torch.rand(1, 3, 8, 8) * 255
    kept = keep_colors(content, styled)

    def ycbcr(x):
        r, g, b = x[0]
        y = 0.299 * r + 0.587 * g + 0.114 * b
        return y, -0.168736 * r - 0.331264 * g + 0.5 * b, 0.5 * r - 0.418688 * g - 0.081312 * b

    (y_kept, cb_kept, cr_kept), (_, cb_photo, cr_photo), (y_styled, _, _) = ycbcr(kept), ycbcr(content), ycbcr(styled)
    inside = (kept > 0).all(dim=1)[0] & (kept < 255).all(dim=1)[0]  # clamping at the gamut edge may move chroma
    assert inside.sum() > 10
    for kept_channel, expected in ((y_kept, y_styled), (cb_kept, cb_photo), (cr_kept, cr_photo)):
        torch.testing.assert_close(kept_channel[inside], expected[inside], rtol=0, atol=1e-3)


def test_preserve_color_through_the_cli(run_cli, tiny_model, tmp_path):
    Image.new("RGB", (24, 16), (30, 160, 60)).save(tmp_path / "green.png")
    assert stylize(run_cli, tiny_model, tmp_path / "green.png", "--preserve-color").exit_code == 0
    out = pixels(tmp_path / "green-tiny.png").reshape(-1, 3)
    # A uniform green photo: every output pixel is that green shifted equally in R, G and B.
    shifts = out - np.array([30, 160, 60])
    unclipped = (out > 0).all(axis=1) & (out < 255).all(axis=1)
    assert (np.ptp(shifts[unclipped], axis=1) <= 2).all()


# --------------------------------------------------------------------------------- outputs and overwrite


def test_an_existing_output_is_refused_unless_overwrite(run_cli, tiny_model, make_image):
    source = make_image("photo.png", 16, 16)
    output = source.with_name("photo-tiny.png")
    output.write_bytes(b"precious")
    result = stylize(run_cli, tiny_model, source)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == f"styler: error: {output}: exists (pass --overwrite to replace it)"
    assert output.read_bytes() == b"precious"
    assert stylize(run_cli, tiny_model, source, "--overwrite").exit_code == 0
    assert Image.open(output).size == (16, 16)


def test_an_input_is_never_overwritten(run_cli, tiny_model, make_image, tmp_path):
    source = make_image("photo.png", 16, 16)
    before = source.read_bytes()
    result = stylize(run_cli, tiny_model, source, "-o", source, "--overwrite")
    assert result.exit_code == 2 and "refusing to overwrite an input" in result.stderr
    os.link(source, tmp_path / "alias.png")
    result = stylize(run_cli, tiny_model, source, "-o", tmp_path / "alias.png", "--overwrite")
    assert result.exit_code == 2 and "refusing to overwrite an input" in result.stderr
    assert source.read_bytes() == before


def test_inputs_that_would_write_the_same_output_are_refused(run_cli, tiny_model, make_image, tmp_path):
    first = make_image("a.png", 8, 8)
    (tmp_path / "other").mkdir()
    second = Image.new("RGB", (8, 8)).save(tmp_path / "other" / "a.png") or tmp_path / "other" / "a.png"
    result = stylize(run_cli, tiny_model, first, second, "--output-dir", tmp_path / "out")
    assert result.exit_code == 2
    assert f"{first} already writes this output; stylize a.png with -o" in result.stderr
    assert (tmp_path / "out" / "a-tiny.png").exists()


def test_output_dir_is_created_and_used_for_folders_and_globs(run_cli, tiny_model, make_image, tmp_path):
    for name in ("one.jpg", "two.png", "three.webp"):
        make_image(name, 12, 10)
    (tmp_path / "notes.txt").write_text("not an image")
    result = stylize(run_cli, tiny_model, tmp_path, "--output-dir", tmp_path / "out" / "deep")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out" / "deep").iterdir()) == [
        "one-tiny.jpg",
        "three-tiny.webp",
        "two-tiny.png",
    ]
    result = stylize(run_cli, tiny_model, str(tmp_path / "t*.*"), "-d", tmp_path / "globbed")
    assert result.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "globbed").iterdir()) == ["three-tiny.webp", "two-tiny.png"]


def test_output_option_names_one_file_and_refuses_several_inputs(run_cli, tiny_model, make_image, tmp_path):
    first, second = make_image("a.png", 8, 8), make_image("b.png", 8, 8)
    assert stylize(run_cli, tiny_model, first, "-o", tmp_path / "named.webp").exit_code == 0
    assert Image.open(tmp_path / "named.webp").format == "WEBP"
    result = stylize(run_cli, tiny_model, first, second, "-o", tmp_path / "one.png")
    assert result.exit_code == 2 and "--output names one file but there are 2 inputs" in result.stderr
    result = stylize(run_cli, tiny_model, first, "-o", tmp_path / "out.xyz")
    assert result.exit_code == 2 and "cannot write .xyz" in result.stderr


def test_an_existing_folder_given_as_output_works_like_output_dir(run_cli, tiny_model, make_image, tmp_path):
    (tmp_path / "results").mkdir()
    assert stylize(run_cli, tiny_model, make_image("a.png", 8, 8), "-o", tmp_path / "results").exit_code == 0
    assert (tmp_path / "results" / "a-tiny.png").exists()


# ---------------------------------------------------------------------------------- several files, JSON


def test_failures_are_one_line_each_and_the_rest_is_written(run_cli, tiny_model, make_image, tmp_path):
    good = [make_image("a.png", 8, 8), make_image("b.jpg", 9, 9)]
    (tmp_path / "bad.png").write_bytes(b"garbage")
    result = stylize(run_cli, tiny_model, good[0], tmp_path / "bad.png", tmp_path / "missing.jpg", good[1])
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("styler: error:")]
    assert errors == [
        f"styler: error: {tmp_path / 'bad.png'}: not an image file, or a format Pillow cannot read",
        f"styler: error: {tmp_path / 'missing.jpg'}: no such file",
    ]
    assert result.stderr.splitlines()[-1].startswith("styler: stylized 2 of 4 images in ")
    assert result.stderr.splitlines()[-1].endswith("; 2 failed")
    assert (tmp_path / "a-tiny.png").exists() and (tmp_path / "b-tiny.jpg").exists()
    assert not (tmp_path / "bad-tiny.png").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_json_prints_one_record_per_file(run_cli, tiny_model, make_image, tmp_path):
    good = make_image("a.png", 10, 6)
    (tmp_path / "bad.jpg").write_bytes(b"")
    result = stylize(run_cli, tiny_model, good, tmp_path / "bad.jpg", "--json")
    assert result.exit_code == 2
    records = [json.loads(line) for line in result.stdout.splitlines()]
    keys = {"input", "output", "size", "seconds", "error", "skipped", "styler_version"}
    assert [set(r) for r in records] == [keys] * 2
    assert records[0]["styler_version"] == __version__ and records[0]["skipped"] is False
    ok, failed = records
    assert ok["input"] == str(good) and ok["output"] == str(tmp_path / "a-tiny.png")
    assert ok["size"] == [10, 6] and ok["error"] is None and ok["seconds"] >= 0
    assert failed["output"] is None and failed["size"] is None and "not an image file" in failed["error"]


def test_bfloat16_on_the_cpu_stays_close_to_float32(run_cli, tiny_model, make_image, tmp_path):
    source = make_image("photo.png", 40, 24)
    for precision in ("float32", "bfloat16"):
        result = stylize(
            run_cli,
            tiny_model,
            source,
            "--device",
            "cpu",
            "--precision",
            precision,
            "-o",
            tmp_path / f"{precision}.png",
        )
        assert result.exit_code == 0, result.stderr
    difference = np.abs(pixels(tmp_path / "float32.png") - pixels(tmp_path / "bfloat16.png"))
    assert difference.mean() < 2 and np.percentile(difference, 99) <= 8


def test_max_pixels_refuses_and_admits_big_images(run_cli, tiny_model, make_image, tmp_path):
    source = make_image("photo.png", 40, 30)
    result = stylize(run_cli, tiny_model, source, "--max-pixels", "1000")
    assert result.exit_code == 2 and "decompression bomb (more than 1,000 pixels" in result.stderr
    assert stylize(run_cli, tiny_model, source, "--max-pixels", "1200").exit_code == 0


def test_the_sample_photos_are_documented_and_stylize(run_cli, tiny_model, tmp_path):
    samples = REPOSITORY / "samples"
    photos_dir = samples / "photos"
    photos = sorted(photos_dir.glob("*.jpg"))
    sources = (samples / "SOURCES.md").read_text()
    assert len(photos) >= 2 and all(f"| {photo.name} |" in sources for photo in photos)
    result = stylize(run_cli, tiny_model, str(photos_dir / "*.jpg"), "-d", tmp_path)
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{photo.stem}-tiny.jpg" for photo in photos)


def test_a_folder_without_images_and_a_glob_without_matches_fail(run_cli, tiny_model, tmp_path):
    (tmp_path / "empty").mkdir()
    result = stylize(run_cli, tiny_model, tmp_path / "empty", str(tmp_path / "*.nothing"))
    assert result.exit_code == 2
    assert "folder holds no images" in result.stderr and "no files match" in result.stderr


# ------------------------------------------------------------------------------------ models and styles


def test_a_multi_style_model_needs_a_style_and_can_blend(run_cli, tiny_multi_style_model, make_image, tmp_path):
    source = make_image("photo.png", 16, 12)
    result = stylize(run_cli, tiny_multi_style_model, source)
    assert result.exit_code == 2
    assert "holds 3 styles (starry, wave, kandinsky): pick one or a blend with --style" in result.stderr
    assert stylize(run_cli, tiny_multi_style_model, source, "--style", "wave").exit_code == 0
    assert stylize(run_cli, tiny_multi_style_model, source, "--style", "starry=0.7,wave=0.3").exit_code == 0
    assert stylize(run_cli, tiny_multi_style_model, source, "--style", "starry").exit_code == 0
    tags = ("multi-wave", "multi-starry70+wave30", "multi-starry")  # the model's name first: it is not the style's
    wave, blend, starry = (pixels(tmp_path / f"photo-{tag}.png") for tag in tags)
    assert not np.array_equal(wave, starry) and not np.array_equal(blend, starry) and not np.array_equal(blend, wave)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("mosaic", "unknown style 'mosaic'"),
        ("starry=abc", "is not a number"),
        ("starry=-1,wave=2", "non-negative"),
        ("starry=0", "positive sum"),
        ("starry=1e308,wave=1e308", "positive sum"),  # each finite, the sum not: else a flat grey "a-.jpg"
    ],
)
def test_bad_style_choices_are_user_errors(spec, message):
    with pytest.raises(StylerError, match=message):
        choose_style(spec, ["starry", "wave"])


def test_style_blends_are_normalized_and_named():
    choice = choose_style("wave=3,starry=1", ["starry", "wave", "kandinsky"])
    assert choice.weights == (0.25, 0.75, 0.0) and choice.tag == "starry25+wave75"
    assert choose_style(None, ["candy"]).tag == "candy" and choose_style(None, ["candy"]).weights is None
    with pytest.raises(StylerError, match="single style 'candy'"):
        choose_style("mosaic", ["candy"])


@pytest.mark.parametrize(
    "spec, tag",
    [
        ("starry=1000,wave=1", "starry99.9+wave0.1"),  # a used style never shows as 0, nor the other as 100
        ("starry=1,wave=100000", "starry0.001+wave99.999"),
        ("starry=1,wave=2", "starry33+wave67"),
        ("starry=0.7, wave=0.3", "starry70+wave30"),
    ],
)
def test_blend_tags_name_every_used_style_above_0(spec, tag):
    assert choose_style(spec, ["starry", "wave"]).tag == tag


@pytest.mark.parametrize("weight", ["1_000", "inf", "nan", "0x10", "1.2.3", "½"])
def test_a_blend_weight_is_a_plain_number(weight):
    with pytest.raises(StylerError, match=f"weight '{weight}' of 'starry' is not a number"):
        choose_style(f"starry={weight},wave=1", ["starry", "wave"])


def test_two_models_of_one_style_write_different_names(run_cli, make_image, tmp_path):
    source = make_image("photo.png", 16, 12)
    for model in ("starry", "starry-lite"):
        assert run_cli("stylize", source, "-m", model).exit_code == 0
    assert run_cli("stylize", source, "-m", "mix", "--style", "starry").exit_code == 0
    assert run_cli("stylize", source, "-m", "mix", "--style", "starry=3,wave=1").exit_code == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "photo-mix-starry.png",
        "photo-mix-starry75+wave25.png",
        "photo-starry-lite.png",
        "photo-starry.png",
        "photo.png",
    ]


@pytest.mark.parametrize(
    "file, styles, tag",
    [
        ("starry.pth", ["starry"], "starry"),  # named after its style: the name outputs always had
        ("starry-lite.pth", ["starry"], "starry-lite"),
        ("step-0000200.ckpt", ["stripes"], "step-0000200-stripes"),  # checkpoints of one run: told apart
        ("model.pth", ["stripes"], "model-stripes"),
    ],
)
def test_the_output_tag_names_the_model_unless_it_is_named_after_its_style(file, styles, tag):
    model = StyleModel(architecture("lite"), styles, {}, path=Path("/models") / file)
    assert output_tag(model, choose_style(None, styles).tag) == tag
    named = Path(file).stem  # a shipped model is called by its manifest name, whatever its file is called
    shipped = StyleModel(architecture("lite"), styles, {}, path=Path("/models/file.pth"), shipped_name=named)
    assert output_tag(shipped, choose_style(None, styles).tag) == tag


def test_a_bad_model_is_one_line_and_exit_2(run_cli, make_image, tmp_path):
    source = make_image("photo.png", 8, 8)
    (tmp_path / "broken.pth").write_bytes(b"\x00" * 100)
    for model in (tmp_path / "broken.pth", "no-such-model"):
        result = stylize(run_cli, model, source)
        assert result.exit_code == 2
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("styler: error: ")
    assert not source.with_name("photo-broken.png").exists()


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--strength", "1.5"], "--strength 1.5 is not between 0 and 1"),
        (["--scale", "0"], "--scale 0.0 is not in (0, 8]"),
        (["--max-size", "0"], "--max-size 0 is not a positive number"),
        (["--max-pixels", "0"], "--max-pixels 0 is not a positive number"),
        (["-o", "x.png", "-d", "out"], "either --output or --output-dir"),
        (["--precision", "float16", "--device", "cpu"], "--precision float16 is for CUDA; on the CPU use bfloat16"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(run_cli, tiny_model, make_image, arguments, message):
    result = stylize(run_cli, tiny_model, make_image("photo.png", 8, 8), *arguments)
    assert result.exit_code == 2
    assert result.stderr.startswith("styler: error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_cuda_without_a_gpu_is_one_line(run_cli, tiny_model, make_image):
    result = stylize(run_cli, tiny_model, make_image("photo.png", 8, 8), "--device", "cuda")
    assert result.exit_code == 2 and result.stderr.startswith("styler: error: --device cuda: ")


def test_a_fast_neural_style_state_dict_stylizes(run_cli, make_image, tmp_path):
    from styler.model.network import TransformerNet

    torch.save(TransformerNet().state_dict(), tmp_path / "candy.pth")
    source = make_image("photo.png", 21, 13)
    assert stylize(run_cli, tmp_path / "candy.pth", source).exit_code == 0
    assert Image.open(tmp_path / "photo-candy.png").size == (21, 13)


# -------------------------------------------------------------------------------------------- odd images


def test_every_odd_image_gives_an_output_or_one_clear_line(run_cli, tiny_model, odd_images, tmp_path):
    def run(*inputs, output_dir):
        result = stylize(run_cli, tiny_model, *inputs, "-d", output_dir, "--json")
        assert result.exit_code == 2  # some of them are broken on purpose
        records = {Path(record["input"]).name: record for record in map(json.loads, result.stdout.splitlines())}
        error_lines = [line for line in result.stderr.splitlines() if line.startswith("styler: error:")]
        assert len(error_lines) == sum(1 for record in records.values() if record["error"])
        return records

    # The folder gives every file with an image extension; the one without (.bin) is named explicitly.
    records = run(odd_images, odd_images / "pngtest_bad.png.bin", output_dir=tmp_path / "first")
    assert set(records) == {path.name for path in odd_images.iterdir()}
    # Formats styler does not write become PNG, so these share an output name with an earlier file of their stem.
    collided = sorted(
        name for name, record in records.items() if "already writes this output" in (record["error"] or "")
    )
    assert collided == ["decompression_bomb.ico", "hopper.psd", "transparent.png"]
    records.update(run(*(odd_images / name for name in collided), output_dir=tmp_path / "second"))

    for name, record in records.items():
        if name in ODD_IMAGES_THAT_FAIL:
            assert record["error"] and ODD_IMAGES_THAT_FAIL[name] in record["error"], (name, record)
            assert "\n" not in record["error"]
            continue
        assert record["error"] is None, (name, record)
        with Image.open(record["output"]) as written:
            assert written.size == tuple(record["size"])
            assert written.size == ODD_IMAGE_SIZES.get(name, _oriented_size(odd_images / name))
    assert not [p for p in tmp_path.rglob("*.tmp")]


def _oriented_size(path: Path) -> tuple[int, int]:
    from PIL import ImageOps

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # corrupt EXIF and MPO headers in some of the files, on purpose
        with Image.open(path) as image:
            return ImageOps.exif_transpose(image).size


# ---------------------------------------------------------------------------------------- never destroy a file


def test_an_output_that_appears_during_the_work_is_not_replaced(run_cli, tiny_model, make_image, monkeypatch):
    """Two runs writing the same name at once: the one finishing second must not replace the other's file. The
    other run is played by the encoder, which writes the output's name just before styler puts its own file there."""
    source = make_image("photo.png", 16, 16)
    output = source.with_name("photo-tiny.png")
    real_save = Image.Image.save

    def save_while_another_run_finishes(image, target, *args, **kwargs):
        if not output.exists():
            output.write_bytes(b"the other run's result")
        return real_save(image, target, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save_while_another_run_finishes)
    result = stylize(run_cli, tiny_model, source)
    assert result.exit_code == 2
    assert f"{output}: exists (pass --overwrite to replace it)" in result.stderr
    assert output.read_bytes() == b"the other run's result"
    assert sorted(path.name for path in source.parent.iterdir()) == ["photo-tiny.png", "photo.png"]  # no temporary
    output.unlink()
    assert stylize(run_cli, tiny_model, source, "--overwrite").exit_code == 0  # asked for: replaced
    assert Image.open(output).size == (16, 16)


# -------------------------------------------------------------------------- names, re-runs, folders, metadata


def test_a_name_too_long_for_the_output_fails_alone_and_the_batch_goes_on(run_cli, tiny_model, make_image, tmp_path):
    long = make_image("p" * 248 + ".png", 8, 8)  # legal; "<stem>-tiny.png" is over the 255-byte limit
    short = make_image("short.png", 8, 8)
    result = stylize(run_cli, tiny_model, long, short)
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("styler: error:")]
    assert len(errors) == 1 and "File name too long" in errors[0] and "Traceback" not in result.stderr
    assert (tmp_path / "short-tiny.png").exists()


def test_rerunning_over_a_folder_skips_stylers_own_outputs(run_cli, tiny_model, tiny_multi_style_model, make_image):
    source = make_image("a.png", 8, 8)
    folder = source.parent
    assert stylize(run_cli, tiny_model, folder).exit_code == 0
    again = stylize(run_cli, tiny_model, folder, "--overwrite")
    assert again.exit_code == 0, again.stderr
    assert "skipped 1 files styler wrote" in again.stderr
    # another model's run recognises the output by the mark in its metadata, not only by its name
    other = run_cli("stylize", folder, "-m", tiny_multi_style_model, "--style", "wave")
    assert other.exit_code == 0, other.stderr
    assert sorted(path.name for path in folder.iterdir()) == ["a-multi-wave.png", "a-tiny.png", "a.png"]
    # named explicitly, an output is stylized like any photo
    assert stylize(run_cli, tiny_model, folder / "a-multi-wave.png").exit_code == 0


def test_the_same_file_given_twice_is_stylized_once(run_cli, tiny_model, make_image, tmp_path):
    source = make_image("a.png", 8, 8)
    result = stylize(run_cli, tiny_model, source, source, tmp_path / "." / "a.png", tmp_path)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [str(tmp_path / "a-tiny.png")]


def test_plain_output_prints_one_line_per_file_that_the_shell_reads_back(run_cli, tiny_model, make_image, tmp_path):
    odd = make_image("two\nlines 'quoted'\t.png", 8, 8)
    plain = make_image("plain name.png", 8, 8)
    result = stylize(run_cli, tiny_model, odd, plain)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1] == str(tmp_path / "plain name-tiny.png") and lines[0].startswith("$'")
    back = subprocess.run(["bash", "-c", f"printf %s {lines[0]}"], capture_output=True, text=True, check=True)
    assert back.stdout == str(tmp_path / "two\nlines 'quoted'\t-tiny.png")


def test_names_that_are_not_utf8_are_escaped_byte_for_byte():
    name = os.fsdecode(b"/photos/caf\xe9\x1b[31m.png")  # Latin-1 bytes and a terminal escape sequence
    assert shown_name(name) == "$'/photos/caf\\xe9\\x1b[31m.png'"
    assert shown_name("/photos/café.png") == "/photos/café.png"


@pytest.mark.parametrize(
    "words, expected",
    [
        ("styler stylize a.jpg -m starry", ["starry", "starry-lite"]),
        ("styler video a.mp4 -m mi", ["mix"]),
        ("styler grid a.jpg -m wave", ["wave", "wave-lite"]),
    ],
)
def test_completion_offers_the_shipped_models_for_m(words, expected):
    environment = {"_STYLER_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": "4"}
    result = CliRunner().invoke(app, [], env=environment, prog_name="styler")
    assert result.exit_code == 0 and result.stdout.split() == expected


def test_completion_offers_model_files_and_folders(tmp_path, monkeypatch):
    for name in ("mine.pth", "run.ckpt", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "checkpoints").mkdir()
    monkeypatch.chdir(tmp_path)
    assert [value for value, _ in complete_model("")][-3:] == ["checkpoints/", "mine.pth", "run.ckpt"]
    assert complete_model(f"{tmp_path}/m") == [(f"{tmp_path}/mine.pth", "")]


def test_a_fifo_given_as_input_is_refused_instead_of_hanging(run_cli, tiny_model, make_image, tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    result = stylize(run_cli, tiny_model, tmp_path / "pipe.png", make_image("a.png", 8, 8))
    assert result.exit_code == 2
    assert "pipe.png: is a FIFO (named pipe), not a regular file" in result.stderr
    assert (tmp_path / "a-tiny.png").exists()


def test_a_trailing_slash_names_a_new_folder(run_cli, tiny_model, make_image, tmp_path):
    result = stylize(run_cli, tiny_model, make_image("a.png", 8, 8), "-o", f"{tmp_path / 'newdir'}/")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "newdir" / "a-tiny.png").exists()


def test_an_output_in_missing_folders_is_written_and_errors_never_name_temporary_files(
    run_cli, tiny_model, make_image, tmp_path
):
    result = stylize(run_cli, tiny_model, make_image("a.png", 8, 8), "-o", tmp_path / "missing" / "sub" / "out.jpg")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "missing" / "sub" / "out.jpg").exists()
    (tmp_path / "file").write_text("in the way")
    result = stylize(run_cli, tiny_model, tmp_path / "a.png", "-o", tmp_path / "file" / "out.jpg")
    assert result.exit_code == 2 and ".tmp" not in result.stderr and "styler-probe" not in result.stderr


def test_exif_is_kept_with_the_orientation_reset(run_cli, tiny_model, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: the output is upright and must not be turned again by a viewer
    exif[0x010F] = "Canon"
    exif.get_ifd(0x8769)[0x9003] = "2019:05:05 05:05:05"  # DateTimeOriginal
    Image.new("RGB", (30, 20), (10, 200, 30)).save(tmp_path / "photo.jpg", exif=exif.tobytes())
    for extension in (".jpg", ".png", ".webp"):
        output = tmp_path / f"out{extension}"
        assert stylize(run_cli, tiny_model, tmp_path / "photo.jpg", "-o", output).exit_code == 0
        with Image.open(output) as image:
            kept = image.getexif()
            assert image.size == (20, 30) and 0x0112 not in kept, extension
            assert kept[0x010F] == "Canon" and kept.get_ifd(0x8769)[0x9003] == "2019:05:05 05:05:05", extension
            assert kept[0x0131].startswith("styler "), extension


def test_standard_input_to_standard_output(tiny_model, make_image):
    """`cat a.jpg | styler stylize - -m MODEL -o - > b.png`: the image bytes alone on stdout, as PNG."""
    import io

    from typer.testing import CliRunner

    from styler.cli import app

    source = make_image("a.jpg", 30, 20)
    result = CliRunner().invoke(app, ["stylize", "-", "-m", str(tiny_model), "-o", "-"], input=source.read_bytes())
    assert result.exit_code == 0, result.stderr
    with Image.open(io.BytesIO(result.stdout_bytes)) as image:
        assert image.format == "PNG" and image.size == (30, 20)
    assert sorted(path.name for path in source.parent.iterdir()) == ["a.jpg"]  # nothing written beside it


def test_version_and_short_help(run_cli):
    assert run_cli("--version").stdout.strip() == f"styler {__version__}"
    assert "Usage: styler stylize" in run_cli("stylize", "-h").stdout


def test_help_fits_80_columns_and_states_the_limits(run_cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    text = run_cli("stylize", "--help").stdout
    assert max(map(len, text.splitlines())) <= 80 and "…" not in text  # nothing cut
    assert "--preserve-color" in text and "(0, 8]" in text and "between 0 and 1" in text


def test_recursive_folders_mirror_their_tree_under_the_output_folder(run_cli, tiny_model, make_image, tmp_path):
    photos = tmp_path / "photos"
    (photos / "2025" / "summer").mkdir(parents=True)
    (photos / ".hidden").mkdir()
    for name in ("top.png", "2025/a.png", "2025/summer/b.jpg", ".hidden/c.png"):
        make_image(name.replace("/", "_"), 24, 16).rename(photos / name)
    (photos / "2025" / "notes.txt").write_text("not an image")
    flat = run_cli("stylize", photos, "-m", tiny_model, "-d", tmp_path / "flat")
    assert flat.exit_code == 0, flat.stderr
    assert sorted(p.name for p in (tmp_path / "flat").rglob("*.*")) == ["top-tiny.png"]  # not recursive by default
    result = run_cli("stylize", photos, "-r", "-m", tiny_model, "-d", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    written = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.*"))
    assert written == ["2025/a-tiny.png", "2025/summer/b-tiny.jpg", "top-tiny.png"]
    assert "stylized 3 of 3 images" in result.stderr and "left out 1 files that are not images" in result.stderr
    again = run_cli("stylize", photos, "-r", "-m", tiny_model)  # beside the inputs, in each subfolder
    assert again.exit_code == 0, again.stderr
    assert (photos / "2025" / "summer" / "b-tiny.jpg").is_file() and not (photos / ".hidden" / "c-tiny.png").exists()
