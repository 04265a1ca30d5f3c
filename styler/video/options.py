"""`styler video`'s options, checked once, as the decoding, the steadiness and the command read them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from styler.devices import check_device
from styler.errors import StylerError
from styler.model.stylizer import AUTO_PRECISION, PRECISIONS, check_style_images


@dataclass(frozen=True)
class VideoOptions:
    model: str | None = None  # None: the shipped arbitrary model when paintings are given (as stylize)
    style: str | None = None
    style_images: tuple[str, ...] = ()  # paintings for an arbitrary-style model, as stylize takes them
    style_weights: tuple[float, ...] = ()
    style_size: int | None = None
    match_colors: bool = True
    output: str | Path | None = None  # one file for one input, or a folder (existing or ending in /)
    overwrite: bool = False
    max_size: int | None = None
    strength: float = 1.0
    preserve_color: bool = False
    device: str = "auto"
    precision: str = AUTO_PRECISION
    batch_size: int = 1  # on the CPU larger batches were no faster (docs/video.md)
    start: float = 0.0  # seconds into the input
    duration: float | None = None  # seconds from start; None: to the end
    steady: bool = True  # steady statistics across frames (steadiness.SteadyStatistics); False: each frame's own
    smooth: float = 0.8  # steadiness.StillAreaBlend; 0: none
    json_output: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 1.0:
            raise StylerError(f"--strength {self.strength} is not between 0 and 1")
        if self.max_size is not None and self.max_size < 2:
            raise StylerError(f"--max-size {self.max_size}: must be at least 2 pixels")
        if self.batch_size < 1:
            raise StylerError(f"--batch-size {self.batch_size}: must be at least 1")
        if not (math.isfinite(self.start) and self.start >= 0):
            raise StylerError(f"--start {self.start}: must be 0 or more seconds")
        if self.duration is not None and not (math.isfinite(self.duration) and self.duration > 0):
            raise StylerError(f"--duration {self.duration}: must be a positive number of seconds")
        if not 0.0 <= self.smooth <= 0.95:
            raise StylerError(f"--smooth {self.smooth} is not between 0 and 0.95")
        check_style_images(self.model, self.style_images, self.style_weights)
        check_device(self.device)
        if self.precision not in (*PRECISIONS, AUTO_PRECISION):
            raise StylerError(f"--precision {self.precision!r}: choose one of {', '.join(PRECISIONS)} or auto")
