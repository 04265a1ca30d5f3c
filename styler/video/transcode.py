"""One video file in, one stylized video file out: decoded, stylized and encoded frame by frame, sound kept.

Decoding and encoding use PyAV (the [video] extra; its wheels bundle FFmpeg). Frames go through the network in
small batches (steadiness.FrameStylizer) and straight into the encoder: memory does not grow with the video's
length. The output is written to a temporary file and renamed when whole, so an interrupted or failed video leaves
nothing behind.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from styler import __version__
from styler.errors import StylerError
from styler.io.files import one_line, write_atomically
from styler.memory import is_out_of_memory
from styler.model.stylizer import Stylizer, target_size
from styler.video.options import VideoOptions
from styler.video.steadiness import FrameStylizer

# Output containers by file extension: (FFmpeg format, video codecs in order of preference, audio codec when the
# input's cannot be copied into it). H.264 in .mp4 plays everywhere.
CONTAINERS: dict[str, tuple[str, tuple[str, ...], str]] = {
    ".mp4": ("mp4", ("libx264", "h264", "mpeg4"), "aac"),
    ".m4v": ("mp4", ("libx264", "h264", "mpeg4"), "aac"),
    ".mov": ("mov", ("libx264", "h264", "mpeg4"), "aac"),
    ".mkv": ("matroska", ("libx264", "h264", "mpeg4"), "aac"),
    ".webm": ("webm", ("libvpx-vp9", "libvpx"), "libopus"),
    ".avi": ("avi", ("mpeg4",), "libmp3lame"),
}
DEFAULT_SUFFIX = ".mp4"
# x264's constant quality: 18 is close to visually lossless, so the encoder adds little to what the network made.
ENCODER_OPTIONS = {"libx264": {"crf": "18", "preset": "medium"}, "libvpx-vp9": {"crf": "24", "b": "0"}}


@dataclass
class VideoResult:
    input: str
    output: str | None = None
    frames: int = 0
    size: tuple[int, int] | None = None
    frame_rate: float | None = None
    audio: str | None = None  # "copied", "re-encoded (codec)" or None
    seconds: float = 0.0
    error: str | None = None

    def as_json(self) -> str:
        record = dict(self.__dict__, seconds=round(self.seconds, 3), styler_version=__version__)
        record["frames_per_second"] = round(self.frames / self.seconds, 3) if self.seconds else None
        return json.dumps(record)


def import_av() -> Any:
    try:
        import av
    except ImportError:
        raise StylerError(
            "styler video needs PyAV: pip install 'styler[video]' (or pip install av) in styler's environment"
        ) from None
    av.logging.set_level(av.logging.FATAL)  # FFmpeg's own warnings would break the one-line-per-problem rule
    return av


class VideoJob:
    """One input video through the network into one output file."""

    def __init__(self, av: Any, source: Path, suffix: str, stylizer: Stylizer, options: VideoOptions) -> None:
        self.av, self.source, self.stylizer, self.options = av, source, stylizer, options
        self.container = CONTAINERS[suffix]
        try:
            self.input = av.open(str(source), metadata_errors="ignore")
        except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
            raise StylerError(f"{source}: cannot be read as a video ({_reason(error)})") from None
        videos = self.input.streams.video
        if not videos:
            self.input.close()
            raise StylerError(f"{source}: has no video stream")
        self.video = videos[0]
        self.video.thread_type = "AUTO"
        self.audio = self.input.streams.audio[0] if self.input.streams.audio else None
        self.frame_rate = self.video.average_rate or self.video.guessed_rate or Fraction(25)
        self.frames_done = 0
        self.audio_mode: str | None = None
        try:
            self.quarter_turns, self.size = self._geometry()
        except StylerError:
            self.input.close()
            raise
        self.frames = FrameStylizer(stylizer, options)

    def expected_frames(self) -> int | None:
        """For the progress bar: the stream's frame count, or its duration times its rate; None when unknown."""
        duration = self.options.duration
        if duration is None and self.video.duration is not None and self.video.time_base:
            duration = float(self.video.duration * self.video.time_base) - self.options.start
        elif duration is None and self.input.duration:
            duration = self.input.duration / 1_000_000 - self.options.start
        if self.video.frames and not self.options.start and self.options.duration is None:
            return self.video.frames
        return max(0, round(duration * float(self.frame_rate))) if duration is not None else None

    def write(self, file: Any, progress: tqdm) -> None:
        """Decode, stylize and encode the whole video into the open binary file."""
        self.output = self.av.open(file, mode="w", format=self.container[0])
        try:
            self._run(progress)
        finally:
            self.output.close()

    def _run(self, progress: tqdm) -> None:
        av = self.av
        window = Window(self.options.start, self.options.duration)
        if window.start:
            self.input.seek(round(window.start / self.video.time_base), stream=self.video, backward=True)
        self._open_video_stream(*self.size)
        self.audio_path = AudioPath(self.audio, self.output, self.container[2], window) if self.audio else None
        pending: list[Any] = []
        streams = [self.video] + ([self.audio] if self.audio else [])
        try:
            for packet in self.input.demux(streams):
                if packet.stream is self.audio:
                    self.audio_path.add(packet)  # type: ignore[union-attr]
                    continue
                for frame in packet.decode():
                    if not window.holds(_seconds(frame.pts, frame.time_base, self.frames_done, self.frame_rate)):
                        continue
                    pending.append(frame)
                    if len(pending) == self.options.batch_size:
                        self._encode(pending, progress)
                        pending = []
        except av.FFmpegError as error:
            raise StylerError(f"{self.source}: unreadable video data ({_reason(error)})") from None
        if pending:
            self._encode(pending, progress)
        if not self.frames_done:
            start, duration, frame = window.start, window.duration, 1 / float(self.frame_rate)
            where = "" if duration is None else f" between {start:g} s and {start + duration:g} s"
            where = where or (f" after {start:g} s" if start else "")
            short = (
                f"; --duration {duration:g} s is shorter than a frame ({frame:.3g} s)"
                if duration and duration < frame
                else ""
            )
            raise StylerError(f"{self.source}: no video frames{where}{short}")
        for packet in self.out_video.encode(None):
            self.output.mux(packet)
        if self.audio_path:
            self.audio_path.finish()
            self.audio_mode = self.audio_path.mode

    def _open_video_stream(self, width: int, height: int) -> None:
        codec = next((name for name in self.container[1] if name in self.av.codecs_available), None)
        if codec is None:
            raise StylerError(f"this FFmpeg has no encoder for {self.container[0]} ({', '.join(self.container[1])})")
        stream = self.output.add_stream(codec, rate=self.frame_rate, options=ENCODER_OPTIONS.get(codec, {}))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = self.video.time_base
        stream.codec_context.time_base = self.video.time_base
        self.out_video: Any = stream

    def _encode(self, frames: list[Any], progress: tqdm) -> None:
        try:
            shown = self.frames(np.stack([self._frame_array(frame) for frame in frames]))
        except (MemoryError, RuntimeError) as error:
            if not is_out_of_memory(error):
                raise
            width, height = self.size
            raise StylerError(
                f"{self.source}: not enough memory for {len(frames)} frame(s) of {width}x{height}; "
                "try --max-size or --batch-size 1"
            ) from None
        origin = round(self.options.start / self.video.time_base)
        for index, (frame, pixels) in enumerate(zip(frames, shown, strict=True)):
            out = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
            if frame.pts is not None:
                out.pts = frame.pts - origin
            else:  # no timestamps: one frame period each
                out.pts = round((self.frames_done + index) / self.frame_rate / self.video.time_base)
            out.time_base = self.video.time_base
            for packet in self.out_video.encode(out):
                self.output.mux(packet)
        self.frames_done += len(frames)
        progress.update(len(frames))

    def _geometry(self) -> tuple[int, tuple[int, int]]:
        """The quarter turns that make frames upright (the stream's rotation) and the upright output size, from the
        first frame: the output's streams must all exist before its first packet, so the size is needed first."""
        try:
            with self.av.open(str(self.source), metadata_errors="ignore") as probe:
                frame = next(probe.decode(video=0), None)
        except self.av.FFmpegError as error:
            raise StylerError(f"{self.source}: unreadable video data ({_reason(error)})") from None
        if frame is None:
            raise StylerError(f"{self.source}: no video frames")
        quarter_turns = round(getattr(frame, "rotation", 0) / 90) % 4
        upright = (frame.width, frame.height) if quarter_turns % 2 == 0 else (frame.height, frame.width)
        width, height = target_size(upright, None, self.options.max_size)
        return quarter_turns, (max(2, width - width % 2), max(2, height - height % 2))  # yuv420p: even sides

    def _frame_array(self, frame: Any) -> np.ndarray:
        """(H, W, 3) uint8 RGB, upright, at the output size."""
        width, height = self.size if self.quarter_turns % 2 == 0 else self.size[::-1]
        pixels = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")
        return np.rot90(pixels, self.quarter_turns) if self.quarter_turns else pixels


@dataclass(frozen=True)
class Window:
    """--start and --duration: the part of the input that is stylized, in seconds."""

    start: float
    duration: float | None

    def holds(self, time: float) -> bool:
        # Without --start everything before the end counts, also AAC's priming packet at a negative time.
        after_start = not self.start or time >= self.start - 1e-6
        return after_start and (self.duration is None or time < self.start + self.duration - 1e-6)


class AudioPath:
    """The input's audio into the output: packets copied as they are when the container takes the codec, else
    decoded and encoded again; trimmed to [start, end) and shifted by start like the video."""

    def __init__(self, stream: Any, output: Any, fallback_codec: str, window: Window):
        self.input, self.output, self.window = stream, output, window
        name = stream.codec_context.name
        if name in output.supported_codecs:
            self.stream = output.add_stream_from_template(stream)
            self.mode, self.encoder = "copied", None
        else:
            self.stream = output.add_stream(fallback_codec, rate=stream.codec_context.sample_rate or 48000)
            self.mode, self.encoder = f"re-encoded ({name} to {fallback_codec})", self.stream

    def add(self, packet: Any) -> None:
        if packet.pts is None:
            if self.encoder is not None:  # the decoder's flush packet: its last frames
                for frame in packet.decode():
                    self._encode_frame(frame)
            return
        if not self.window.holds(float(packet.pts * packet.time_base)):
            return
        if self.encoder is None:
            shift = round(self.window.start / packet.time_base)
            packet.pts -= shift
            if packet.dts is not None:
                packet.dts -= shift
            packet.stream = self.stream
            self.output.mux(packet)
            return
        for frame in packet.decode():
            self._encode_frame(frame)

    def _encode_frame(self, frame: Any) -> None:
        if frame.pts is not None:
            frame.pts -= round(self.window.start / frame.time_base)
        for packet in self.encoder.encode(frame):  # type: ignore[union-attr]
            self.output.mux(packet)

    def finish(self) -> None:
        if self.encoder is not None:
            for packet in self.encoder.encode(None):
                self.output.mux(packet)


def _seconds(pts: int | None, time_base: Fraction | None, index: int, rate: Fraction) -> float:
    if pts is None or time_base is None:
        return index / float(rate)
    return float(pts * time_base)


def _reason(error: BaseException) -> str:
    return one_line(getattr(error, "strerror", None) or error, 160)


def stylize_one(av: Any, source: Path, target: Path, stylizer: Stylizer, options: VideoOptions) -> VideoResult:
    started = time.perf_counter()
    result = VideoResult(str(source))
    job = VideoJob(av, source, target.suffix.lower(), stylizer, options)
    try:
        with tqdm(
            total=job.expected_frames(), unit="frame", desc=source.name[:30], file=sys.stderr, disable=None
        ) as progress:
            write_atomically(target, lambda file: job.write(file, progress), overwrite=options.overwrite)
    finally:
        job.input.close()
    result.output, result.frames, result.size = str(target), job.frames_done, job.size
    result.frame_rate, result.audio = float(job.frame_rate), job.audio_mode
    result.seconds = time.perf_counter() - started
    return result
