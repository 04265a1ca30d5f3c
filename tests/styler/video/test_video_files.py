"""styler video on the files real cameras and tools make (issue 26): odd audio, clocks that do not start at 0,
colour and pixel-aspect tags, AVI's frame slots, damaged data, names FFmpeg would misread, and batches. Each clip
is made here with PyAV: a few frames of 32x32 (or so)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from helpers import REPOSITORY
from PIL import Image

pytestmark = pytest.mark.skipif(importlib.util.find_spec("av") is None, reason="styler video needs PyAV")

GREEN = (0, 255, 0)


def make_clip(
    path: Path,
    frames: int = 4,
    size: tuple[int, int] = (32, 32),
    fps: int = 12,
    audio: tuple[str, int, str] | None = None,  # (encoder, sample rate, layout)
    first_second: float = 0.0,
    colour: dict | None = None,  # codec context attributes: colorspace, color_range, color_primaries, color_trc
    aspect: Fraction | None = None,
    fill: tuple[int, int, int] | None = None,
    container_format: str | None = None,
) -> Path:
    """A small H.264 clip (a gradient moving a step per frame, or `fill`), optionally with a tone."""
    import av

    width, height = size
    with av.open(str(path), mode="w", format=container_format) as container:
        video = container.add_stream("libx264", rate=fps, options={"crf": "10"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        context = video.codec_context
        for name, value in (colour or {}).items():
            setattr(context, name, value)
        if aspect:
            context.sample_aspect_ratio = aspect
        sound = container.add_stream(audio[0], rate=audio[1], layout=audio[2]) if audio else None
        start = round(first_second * fps)
        ramp = np.linspace(0, 255, width, dtype=np.float32)
        for index in range(frames):
            if fill is not None:
                pixels = np.full((height, width, 3), fill, np.uint8)
            else:
                pixels = np.stack([np.roll(ramp, 2 * index)[None].repeat(height, 0)] * 3, axis=-1).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            if colour:
                matrix = {1: "ITU709", 6: "SMPTE170M", 9: "BT2020"}[colour.get("colorspace", 6)]
                frame = frame.reformat(format="yuv420p", dst_colorspace=matrix, dst_color_range=1)
            frame.pts, frame.time_base = start + index, Fraction(1, fps)
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if sound is not None:
            rate = audio[1]
            context = sound.codec_context
            sample_format = context.format.name
            channels = context.layout.nb_channels
            count = round(rate * frames / fps)
            step = context.frame_size or 1024
            for offset in range(0, count, step):
                length = min(step, count - offset)
                tone = (0.2 * np.sin(2 * np.pi * 440 * (offset + np.arange(length)) / rate)).astype(np.float32)
                if sample_format.startswith("s16"):
                    tone = (tone * 32767).astype(np.int16)
                elif sample_format.startswith("s32"):
                    tone = (tone * 2**31).astype(np.int32)
                planar = context.format.is_planar
                data = np.stack([tone] * channels) if planar else np.repeat(tone, channels)[None]
                chunk = av.AudioFrame.from_ndarray(data, format=sample_format, layout=context.layout.name)
                chunk.sample_rate, chunk.time_base = rate, Fraction(1, rate)
                chunk.pts = round(first_second * rate) + offset
                for packet in sound.encode(chunk):
                    container.mux(packet)
            for packet in sound.encode(None):
                container.mux(packet)
    return path


def facts(path: Path) -> dict:
    """What a player sees of a file: stream facts, frame times, first audio time."""
    import av

    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        context = video.codec_context
        record = {
            "rate": video.average_rate,
            "time_base": video.time_base,
            "aspect": video.sample_aspect_ratio,
            "colour": (context.colorspace, context.color_range, context.color_primaries, context.color_trc),
            "audio": None if audio is None else (audio.codec_context.name, audio.codec_context.sample_rate),
        }
        frames = list(container.decode(video=0))
        record["times"] = [float(frame.pts * frame.time_base) for frame in frames]
        record["frames"] = frames
    return record


def run(run_cli, *arguments):
    result = run_cli("video", *arguments, "-m", "starry-lite", "--json")
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result, records


# ------------------------------------------------------------------------------------------------- audio (1, 6)


@pytest.mark.parametrize(
    ("audio", "container", "suffix", "mode", "codec", "rate"),
    [
        (("pcm_s16le", 48000, "stereo"), "matroska", ".mp4", "copied", "pcm_s16le", 48000),  # no channel mask
        (("aac", 44100, "stereo"), None, ".webm", "re-encoded (aac to libopus)", "opus", 48000),
        (("aac", 22050, "mono"), None, ".webm", "re-encoded (aac to libopus)", "opus", 48000),  # Opus decodes at 48k
        (("libopus", 48000, "stereo"), "matroska", ".mov", "re-encoded (opus to aac)", "aac", 48000),
        (("flac", 96000, "stereo"), "matroska", ".mov", "re-encoded (flac to aac)", "aac", 96000),
    ],
)
def test_audio_the_container_refuses_is_made_fit(run_cli, tmp_path, audio, container, suffix, mode, codec, rate):
    source = make_clip(tmp_path / ("in.mkv" if container else "in.mp4"), audio=audio, container_format=container)
    out = tmp_path / f"out{suffix}"
    result, records = run(run_cli, source, "-o", out)
    assert result.exit_code == 0, result.stderr
    assert records[0]["audio"] == mode
    assert facts(out)["audio"] == (codec, rate)


def test_an_error_while_closing_never_replaces_the_first(run_cli, tmp_path, monkeypatch):
    from styler.video import transcode

    class FailingClose:
        def __init__(self, container):
            self.container = container

        def __getattr__(self, name):
            return getattr(self.container, name)

        def close(self):
            raise RuntimeError("close failed too")

    start = transcode.VideoJob._start_output

    def start_then_fail(self, file):
        start(self, file)
        self.output = FailingClose(self.output)
        raise transcode.StylerError("the first error")

    monkeypatch.setattr(transcode.VideoJob, "_start_output", start_then_fail)
    result, _ = run(run_cli, make_clip(tmp_path / "in.mp4"), "-o", tmp_path / "out.mp4")
    assert result.exit_code == 2 and "the first error" in result.stderr
    assert not (tmp_path / "out.mp4").exists() and not list(tmp_path.glob(".*.tmp"))


# ---------------------------------------------------------------------------------------------------- hangs (4)


def test_ffmpeg_never_logs_through_python():
    """PyAV's Python log callback takes the GIL on FFmpeg's threads, which deadlocked error paths (issue 26 #4)."""
    import av

    from styler.video.transcode import import_av

    av.logging.set_level(av.logging.ERROR)
    import_av()
    assert av.logging.get_level() is None


def test_failing_videos_in_a_loop_never_hang(tmp_path):
    """Errors on FFmpeg's decoding threads, twenty times in one process: every run ends with its one line."""
    source = make_clip(tmp_path / "in.mp4", frames=8, size=(64, 48))
    data = bytearray(source.read_bytes())
    middle = data.find(b"mdat") + 200
    data[middle : middle + 400] = bytes(400)
    source.write_bytes(data)
    script = f"""
import sys
from styler.cli import app
for attempt in range(20):
    try:
        app(["video", {str(source)!r}, "-m", "starry-lite", "-o", {str(tmp_path / "out.webm")!r}, "--overwrite",
             "--start", "5"])
    except SystemExit as exit:
        assert exit.code == 2, exit.code
print("done")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240, cwd=REPOSITORY)
    assert result.stdout.strip() == "done", result.stderr[-2000:]
    assert result.stderr.count("styler: error:") == 20


def test_sigterm_during_cleanup_ends_the_process():
    """The first SIGTERM unwinds like Ctrl-C; a second one, while that cleanup runs, ends the process outright."""
    import signal

    from styler.cli import Terminated, _raise_terminated

    previous = signal.signal(signal.SIGTERM, _raise_terminated)  # as the CLI installs it
    try:
        with pytest.raises(Terminated):
            _raise_terminated(signal.SIGTERM, None)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------------------------------- timing (3, 7, 12, 14)


def test_a_start_past_any_end_is_one_line(run_cli, tmp_path):
    source = make_clip(tmp_path / "in.mp4")
    for start in ("1e20", "1e300", "10"):
        result, _ = run(run_cli, source, "-o", tmp_path / "out.mp4", "--start", start)
        assert result.exit_code == 2 and "past the end of the video" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_start_and_duration_count_from_the_files_own_start(run_cli, tmp_path):
    """A transport stream whose clock starts at 10 s (a camcorder's .MTS): --start 1 is 11 s, output starts at 0."""
    source = make_clip(tmp_path / "in.ts", frames=36, fps=12, first_second=10, audio=("aac", 48000, "mono"))
    out = tmp_path / "out.mp4"
    result, records = run(run_cli, source, "-o", out, "--start", "1", "--duration", "1")
    assert result.exit_code == 0, result.stderr
    assert records[0]["frames"] == 12
    seen = facts(out)
    assert seen["times"][0] == pytest.approx(0, abs=1e-3) and len(seen["times"]) == 12
    whole, _ = run(run_cli, source, "-o", tmp_path / "whole.mp4")
    assert whole.exit_code == 0 and facts(tmp_path / "whole.mp4")["times"][0] == pytest.approx(0, abs=1e-3)


def test_a_start_between_frames_shows_the_frame_of_that_moment_at_0(run_cli, tmp_path):
    source = make_clip(tmp_path / "in.mp4", frames=8, fps=12)
    out = tmp_path / "out.mp4"
    result, records = run(run_cli, source, "-o", out, "--start", "0.3")  # between 0.25 and 0.333
    assert result.exit_code == 0, result.stderr
    seen = facts(out)
    assert seen["times"][0] == pytest.approx(0, abs=1e-3) and len(seen["times"]) == 5  # 0.25 (shown at 0.3), 0.333...
    assert seen["times"][1] == pytest.approx(1 / 3 - 0.3, abs=0.01)  # the rest keep their times


def test_mkv_output_of_mp4_with_aac_starts_the_picture_at_0(run_cli, tmp_path):
    source = make_clip(tmp_path / "in.mp4", audio=("aac", 48000, "mono"))
    out = tmp_path / "out.mkv"
    result, _ = run(run_cli, source, "-o", out)
    assert result.exit_code == 0, result.stderr
    assert facts(out)["times"][0] == pytest.approx(0, abs=1e-3)


def test_avi_declares_the_real_frame_rate(run_cli, tmp_path):
    source = make_clip(tmp_path / "in.mkv", frames=6, fps=12, container_format="matroska")  # time base 1/1000
    out = tmp_path / "out.avi"
    result, _ = run(run_cli, source, "-o", out)
    assert result.exit_code == 0, result.stderr
    seen = facts(out)
    assert seen["rate"] == 12 and seen["time_base"] == Fraction(1, 12) and len(seen["times"]) == 6


# -------------------------------------------------------------------------------------- colour, aspect (10, 11)


def test_colour_tags_are_carried_over_and_hd_uses_bt709(run_cli, tmp_path):
    tags = {"colorspace": 1, "color_range": 1, "color_primaries": 1, "color_trc": 1}  # BT.709, limited range
    source = make_clip(tmp_path / "in.mp4", frames=2, colour=tags, fill=GREEN)
    out = tmp_path / "out.mp4"
    result, _ = run(run_cli, source, "-o", out, "--strength", "0")
    assert result.exit_code == 0, result.stderr
    seen = facts(out)
    assert seen["colour"] == (1, 1, 1, 1)
    green = seen["frames"][0].to_ndarray(format="rgb24", src_colorspace="ITU709").reshape(-1, 3).mean(0)
    assert green[1] > 240 and green[0] < 15 and green[2] < 15, green


def test_untagged_hd_is_read_and_written_as_bt709(run_cli, tmp_path):
    import av

    source = tmp_path / "hd.mp4"
    with av.open(str(source), "w") as container:  # HD, untagged, its YUV made with the BT.709 matrix
        video = container.add_stream("libx264", rate=12, options={"crf": "10"})
        video.width, video.height, video.pix_fmt = 1280, 720, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.full((720, 1280, 3), GREEN, np.uint8), format="rgb24")
        frame = frame.reformat(format="yuv420p", dst_colorspace="ITU709")
        frame.colorspace = 2  # unspecified
        for packet in [*video.encode(frame), *video.encode(None)]:
            container.mux(packet)
    out = tmp_path / "out.mp4"
    result, _ = run(run_cli, source, "-o", out, "--strength", "0", "--max-size", "64")
    assert result.exit_code == 0, result.stderr
    seen = facts(out)
    assert seen["colour"][0] == 1  # tagged BT.709
    green = seen["frames"][0].to_ndarray(format="rgb24", src_colorspace="ITU709").reshape(-1, 3).mean(0)
    assert green[1] > 240 and green[0] < 15 and green[2] < 15, green


def test_the_pixel_aspect_ratio_is_kept(run_cli, tmp_path):
    source = make_clip(tmp_path / "in.mp4", frames=2, size=(32, 24), aspect=Fraction(4, 3))
    out = tmp_path / "out.mp4"
    result, _ = run(run_cli, source, "-o", out)
    assert result.exit_code == 0, result.stderr
    assert facts(out)["aspect"] == Fraction(4, 3)


# ------------------------------------------------------------------------------------------ inputs (13, 15, 17)


@pytest.mark.parametrize("name", ["pipe:0.mp4", "file:clip.mp4"])
def test_a_name_that_looks_like_a_protocol_is_that_file(run_cli, tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    make_clip(tmp_path / name, frames=3)
    result, records = run(run_cli, name, "-o", "out.mp4")
    assert result.exit_code == 0, result.stderr
    assert records[0]["frames"] == 3


def test_an_image_renamed_mp4_is_named_as_an_image(run_cli, tmp_path):
    source = tmp_path / "photo.mp4"
    Image.new("RGB", (32, 32), "red").save(source, format="JPEG")
    result, _ = run(run_cli, source)
    assert result.exit_code == 2 and "is a JPEG image, not a video" in result.stderr
    assert "styler stylize" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_damaged_bytes_in_the_middle_are_concealed(run_cli, tmp_path):
    source = make_clip(tmp_path / "in.mp4", frames=12, size=(64, 48))
    data = bytearray(source.read_bytes())
    middle = data.find(b"mdat") + (len(data) - data.find(b"mdat")) // 2
    data[middle : middle + 64] = bytes(range(64))
    source.write_bytes(data)
    out = tmp_path / "out.mp4"
    result, records = run(run_cli, source, "-o", out)
    assert result.exit_code == 0, result.stderr
    assert records[0]["frames"] >= 10 and len(facts(out)["times"]) == records[0]["frames"]


# ----------------------------------------------------------------------------------------------- batches (8, 9)


def test_a_batch_run_again_skips_its_own_outputs(run_cli, tmp_path):
    make_clip(tmp_path / "a.mp4", frames=2)
    first, _ = run(run_cli, tmp_path / "a.mp4")
    assert first.exit_code == 0, first.stderr
    make_clip(tmp_path / "b.mp4", frames=2)
    clips = sorted(tmp_path.glob("*.mp4"))  # what the shell gives for *.mp4: a, a-starry-lite, b
    again, records = run(run_cli, *clips, "--overwrite")
    assert again.exit_code == 0, again.stderr
    assert {Path(r["input"]).name: r["skipped"] for r in records} == {
        "a.mp4": False,
        "b.mp4": False,
        "a-starry-lite.mp4": True,
    }
    renamed = tmp_path / "holiday.mp4"  # the mark, whatever the name
    (tmp_path / "b-starry-lite.mp4").rename(renamed)
    marked, records = run(run_cli, tmp_path / "a.mp4", renamed, "--overwrite")
    assert marked.exit_code == 0 and [r["skipped"] for r in records if r["input"] == str(renamed)] == [True]


def test_a_batch_refuses_per_file_and_writes_the_others(run_cli, tmp_path):
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        make_clip(tmp_path / name, frames=2)
    (tmp_path / "b-starry-lite.mp4").write_bytes(b"an earlier output")
    result, records = run(run_cli, tmp_path / "a.mp4", tmp_path / "b.mp4", tmp_path / "gone.mp4", tmp_path / "c.mp4",
                          tmp_path / "." / "a.mp4")  # fmt: skip
    assert result.exit_code == 2
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 2 and "b-starry-lite.mp4: exists" in errors[0] and "gone.mp4: no such file" in errors[1]
    assert [Path(r["input"]).name for r in records] == ["a.mp4", "b.mp4", "gone.mp4", "c.mp4"]  # a.mp4 once
    assert (tmp_path / "a-starry-lite.mp4").exists() and (tmp_path / "c-starry-lite.mp4").exists()
    assert (tmp_path / "b-starry-lite.mp4").read_bytes() == b"an earlier output"


def test_a_container_that_refuses_the_streams_is_named_not_the_input(run_cli, tmp_path, monkeypatch):
    from styler.video import transcode

    def refuses(*arguments):
        raise ValueError("no such stream here")

    monkeypatch.setattr(transcode, "AudioPath", refuses)
    result, _ = run(run_cli, make_clip(tmp_path / "in.mp4", audio=("aac", 48000, "mono")), "-o", tmp_path / "o.webm")
    assert result.exit_code == 2
    assert f"{tmp_path / 'o.webm'}: the webm container refuses this video with aac audio" in result.stderr
    assert "unreadable" not in result.stderr and not list(tmp_path.glob("o.webm*"))
