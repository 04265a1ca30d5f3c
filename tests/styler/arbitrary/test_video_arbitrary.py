"""`styler video --style-image`: any painting through an arbitrary-style model, frame after frame, steady like the
trained styles (the video's averaged statistics reach AdaIN and the palette match), with random weights."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPOSITORY, stripes

from benchmarks import clips
from benchmarks.video import flicker
from styler.arbitrary.adain import adain, reference_adain, style_statistics
from styler.arbitrary.model_file import arbitrary_model_from
from styler.arbitrary.stylizer import PALETTE, ArbitraryStylizer, Painting, encoder_weights
from styler.model.model_files import read_model_contents
from styler.model.stylizer import crop_from_grid, pad_to_grid
from styler.video.options import VideoOptions
from styler.video.steadiness import FrameStylizer, SteadyStatistics

needs_av = pytest.mark.skipif(
    importlib.util.find_spec("av") is None, reason="styler video needs PyAV (the [video] extra)"
)

PHOTO = REPOSITORY / "samples" / "photos" / "coffee.jpg"
PAN_PHOTO = REPOSITORY / "samples" / "photos" / "astronaut.jpg"


@pytest.fixture
def painting(tmp_path) -> Path:
    return stripes(tmp_path / "painting.png")


@pytest.fixture
def stylizer(random_vgg16, tiny_arbitrary_model, painting) -> ArbitraryStylizer:
    model = arbitrary_model_from(read_model_contents(tiny_arbitrary_model), tiny_arbitrary_model)
    stylizer = ArbitraryStylizer(model, encoder_weights(), torch.device("cpu"), style_size=64)
    stylizer.set_paintings([Painting(painting)])
    return stylizer


def stylize_clip(stylizer: ArbitraryStylizer, frames: np.ndarray, batch: int = 2, **options) -> torch.Tensor:
    """(T, 3, H, W) float outputs of the frames, `batch` at a time, as styler video computes them."""
    run = FrameStylizer(stylizer, VideoOptions(style_images=("painting.png",), **options))
    outputs = np.concatenate([run(frames[start : start + batch]) for start in range(0, len(frames), batch)])
    return torch.from_numpy(outputs).permute(0, 3, 1, 2).float()


# ------------------------------------------------------------------------------------------ steady statistics


def test_steady_adain_normalizes_with_the_averaged_statistics():
    """Against the float64 reference: each frame's features normalized with the moving average of the frames' mean
    and variance since the last cut (momentum 0.75), in batches of any size; at a cut, with the frame's own."""
    torch.manual_seed(0)
    jumps = torch.tensor([0.5, 3.0, 1.0, 2.0, 0.7])[:, None, None, None]  # statistics that jump frame to frame
    frames = torch.randn(5, 8, 6, 7) * jumps + 4 * jumps
    painting = torch.randn(1, 8, 9, 9) * 2 + 1
    cuts = [True, False, False, True, False]
    steady = SteadyStatistics(momentum=0.75)
    outputs = []
    for batch in (slice(0, 2), slice(2, 5)):
        with steady.frames(cuts[batch]):
            outputs.append(adain(frames[batch], style_statistics(painting), layer="relu4_1"))
    x = frames.double()
    mean, var = x.mean((2, 3)), x.var((2, 3), unbiased=False)  # each frame's own, then averaged in place
    for t, cut in enumerate(cuts):
        if not cut:
            mean[t], var[t] = 0.75 * mean[t - 1] + 0.25 * mean[t], 0.75 * var[t - 1] + 0.25 * var[t]
    expected = reference_adain(frames, painting, content_statistics=(mean, var))
    result = torch.cat(outputs).double()
    torch.testing.assert_close(result, expected, atol=1e-4, rtol=1e-4)
    own = reference_adain(frames, painting)
    torch.testing.assert_close(result[[0, 3]], own[[0, 3]], atol=1e-4, rtol=1e-4)  # the cuts start afresh
    assert (result[[1, 2, 4]] - own[[1, 2, 4]]).abs().amax() > 0.1  # the others are not each frame's own


def test_a_video_steadies_every_adain_layer_and_the_palette(stylizer):
    frames = torch.from_numpy(clips.pan(PAN_PHOTO, 40, 32, 2, step=2)).permute(0, 3, 1, 2).float()
    steady = SteadyStatistics()
    with steady.frames([True, False]):
        stylizer.stylize_finished(frames, 1.0, False)
    assert set(steady.averages) == {*stylizer.decoder.inputs, PALETTE}


def test_a_flash_in_a_corner_moves_the_far_side_less_with_steady_statistics(stylizer):
    """A flash changes the frame's statistics: normalized with each frame's own, the whole picture changes with it;
    with the video's averaged ones, the part out of the flash's reach changes far less."""
    background = clips.photo_array(PHOTO, 120, 160)[:, :160]
    frames = np.repeat(background[None], 6, axis=0)
    frames[1::2, :20, :20] = 255
    far = torch.zeros(120, 160, dtype=torch.bool)
    far[80:, 100:] = True
    figures = {
        steady: flicker(stylize_clip(stylizer, frames, steady=steady, smooth=0), far) for steady in (False, True)
    }
    assert figures[True] < 0.5 * figures[False], figures


def test_steady_statistics_restart_at_a_scene_cut(stylizer):
    pan = clips.pan(PAN_PHOTO, 64, 48, 3, step=4)
    other, _ = clips.moving_object(PHOTO, 64, 48, 2)
    cut = stylize_clip(stylizer, np.concatenate([pan, other]), smooth=0)
    fresh = stylize_clip(stylizer, other, smooth=0)
    assert (cut[3:] - fresh).abs().max() <= 1
    assert (cut[1:3] - stylize_clip(stylizer, pan[1:], smooth=0)[:2]).abs().amax() > 1  # before it: the averages


def test_the_camera_track_works_on_the_encoders_grid(stylizer):
    run = FrameStylizer(stylizer, VideoOptions(style_images=("painting.png",)))
    assert run.camera is not None and run.camera.multiple == stylizer.size_multiple == 8
    frames = torch.rand(2, 3, 21, 30)
    offsets = [(3, 5), (7, 0)]
    padded = pad_to_grid(frames, 8, 16, offsets)
    assert padded.shape[-2:] == (32, 40)
    assert torch.equal(crop_from_grid(padded, 21, 30, offsets), frames)  # padding in front, cropped back in place
    photos = torch.from_numpy(clips.pan(PAN_PHOTO, 81, 61, 2, step=3)).permute(0, 3, 1, 2).float()

    def blurred(x):  # the picture without the strokes' texture, which the offsets rightly change
        return torch.nn.functional.avg_pool2d(x, 5, stride=1)

    plain = blurred(stylizer.stylize_finished(photos, 1.0, False))
    moved = stylizer.stylize_finished(photos, 1.0, False, offsets)
    assert moved.shape == photos.shape
    moved = blurred(moved)
    in_place = (moved - plain).abs().mean()
    for later, earlier in ((moved[..., 4:], plain[..., :-4]), (moved[..., 4:, :], plain[..., :-4, :])):
        assert in_place < (later - earlier).abs().mean()  # aligned, not moved by the offsets


# ------------------------------------------------------------------------------------------------ the command


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """6 frames at 12 fps, 64x48, a disc crossing a photo."""
    frames, _ = clips.moving_object(PHOTO, 64, 48, 6, sigma=3)
    path = tmp_path_factory.mktemp("clips") / "clip.mp4"
    clips.write_clip(path, frames, fps=12)
    return path


@needs_av
def test_video_with_a_painting_through_the_shipped_arbitrary_model(run_cli, shipped_arbitrary, random_vgg16, clip):
    import av

    painting = stripes(clip.parent / "painting.png")
    second = stripes(clip.parent / "second.png", ((250, 250, 250), (10, 120, 30)))
    for arguments, name in (
        (["--style-image", painting], "clip-painting.mp4"),  # -m arbitrary by default, named by the painting
        (["-m", "arbitrary", "--style-image", painting, "--style-image", second, "--style-weight", "3",
          "--style-weight", "1", "--per-frame", "--strength", "0.5"], "clip-painting75+second25.mp4"),
    ):  # fmt: skip
        result = run_cli("video", clip, *arguments, "--style-size", "64", "--json")
        assert result.exit_code == 0, result.stderr
        record = json.loads(result.stdout)
        assert record["output"] == str(clip.parent / name) and record["frames"] == 6 and record["size"] == [64, 48]
        with av.open(str(clip.parent / name)) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        assert len(frames) == 6 and frames[0].shape == (48, 64, 3)


BAD_RUNS = {
    "a painting for a trained-style model": (["-m", "tiny", "--style-image", "{painting}"], "takes no painting"),
    "an arbitrary model without a painting": (["-m", "arbitrary"], "--style-image PAINTING"),
    "neither model nor painting": ([], "or a painting with --style-image"),
    "a missing painting": (["--style-image", "{missing}"], "no such file"),
    "weights that do not match": (
        ["--style-image", "{painting}", "--style-weight", "1", "--style-weight", "2"],
        "--style-weight",
    ),
    "a style for an arbitrary model": (["--style-image", "{painting}", "--style", "wave"], "--style picks"),
}


@needs_av
@pytest.mark.parametrize("case", sorted(BAD_RUNS))
def test_bad_choices_are_one_line_and_nothing_written(run_cli, shipped_arbitrary, random_vgg16, clip, tmp_path, case):
    arguments, message = BAD_RUNS[case]
    painting = stripes(tmp_path / "painting.png")
    filled = [part.format(painting=painting, missing=tmp_path / "nowhere.jpg") for part in arguments]
    result = run_cli("video", clip, *filled, "-o", tmp_path / "out/")
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@needs_av
def test_missing_vgg16_weights_are_one_line(run_cli, shipped_arbitrary, clip, tmp_path):
    result = run_cli("video", clip, "--style-image", stripes(tmp_path / "p.png"), "-o", tmp_path / "out.mp4")
    assert result.exit_code == 2 and "styler weights vgg16" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "out.mp4").exists()
