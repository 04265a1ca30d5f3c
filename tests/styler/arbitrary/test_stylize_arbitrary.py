"""`styler stylize --style-image`: any painting through an arbitrary-style model, end to end through the CLI with
random weights, and every bad input as one line, exit status 2 and nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import smooth_image, stripes
from PIL import Image

from styler.arbitrary.model_file import arbitrary_model_from
from styler.arbitrary.stylizer import ArbitraryStylizer, Painting, encoder_weights
from styler.errors import StylerError
from styler.io.images import image_to_tensor, luma
from styler.model.model_files import read_model_contents


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(np.int64)


@pytest.fixture
def painting(tmp_path) -> Path:
    return stripes(tmp_path / "painting.png")


@pytest.fixture
def second_painting(tmp_path) -> Path:
    return stripes(tmp_path / "second.png", ((250, 250, 250), (10, 120, 30), (200, 20, 20)))


@pytest.fixture
def photo_folder(tmp_path) -> Path:
    folder = tmp_path / "in"
    for index, (width, height) in enumerate([(64, 48), (37, 53), (9, 5)]):
        smooth_image(folder / f"photo{index}.png", width, height, seed=index)
    return folder


def stylizer_for(model: Path, style_size: int = 64) -> ArbitraryStylizer:
    model_file = arbitrary_model_from(read_model_contents(model), model)
    return ArbitraryStylizer(model_file, encoder_weights(), torch.device("cpu"), style_size=style_size)


def test_any_painting_through_the_shipped_arbitrary_model(
    run_cli, shipped_arbitrary, random_vgg16, photo_folder, painting, tmp_path
):
    result = run_cli("stylize", photo_folder, "--style-image", painting, "--style-size", "64", "-d", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    for source in sorted(photo_folder.iterdir()):
        output = tmp_path / "out" / f"{source.stem}-painting.png"  # -m arbitrary by default, named by the painting
        assert output.is_file()
        assert Image.open(output).size == Image.open(source).size


def test_models_lists_the_arbitrary_model(run_cli, shipped_arbitrary):
    result = run_cli("models")
    line = next(line for line in result.stdout.splitlines() if line.startswith("arbitrary"))
    assert "--style-image" in line


def test_a_blend_follows_its_weights(random_vgg16, tiny_arbitrary_model, painting, second_painting):
    stylizer = stylizer_for(tiny_arbitrary_model)
    photo = image_to_tensor(Image.open(smooth_image(painting.parent / "p.png", 40, 32, seed=1)).convert("RGB"))
    results = {}
    for weights in ((1.0, 0.0), (0.5, 0.5), (0.0, 1.0)):
        stylizer.set_paintings(
            [Painting(p, w) for p, w in zip((painting, second_painting), weights, strict=True) if w > 0]
        )
        results[weights] = stylizer.stylize_tensor(photo)
    assert not torch.equal(results[1.0, 0.0], results[0.0, 1.0])
    halfway = results[0.5, 0.5]
    assert not torch.equal(halfway, results[1.0, 0.0]) and not torch.equal(halfway, results[0.0, 1.0])


def test_strength_blends_features_so_zero_ignores_the_painting(
    random_vgg16, tiny_arbitrary_model, painting, second_painting
):
    stylizer = stylizer_for(tiny_arbitrary_model)
    photo = image_to_tensor(Image.open(smooth_image(painting.parent / "p.png", 40, 32, seed=2)).convert("RGB"))
    outputs = []
    for chosen in (painting, second_painting):
        stylizer.set_paintings([Painting(chosen)])
        outputs.append((stylizer.stylize_tensor(photo, 0.0), stylizer.stylize_tensor(photo, 1.0)))
    torch.testing.assert_close(outputs[0][0], outputs[1][0])  # strength 0: the photo's own features, decoded
    assert not torch.equal(outputs[0][1], outputs[1][1])


def test_preserve_color_keeps_the_photos_chroma(random_vgg16, tiny_arbitrary_model, painting):
    stylizer = stylizer_for(tiny_arbitrary_model)
    stylizer.set_paintings([Painting(painting)])
    photo = image_to_tensor(Image.open(smooth_image(painting.parent / "p.png", 40, 32, seed=3)).convert("RGB"))
    kept = stylizer.stylize_finished(photo, 1.0, preserve_color=True)
    unclamped = (kept > 0.5) & (kept < 254.5)
    chroma = kept - luma(kept)
    assert torch.allclose(
        chroma[unclamped.all(1, keepdim=True).expand_as(kept)],
        (photo - luma(photo))[unclamped.all(1, keepdim=True).expand_as(kept)],
        atol=1e-3,
    )


def test_each_painting_is_read_and_encoded_once(random_vgg16, tiny_arbitrary_model, painting, monkeypatch):
    stylizer = stylizer_for(tiny_arbitrary_model)
    calls = []
    stylizer.encoder.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape))
    for _ in range(3):
        stylizer.set_paintings([Painting(painting)])
    assert len(calls) == 1
    photo = image_to_tensor(Image.open(smooth_image(painting.parent / "p.png", 24, 16, seed=4)).convert("RGB"))
    for _ in range(3):
        stylizer.stylize_tensor(photo)
    assert len(calls) == 4  # one per photo, none for the painting again


def huge_png(path: Path) -> Path:
    """A PNG whose header claims more pixels than the decompression-bomb limit (written fast: one grey value)."""
    Image.new("L", (10_000, 9_000)).save(path)
    return path


BAD_INPUTS = {
    "unreadable painting": (lambda tmp: _text(tmp / "painting.jpg"), "not an image file"),
    "1x1 painting": (lambda tmp: _solid(tmp / "dot.png", 1, 1), "too small"),
    "sliver painting": (lambda tmp: _solid(tmp / "sliver.png", 2000, 40), "too small or too narrow"),
    "missing painting": (lambda tmp: tmp / "nowhere.jpg", "no such file"),
}


def _text(path: Path) -> Path:
    path.write_text("not a painting")
    return path


def _solid(path: Path, width: int, height: int) -> Path:
    Image.new("RGB", (width, height), (200, 30, 30)).save(path)
    return path


def assert_refused(result, output_dir: Path, expected: str) -> None:
    assert result.exit_code == 2
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not output_dir.exists() or not any(output_dir.iterdir())


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_paintings_are_one_line_and_nothing_written(
    run_cli, shipped_arbitrary, random_vgg16, photo_folder, tmp_path, case
):
    make, expected = BAD_INPUTS[case]
    result = run_cli("stylize", photo_folder, "--style-image", make(tmp_path), "-d", tmp_path / "out")
    assert_refused(result, tmp_path / "out", expected)


def test_a_huge_painting_is_refused(run_cli, shipped_arbitrary, random_vgg16, photo_folder, tmp_path):
    result = run_cli("stylize", photo_folder, "--style-image", huge_png(tmp_path / "huge.png"), "-d", tmp_path / "out")
    assert_refused(result, tmp_path / "out", "decompression bomb")


def test_an_arbitrary_model_without_a_painting(run_cli, shipped_arbitrary, random_vgg16, photo_folder, tmp_path):
    result = run_cli("stylize", photo_folder, "-m", "arbitrary", "-d", tmp_path / "out")
    assert_refused(result, tmp_path / "out", "--style-image PAINTING")


def test_a_painting_given_to_a_single_style_model(run_cli, shipped_arbitrary, photo_folder, painting, tmp_path):
    result = run_cli("stylize", photo_folder, "-m", "tiny", "--style-image", painting, "-d", tmp_path / "out")
    assert_refused(result, tmp_path / "out", "takes no painting")


def test_neither_model_nor_painting(run_cli, shipped_arbitrary, photo_folder, tmp_path):
    result = run_cli("stylize", photo_folder, "-d", tmp_path / "out")
    assert_refused(result, tmp_path / "out", "--style-image")


def test_missing_vgg16_weights_name_the_command_that_fetches_them(
    run_cli, shipped_arbitrary, photo_folder, painting, tmp_path
):
    result = run_cli("stylize", photo_folder, "--style-image", painting, "-d", tmp_path / "out")
    assert_refused(result, tmp_path / "out", "styler weights vgg16")


def test_style_weights_must_match_the_paintings(
    run_cli, shipped_arbitrary, random_vgg16, photo_folder, painting, tmp_path
):
    result = run_cli(
        "stylize", photo_folder, "--style-image", painting, "--style-weight", "1", "--style-weight", "2",
        "-d", tmp_path / "out",
    )  # fmt: skip
    assert_refused(result, tmp_path / "out", "--style-weight")


def test_the_style_size_is_checked(random_vgg16, tiny_arbitrary_model):
    with pytest.raises(StylerError, match="--style-size"):
        stylizer_for(tiny_arbitrary_model, style_size=4)


def test_grid_gives_an_arbitrary_model_one_column_per_painting(
    run_cli, shipped_arbitrary, random_vgg16, photo_folder, painting, second_painting, tmp_path
):
    sheet = tmp_path / "sheet.png"
    result = run_cli(
        "grid", photo_folder, "-m", "arbitrary", "-m", "tiny", "--style-image", painting,
        "--style-image", second_painting, "--cell", "32", "-o", sheet,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    width = Image.open(sheet).width
    assert width == 4 * (32 + 6) + 6  # photo, arbitrary: painting, arbitrary: second, tiny


def test_grid_leaves_out_the_arbitrary_model_without_paintings(run_cli, shipped_arbitrary, photo_folder, tmp_path):
    assert run_cli("grid", photo_folder, "--cell", "32", "-o", tmp_path / "all.png").exit_code == 0
    assert Image.open(tmp_path / "all.png").width == 2 * (32 + 6) + 6  # photo, tiny
    refused = run_cli("grid", photo_folder, "-m", "arbitrary", "--cell", "32", "-o", tmp_path / "a.png")
    assert refused.exit_code == 2 and "--style-image" in refused.stderr


def test_the_result_takes_the_paintings_palette(random_vgg16, tiny_arbitrary_model, painting):
    stylizer = stylizer_for(tiny_arbitrary_model)
    stylizer.set_paintings([Painting(painting)])
    photo = image_to_tensor(Image.open(smooth_image(painting.parent / "p.png", 48, 40, seed=5)).convert("RGB"))
    styled = stylizer.stylize_tensor(photo)
    colours = image_to_tensor(Image.open(painting).convert("RGB").resize((64, 53), Image.Resampling.LANCZOS))
    stylizer.match_colors = False
    unmatched = stylizer.stylize_tensor(photo)
    # Before clamping, exactly the painting's per-channel mean and std; after it, far nearer than without the match.
    exact = stylizer.match_palette(unmatched, photo, 1.0)
    torch.testing.assert_close(exact.mean((2, 3)), colours.mean((2, 3)), atol=0.5, rtol=0)
    torch.testing.assert_close(exact.std((2, 3), unbiased=False), colours.std((2, 3), unbiased=False), atol=0.5, rtol=0)
    error, unmatched_error = ((image.mean((2, 3)) - colours.mean((2, 3))).abs().max() for image in (styled, unmatched))
    assert error < 0.25 * unmatched_error


def test_bfloat16_holds_the_networks_in_bfloat16_and_stays_near_float32(random_vgg16, tiny_arbitrary_model, painting):
    model = arbitrary_model_from(read_model_contents(tiny_arbitrary_model), tiny_arbitrary_model)
    photo = image_to_tensor(Image.open(smooth_image(painting.parent / "p.png", 48, 40, seed=2)).convert("RGB"))
    results = {}
    for precision in ("float32", "bfloat16"):
        # No palette match: the tiny random decoder's channels are nearly flat, and the match would magnify that.
        stylizer = ArbitraryStylizer(model, encoder_weights(), torch.device("cpu"), precision, 64, match_colors=False)
        dtypes = {p.dtype for p in (*stylizer.encoder.parameters(), *stylizer.decoder.parameters())}
        assert dtypes == {getattr(torch, precision)}
        stylizer.set_paintings([Painting(painting)])
        results[precision] = stylizer.stylize_tensor(photo)
        assert results[precision].dtype == torch.float32
    assert (results["float32"] - results["bfloat16"]).abs().mean() < 3.0


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bfloat16_for_paintings_only_where_the_cpu_computes_it(
    monkeypatch, random_vgg16, shipped_arbitrary, painting, native
):
    from styler.commands.stylize import StylizeOptions, choose_stylizer
    from styler.model import stylizer as model_stylizer
    from styler.model.stylizer import resolved_precision

    monkeypatch.setattr(model_stylizer, "cpu_has_bfloat16", lambda: native)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolved_precision("auto", cpu, arbitrary=True) == ("bfloat16" if native else "float32")
    assert resolved_precision("auto", cpu, arbitrary=False) == "float32"
    assert resolved_precision("auto", cuda, arbitrary=True) == "float32"
    assert resolved_precision("float32", cpu, arbitrary=True) == "float32"
    _, make = choose_stylizer(StylizeOptions(model=None, style_images=(str(painting),), device="cpu"))
    assert make().dtype == (torch.bfloat16 if native else torch.float32)
    _, make = choose_stylizer(StylizeOptions(model="tiny", device="cpu"))
    assert make().autocast_dtype is None
