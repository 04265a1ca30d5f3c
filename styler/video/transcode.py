"""One video file in, one stylized video file out: decoded, stylized and encoded frame by frame, sound kept.

Decoding and encoding use PyAV (the [video] extra; its wheels bundle FFmpeg). Frames go through the network in
small batches (steadiness.FrameStylizer) and straight into the encoder: memory does not grow with the video's
length. The output is written to a temporary file and renamed when whole, so an interrupted or failed video leaves
nothing behind. What the output keeps of the input (timing, colour description, pixel aspect, sound) is listed in
docs/video.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from styler import __version__
from styler.errors import StylerError
from styler.io.files import one_line, write_atomically
from styler.io.images import MARK
from styler.memory import is_out_of_memory
from styler.model.stylizer import ImageStylizer, target_size
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


# FFmpeg's demuxers for single pictures: image2 and the "<codec>_pipe" ones. A photo renamed .mp4 opens with them as
# a one-frame video.
IMAGE_DEMUXER = "image2"
IMAGE_KINDS = {"mjpeg": "JPEG", "png": "PNG", "webp": "WebP", "bmp": "BMP", "tiff": "TIFF", "gif": "GIF"}
AVFMT_TS_NEGATIVE = 0x40000  # the container can hold timestamps below 0 (MP4/MOV edit lists; not Matroska, AVI)

# Colour: FFmpeg's YUV matrix codes (AVColorSpace) and the names PyAV's scaler knows them by.
MATRICES = {1: "ITU709", 4: "FCC", 5: "ITU601", 6: "SMPTE170M", 7: "SMPTE240M", 9: "BT2020", 10: "BT2020"}
BT709, SMPTE170M, UNSPECIFIED = 1, 6, 2
LIMITED, FULL = 1, 2  # AVColorRange: TV (16-235) and PC (0-255) levels
RESERVED = frozenset({0, 3})  # primaries and transfer codes that mean nothing


@dataclass(frozen=True)
class Colour:
    """How the video's YUV pixels encode colour: the matrix and range they are read and written with, and the
    primaries and transfer curve passed on as tags (UNSPECIFIED where the input does not say). The network sees RGB;
    the output is encoded back with the input's matrix and range and tagged with all four."""

    matrix: int
    range: int
    primaries: int
    transfer: int

    @classmethod
    def of(cls, frame: Any) -> Colour:
        matrix = frame.colorspace
        if matrix not in MATRICES:  # untagged (or RGB): what players assume, BT.709 for HD and BT.601 below it
            matrix = BT709 if frame.width >= 1280 or frame.height > 576 else SMPTE170M
        color_range = frame.color_range if frame.color_range in (LIMITED, FULL) else LIMITED
        primaries, transfer = (
            UNSPECIFIED if code in RESERVED else code for code in (frame.color_primaries, frame.color_trc)
        )
        return cls(matrix, color_range, primaries, transfer)

    def tag(self, target: Any) -> None:
        """Describe a frame or an encoder's output with this colour."""
        target.colorspace, target.color_range = self.matrix, self.range
        target.color_primaries, target.color_trc = self.primaries, self.transfer


@dataclass
class VideoResult:
    input: str
    output: str | None = None
    frames: int = 0
    size: tuple[int, int] | None = None
    frame_rate: float | None = None
    audio: str | None = None  # "copied", "re-encoded (codec)" or None
    damaged_packets: int = 0  # video packets the decoder could not read, skipped (FFmpeg conceals the gap)
    seconds: float = 0.0
    error: str | None = None
    skipped: bool = False  # an input that is styler's own output

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
    # No log callback into Python: PyAV's (installed by any set_level but None) takes the GIL from FFmpeg's own
    # threads while they hold FFmpeg's locks, and deadlocked against the main thread, which holds the GIL while it
    # waits for those threads (one run in ten, on an error path). FFmpeg's messages would also break the
    # one-line-per-problem rule; None is FFmpeg's silence, without Python.
    av.logging.set_level(None)
    return av


def open_video(av: Any, source: Path) -> Any:
    """`source` opened for reading, exactly that file: FFmpeg reads a name that starts with a protocol ("pipe:0.mp4",
    "file:x.mp4", "http:...") as that protocol, and takes the "file:" put in front as the file protocol's own."""
    try:
        return av.open("file:" + os.fspath(source), metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise StylerError(f"{source}: cannot be read as a video ({_reason(error)})") from None


def is_styler_output(av: Any, source: Path) -> bool:
    """Whether the video carries the mark styler writes into its outputs' metadata."""
    try:
        with open_video(av, source) as container:
            return str(container.metadata.get("comment", "")).startswith("styler")
    except StylerError:
        return False


def _close_quietly(container: Any) -> None:
    """Close after a failure: closing a half-written output fails too, and that error must not replace the first."""
    with contextlib.suppress(Exception):
        container.close()


@dataclass(frozen=True)
class Window:
    """--start and --duration as the part of the file that is stylized, in its timestamps' seconds: counted from the
    file's first picture (at 10 s, --start 1 is 11 s). Output time 0 is `start`."""

    start: float
    end: float | None
    cut: bool  # --start was given: before it, nothing (without it, also AAC's priming packet, before the picture)

    @classmethod
    def of(cls, origin: float, options: VideoOptions) -> Window:
        start = origin + options.start
        return cls(start, None if options.duration is None else start + options.duration, options.start > 0)

    def holds(self, time: float) -> bool:
        after_start = not self.cut or time >= self.start - 1e-6
        return after_start and (self.end is None or time < self.end - 1e-6)


class VideoJob:
    """One input video through the network into one output file."""

    def __init__(self, av: Any, source: Path, target: Path, stylizer: ImageStylizer, options: VideoOptions) -> None:
        self.av, self.source, self.target, self.stylizer, self.options = av, source, target, stylizer, options
        self.container = CONTAINERS[target.suffix.lower()]
        self.input = open_video(av, source)
        try:
            self._look_at_input()
        except BaseException:
            self.input.close()
            raise
        self.frames = FrameStylizer(stylizer, options)
        self.frames_done = self.damaged = 0
        self.audio_mode: str | None = None

    def _look_at_input(self) -> None:
        videos = self.input.streams.video
        if not videos:
            raise StylerError(f"{self.source}: has no video stream")
        self.video = videos[0]
        if self.input.format.name == IMAGE_DEMUXER or self.input.format.name.endswith("_pipe"):
            codec = self.video.codec_context.name
            raise StylerError(
                f"{self.source}: is a {IMAGE_KINDS.get(codec, codec.upper())} image, not a video; "
                "stylize images with `styler stylize`"
            )
        self.video.thread_type = "AUTO"
        self.audio: Any = self.input.streams.audio[0] if self.input.streams.audio else None
        self.frame_rate = self.video.average_rate or self.video.guessed_rate or Fraction(25)
        # The file's own time 0, its first picture: a camcorder's .MTS or a stream segment starts its clock at 10 s.
        if self.video.start_time is not None:
            self.origin = float(self.video.start_time * self.video.time_base)
        else:
            self.origin = self.input.start_time / 1_000_000 if self.input.start_time is not None else 0.0
        self.window = Window.of(self.origin, self.options)
        self.quarter_turns, self.size, self.colour, self.pixel_aspect = self._geometry()

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
        self._start_output(file)
        try:
            self._run(progress)
        except BaseException:
            _close_quietly(self.output)
            raise
        with self._writing():
            self.output.close()

    def _start_output(self, file: Any) -> None:
        """Open the output and write its header: with the audio copied where the container takes it, else (a codec,
        a channel layout or a sample rate it refuses, which some containers tell only at the header) encoded again."""
        for copy_audio in (True, False) if self.audio is not None else (False,):
            file.seek(0)
            file.truncate()
            self.output = self.av.open(file, mode="w", format=self.container[0])
            try:
                if copy_audio and self.audio.codec_context.name not in self.output.supported_codecs:
                    raise ValueError(f"{self.container[0]} takes no {self.audio.codec_context.name}")
                self.output.metadata["comment"] = MARK  # a later batch over the same folder skips this file
                self._open_video_stream(*self.size)
                self.audio_path = (
                    AudioPath(self.audio, self.output, self.window, self.container[2], copy_audio)
                    if self.audio is not None
                    else None
                )
                self.output.start_encoding()
                return
            except (self.av.FFmpegError, ValueError) as error:
                _close_quietly(self.output)
                if copy_audio:
                    continue
                audio = f" with {self.audio.codec_context.name} audio" if self.audio is not None else ""
                raise StylerError(
                    f"{self.target}: the {self.container[0]} container refuses this video{audio} ({_reason(error)})"
                ) from None
            except BaseException:
                _close_quietly(self.output)
                raise

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """FFmpeg's errors while encoding and writing: a problem of the output, not of the input's data."""
        try:
            yield
        except self.av.FFmpegError as error:
            raise StylerError(
                f"{self.target}: cannot write the {self.container[0]} output ({_reason(error)})"
            ) from None

    def _run(self, progress: tqdm) -> None:
        av, window = self.av, self.window
        if window.cut:
            length = self.input.duration / 1_000_000 if self.input.duration else None
            if length is not None and self.options.start >= length:
                raise StylerError(
                    f"{self.source}: --start {self.options.start:g} is past the end of the video ({length:g} s long)"
                )
            self._seek()
        pending: list[tuple[Any, float]] = []
        streams = [self.video] + ([self.audio] if self.audio else [])
        self.held: tuple[Any, float] | None = None
        self.decoded = 0
        self.last_pts = -1
        try:
            for packet in self.input.demux(streams):
                if packet.stream is self.audio:
                    with self._writing():
                        self.audio_path.add(packet)  # type: ignore[union-attr]
                    continue
                for frame, at in self._window_frames(packet):
                    pending.append((frame, at))
                    if len(pending) == self.options.batch_size:
                        self._encode(pending, progress)
                        pending = []
        except av.FFmpegError as error:
            raise StylerError(f"{self.source}: unreadable video data ({_reason(error)})") from None
        if self.held is not None:  # the window starts after the last frame: it is what shows
            pending.append((self.held[0], window.start))
        if pending:
            self._encode(pending, progress)
        if not self.frames_done:
            # A window shorter than a frame still gets the frame showing at its start, and one past the end is
            # refused before decoding: only a file without a decodable picture in the window gets here.
            start, duration = self.options.start, self.options.duration
            where = "" if duration is None else f" between {start:g} s and {start + duration:g} s"
            where = where or (f" after {start:g} s" if window.cut else "")
            damaged = f" ({self.damaged} damaged packets)" if self.damaged else ""
            raise StylerError(f"{self.source}: no video frames{where}{damaged}")
        with self._writing():
            for packet in self.out_video.encode(None):
                self.output.mux(packet)
            if self.audio_path is not None:
                self.audio_path.finish()
                self.audio_mode = self.audio_path.mode

    def _seek(self) -> None:
        """Seek to the window's start where that lands on a frame at or before it, tried on a second opening of the
        file first: a transport stream with few keyframes can land after it, or nowhere. Otherwise (also for a
        --start beyond FFmpeg's 64-bit timestamps) the input is decoded from its beginning and the window picks."""
        target = round(self.window.start / self.video.time_base)
        with contextlib.suppress(OverflowError, self.av.FFmpegError), open_video(self.av, self.source) as probe:
            stream = probe.streams.video[0]
            probe.seek(target, stream=stream, backward=True)
            frame = next(probe.decode(stream), None)
            if frame is not None and frame.pts is not None and frame.pts <= target:
                self.input.seek(target, stream=self.video, backward=True)

    def _window_frames(self, packet: Any) -> Iterator[tuple[Any, float]]:
        """The packet's frames in the window, with their times. The first frame out is the one showing at the window's
        start (the last one before it, when --start falls between frames), so the picture starts at 0."""
        try:
            frames = packet.decode()
        except self.av.FFmpegError:  # damaged data: the decoder conceals it from the next packets, as players do
            self.damaged += 1
            return
        for frame in frames:
            at = _seconds(frame.pts, frame.time_base, self.decoded, self.frame_rate, self.origin)
            self.decoded += 1
            if self.window.cut and at < self.window.start - 1e-6:
                self.held = (frame, self.window.start)
                continue
            if not self.window.holds(at):
                continue
            if self.held is not None and at > self.window.start + 1e-6:
                yield self.held
            self.held = None
            yield frame, at

    def _open_video_stream(self, width: int, height: int) -> None:
        codec = next((name for name in self.container[1] if name in self.av.codecs_available), None)
        if codec is None:
            raise StylerError(f"this FFmpeg has no encoder for {self.container[0]} ({', '.join(self.container[1])})")
        stream = self.output.add_stream(codec, rate=self.frame_rate, options=ENCODER_OPTIONS.get(codec, {}))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # AVI has no timestamps, only frame slots of 1/time base: there the time base must be the frame rate (the
        # input's, 1/1000 say, declared 1000 fps with empty slots). Elsewhere the input's keeps a variable rate.
        time_base = 1 / Fraction(self.frame_rate) if self.container[0] == "avi" else self.video.time_base
        stream.time_base = stream.codec_context.time_base = time_base
        if self.pixel_aspect:
            stream.codec_context.sample_aspect_ratio = self.pixel_aspect
        self.colour.tag(stream.codec_context)
        self.out_video: Any = stream

    def _encode(self, frames: list[tuple[Any, float]], progress: tqdm) -> None:
        try:
            shown = self.frames(np.stack([self._frame_array(frame) for frame, _ in frames]))
        except (MemoryError, RuntimeError) as error:
            if not is_out_of_memory(error):
                raise
            width, height = self.size
            raise StylerError(
                f"{self.source}: not enough memory for {len(frames)} frame(s) of {width}x{height}; "
                "try --max-size or --batch-size 1"
            ) from None
        time_base = self.out_video.time_base
        for (_, at), pixels in zip(frames, shown, strict=True):
            rgb = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
            out = rgb.reformat(
                format="yuv420p", dst_colorspace=MATRICES[self.colour.matrix], dst_color_range=self.colour.range
            )
            self.colour.tag(out)
            # Output time 0 is the window's start; each frame after the one before (AVI's slots, rounding).
            out.pts = self.last_pts = max(round((at - self.window.start) / time_base), self.last_pts + 1)
            out.time_base = time_base
            with self._writing():
                for packet in self.out_video.encode(out):
                    self.output.mux(packet)
        self.frames_done += len(frames)
        progress.update(len(frames))

    def _geometry(self) -> tuple[int, tuple[int, int], Colour, Fraction | None]:
        """From the first frame: the quarter turns that make frames upright (the stream's rotation), the upright
        output size, the colour and the pixel aspect ratio (turned with the picture). The output's streams must all
        exist before its first packet, so these are needed first."""
        try:
            with open_video(self.av, self.source) as probe:
                frame = next(probe.decode(video=0), None)
                stream = probe.streams.video[0]
                aspect = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
        except self.av.FFmpegError as error:
            raise StylerError(f"{self.source}: unreadable video data ({_reason(error)})") from None
        if frame is None:
            raise StylerError(f"{self.source}: no video frames")
        quarter_turns = round(getattr(frame, "rotation", 0) / 90) % 4
        upright = (frame.width, frame.height) if quarter_turns % 2 == 0 else (frame.height, frame.width)
        width, height = target_size(upright, None, self.options.max_size)
        pixel_aspect = Fraction(aspect) if aspect and aspect != 1 else None
        if pixel_aspect and quarter_turns % 2:
            pixel_aspect = 1 / pixel_aspect
        size = (max(2, width - width % 2), max(2, height - height % 2))  # yuv420p: even sides
        return quarter_turns, size, Colour.of(frame), pixel_aspect

    def _frame_array(self, frame: Any) -> np.ndarray:
        """(H, W, 3) uint8 RGB, upright, at the output size, read with the video's matrix and range."""
        width, height = self.size if self.quarter_turns % 2 == 0 else self.size[::-1]
        pixels = frame.to_ndarray(
            format="rgb24",
            width=width,
            height=height,
            interpolation="AREA",
            src_colorspace=MATRICES[self.colour.matrix],
            src_color_range=self.colour.range,
        )
        return np.rot90(pixels, self.quarter_turns) if self.quarter_turns else pixels


# Sample rates an encoder may refuse (Opus takes 48/24/16/12/8 kHz): the input's is resampled to the nearest one
# it takes, above it where there is one. Layouts: channels in no particular order ("2 channels", PCM without a
# channel mask) get the usual order for their count, which MP4 needs to write them.
DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1"}


def encoder_rate(codec: Any, rate: int) -> int:
    rates = sorted(codec.audio_rates or ())
    if not rates or rate in rates:
        return rate
    return next((candidate for candidate in rates if candidate > rate), rates[-1])


class AudioPath:
    """The input's audio into the output: packets copied as they are (copy), or decoded and encoded again with the
    container's own codec, resampled to a rate and layout it takes; trimmed to the window, shifted like the video."""

    def __init__(self, stream: Any, output: Any, window: Window, codec: str, copy: bool) -> None:
        self.input, self.output, self.window = stream, output, window
        name = stream.codec_context.name
        layout = DEFAULT_LAYOUTS.get(stream.codec_context.channels)
        # Below 0 in a container that cannot hold it, every stream would be moved later to make room: the picture
        # would start late by AAC's priming packet.
        self.negative_ok = bool(output.format.flags & AVFMT_TS_NEGATIVE)
        if copy:
            self.stream = output.add_stream_from_template(stream)
            if layout and stream.codec_context.layout.name.endswith("channels"):
                self.stream.codec_context.layout = layout
            self.mode, self.encoder = "copied", None
        else:
            self.stream = output.add_stream(codec)
            context = self.stream.codec_context
            context.sample_rate = encoder_rate(context.codec, stream.codec_context.sample_rate or 48000)
            context.layout = "mono" if stream.codec_context.channels == 1 else "stereo"  # what all three take
            self.mode, self.encoder = f"re-encoded ({name} to {codec})", self.stream

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
            if packet.pts - shift < 0 and not self.negative_ok:
                return
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


def _seconds(pts: int | None, time_base: Fraction | None, index: int, rate: Fraction, origin: float) -> float:
    if pts is None or time_base is None:  # no timestamps: one frame period each from the start
        return origin + index / float(rate)
    return float(pts * time_base)


def _reason(error: BaseException) -> str:
    return one_line(getattr(error, "strerror", None) or error, 160)


def stylize_one(av: Any, source: Path, target: Path, stylizer: ImageStylizer, options: VideoOptions) -> VideoResult:
    started = time.perf_counter()
    result = VideoResult(str(source))
    job = VideoJob(av, source, target, stylizer, options)
    try:
        with tqdm(
            total=job.expected_frames(), unit="frame", desc=source.name[:30], file=sys.stderr, disable=None
        ) as progress:
            write_atomically(target, lambda file: job.write(file, progress), overwrite=options.overwrite)
    finally:
        job.input.close()
    result.output, result.frames, result.size = str(target), job.frames_done, job.size
    result.frame_rate, result.audio, result.damaged_packets = float(job.frame_rate), job.audio_mode, job.damaged
    result.seconds = time.perf_counter() - started
    return result
