"""Synthetic test clips for styler video's temporal stability: made from a photo, with known motion.

- `pan`: a window sliding over a photo by a whole number of pixels per frame, so consecutive outputs can be
  compared exactly after shifting one of them back (no optical flow needed).
- `moving_object`: a still photo with a disc crossing it; the masks say which pixels the disc covers in each frame,
  hence which pixels it never reached (where any change of the output is flicker) and which it just left (where a
  trail would show).

Both add fresh Gaussian grain to every frame, as a camera does. Used by benchmarks/video.py and the tests.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

DISC_COLOR = (230, 40, 40)


def photo_array(path: Path, height: int, min_width: int) -> np.ndarray:
    """(height, W, 3) uint8 RGB: the photo scaled to `height`, mirrored side by side until at least min_width wide."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        width = round(image.width * height / image.height)
        pixels = np.asarray(image.resize((width, height), Image.Resampling.LANCZOS))
    while pixels.shape[1] < min_width:
        pixels = np.concatenate([pixels, pixels[:, ::-1]], axis=1)
    return pixels


def _grain(frames: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    if sigma == 0:
        return frames
    noise = np.random.default_rng(seed).normal(0.0, sigma, frames.shape)
    return np.clip(frames + noise, 0, 255).round().astype(np.uint8)


def pan(photo: Path, width: int, height: int, frames: int, step: int, sigma: float = 0.0, seed: int = 0) -> np.ndarray:
    """(frames, height, width, 3) uint8: the view moves right by `step` pixels per frame."""
    pixels = photo_array(photo, height, width + step * (frames - 1))
    views = np.stack([pixels[:, t * step : t * step + width] for t in range(frames)])
    return _grain(views, sigma, seed)


def moving_object(
    photo: Path, width: int, height: int, frames: int, sigma: float = 0.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(frames, height, width, 3) uint8 and (frames, height, width) bool: a disc of radius height/5 crossing a still
    view from left to right, and where it is in each frame."""
    background = photo_array(photo, height, width)[:, :width]
    radius = height / 5
    rows, cols = np.mgrid[0:height, 0:width]
    centres = np.linspace(radius, width - radius, frames)
    masks = np.stack([(rows - height / 2) ** 2 + (cols - x) ** 2 <= radius**2 for x in centres])
    views = np.repeat(background[None], frames, axis=0)
    views[masks] = DISC_COLOR
    return _grain(views, sigma, seed), masks


def write_clip(path: Path, frames: np.ndarray, fps: int = 24, audio: bool = False) -> None:
    """An H.264 .mp4 (or any container by extension) of the frames, with a 440 Hz AAC tone as long as the video."""
    import av

    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=fps, options={"crf": "12"})
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        sound = container.add_stream("aac", rate=48000) if audio else None
        for pixels in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if sound is not None:
            samples = round(48000 * len(frames) / fps)
            tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / 48000)).astype(np.float32)
            chunk = 1024
            for start in range(0, samples, chunk):
                frame = av.AudioFrame.from_ndarray(tone[None, start : start + chunk], format="flt", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = 48000, start, Fraction(1, 48000)
                for packet in sound.encode(frame):
                    container.mux(packet)
            for packet in sound.encode(None):
                container.mux(packet)
