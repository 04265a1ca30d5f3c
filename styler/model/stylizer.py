"""A trained model applied to images: the chosen style or blend, the device and precision, the padding the network
needs, and the optional colour preservation and strength. Shared by the commands that stylize (stylize, grid, video).

`ImageStylizer` is what those commands need of a stylizer, so that a trained-style `Stylizer` and an any-painting
`arbitrary.ArbitraryStylizer` serve them alike.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from PIL import Image

from styler.devices import cpu_has_bfloat16
from styler.errors import StylerError
from styler.io.images import Photo, image_to_tensor, luma, tensor_to_image
from styler.model.model_files import StyleModel
from styler.model.out_of_core import (
    MAX_BAND_BYTES,
    SPILL_DTYPES,
    OutOfCore,
    PhotoRows,
    band_bytes_within,
    whole_image_bytes,
)

# A --style weight: digits with an optional fraction and exponent (what a person types), nothing float() merely
# tolerates such as 1_000, inf or nan.
PLAIN_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")
PRECISIONS = {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}
AUTO_PRECISION = "auto"


def resolved_precision(precision: str, device: torch.device, arbitrary: bool) -> str:
    """--precision auto: bfloat16 for an arbitrary-style model on a CPU that computes bfloat16 natively (2-3x
    faster, the pictures within about two levels of float32's, measured), float32 everywhere else (trained-style
    models were judged in float32; CUDA's half precision is asked for by name)."""
    if precision != AUTO_PRECISION:
        return precision
    return "bfloat16" if arbitrary and device.type == "cpu" and cpu_has_bfloat16() else "float32"


@dataclass(frozen=True)
class StyleChoice:
    tag: str  # names outputs: "starry" or "starry70+wave30"
    weights: tuple[float, ...] | None  # per style of a multi-style model; None for a single-style model


def choose_style(spec: str | None, styles: list[str]) -> StyleChoice:
    """--style: a style name, or name=weight,... to blend a multi-style model's styles (weights normalized)."""
    if len(styles) == 1:
        if spec not in (None, styles[0]):
            raise StylerError(f"--style {spec!r}: this model has the single style {styles[0]!r}")
        return StyleChoice(_safe_name(styles[0]), None)
    if spec is None:
        raise StylerError(
            f"this model holds {len(styles)} styles ({', '.join(styles)}): pick one or a blend with --style"
        )
    weights = dict.fromkeys(styles, 0.0)
    for part in spec.split(","):
        name, _, weight = part.partition("=")
        name = name.strip()
        if name not in weights:
            raise StylerError(f"--style: unknown style {name!r}; this model has {', '.join(styles)}")
        if weight and not PLAIN_NUMBER.fullmatch(weight):  # float() would also take 1_000, inf and nan
            raise StylerError(f"--style: weight {weight!r} of {name!r} is not a number such as 0.7 or 3")
        weights[name] += float(weight) if weight else 1.0
    total = sum(weights.values())  # finite weights can still add up to infinity: 1e308 + 1e308
    if any(w < 0 or not math.isfinite(w) for w in weights.values()) or not (0 < total < math.inf):
        raise StylerError(f"--style {spec!r}: weights must be non-negative with a positive sum")
    mix = tuple(w / total for w in weights.values())
    used = [(name, w) for name, w in zip(styles, mix, strict=True) if w > 0]
    tag = used[0][0] if len(used) == 1 else "+".join(f"{name}{_percent(w)}" for name, w in used)
    return StyleChoice(_safe_name(tag), mix)


def _percent(share: float) -> str:
    """A used style's share of a blend in percent, for output names: whole percents where they are exact enough,
    else as many decimals as keep it off 0 and 100 (starry=1000,wave=1 is starry99.9+wave0.1)."""
    value = 100 * share
    for decimals in range(16):
        text = f"{value:.{decimals}f}"
        if 0 < float(text) < 100:
            return text
    return f"{value:.1e}"


def check_style_images(model: str | None, style_images: Sequence[str], style_weights: Sequence[float]) -> None:
    """--style-image and --style-weight, as stylize and video take them: one weight per painting (or none), weights
    non-negative with a positive sum, and a model or a painting at all (a painting alone picks the arbitrary model)."""
    if style_weights and len(style_weights) != len(style_images):
        raise StylerError(f"{len(style_weights)} --style-weight for {len(style_images)} --style-image; give one each")
    if any(not 0 <= w < float("inf") for w in style_weights) or (style_weights and sum(style_weights) <= 0):
        raise StylerError("--style-weight: weights must be non-negative with a positive sum")
    if model is None and not style_images:
        raise StylerError("give a model with --model (`styler models` lists them) or a painting with --style-image")


def output_tag(model: StyleModel, style_tag: str) -> str:
    """What a model's outputs are named with, <stem>-<tag>: the style (or blend) alone when the model is named after
    it (starry, a my-style.pth trained on my-style.jpg), so those keep their names; else the model's name comes
    first, so that two models never write the same name: mix-starry beside starry, step-0000200-stripes for a
    checkpoint, and the model's name alone when it begins with the style's (starry-lite)."""
    name = _safe_name(model.name)
    if name == style_tag or name.startswith(f"{style_tag}-"):
        return name
    return f"{name}-{style_tag}"


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "+-_." else "_" for c in text)


class ImageStylizer(Protocol):
    """A stylizer as the commands use it: photos (stylize, grid) or batches of frames (video) in, stylized out."""

    device: torch.device

    @property
    def size_multiple(self) -> int:
        """Sides are padded to a multiple of this; video's camera track keeps scene points on this grid."""
        ...

    def __call__(self, photo: Photo, strength: float = 1.0, preserve_color: bool = False) -> Photo: ...

    def stylize_finished(
        self, content: torch.Tensor, strength: float, preserve_color: bool, offsets: list[tuple[int, int]] | None = None
    ) -> torch.Tensor:
        """(N, 3, H, W) in 0..255 to the same shape; offsets: the grid offsets of pad_to_grid, one pair per image."""
        ...


class Stylizer:
    """The network on its device, the chosen style, and the per-photo pipeline around it.

    max_memory: the bytes a photo may take (whole process); a photo whose whole-image pass would need more is
    stylized out of core (out_of_core.py), exactly alike. None: always whole. force_out_of_core takes that path for
    any photo big enough (benchmarks), band_rows too, with bands of that many rows per layer (tests); spill: the
    dtype the out-of-core path keeps activations in on disk."""

    def __init__(
        self,
        model: StyleModel,
        choice: StyleChoice,
        device: torch.device,
        precision: str = "float32",
        max_memory: int | None = None,
        band_rows: int | None = None,
        spill: str = "float32",
        force_out_of_core: bool = False,
    ):
        if precision == "float16" and device.type != "cuda":
            raise StylerError("--precision float16 is for CUDA; on the CPU use bfloat16 or float32")
        self.device, self.autocast_dtype = device, PRECISIONS[precision]
        self.arch = model.arch
        # torch accepts to(device, memory_format=...); its type stubs lack that overload.
        self.network = model.build().to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.style = None if choice.weights is None else torch.tensor([choice.weights], device=device)
        self.max_memory, self.band_rows, self.spill_dtype = max_memory, band_rows, SPILL_DTYPES[spill]
        self.force_out_of_core = force_out_of_core or band_rows is not None

    @property
    def size_multiple(self) -> int:
        return self.arch.size_multiple

    def __call__(
        self,
        photo: Photo,
        strength: float = 1.0,
        preserve_color: bool = False,
        spill_folder: Path | None = None,
        consume: bool = False,
    ) -> Photo:
        """The stylized photo; spill_folder: where an out-of-core run keeps its (unnamed) temporary files; consume:
        the caller has no further use for `photo`, so an out-of-core run writes the result over its pixels (a
        photo's size less memory: 0.4 GB at 100 MP)."""
        if self.runs_out_of_core(photo.size):
            result = self.stylize_out_of_core(photo, strength, preserve_color, spill_folder, consume)
        else:
            content = image_to_tensor(photo.rgb).to(self.device)
            result = tensor_to_image(self.stylize_finished(content, strength, preserve_color))
        return Photo(result, photo.alpha, photo.icc_profile, photo.exif)

    def network_size(self, height: int, width: int, lead: int = 0) -> tuple[int, int]:
        """The (height, width) the network runs at: the photo's plus `lead`, mirror-padded to what it needs."""
        return grid_size(height, width, self.arch.size_multiple, self.arch.min_size, lead)

    def runs_out_of_core(self, size: tuple[int, int]) -> bool:
        """Whether a photo of `size` (width, height) is stylized out of core: when its whole-image pass would not
        fit in max_memory (or band_rows asks for it), and the photo is big enough to mirror-pad once."""
        width, height = size
        padded_height, padded_width = self.network_size(height, width)
        if padded_height >= 2 * height or padded_width >= 2 * width:
            return False  # tiny: always fits
        if self.force_out_of_core:
            return True
        return self.max_memory is not None and whole_image_bytes(self.arch, padded_height * padded_width) > (
            self.max_memory
        )

    def stylize_out_of_core(
        self, photo: Photo, strength: float, preserve_color: bool, spill_folder: Path | None, consume: bool
    ) -> Image.Image:
        width, height = photo.size
        padded_height, padded_width = self.network_size(height, width)
        pixels = padded_height * padded_width
        band_bytes = band_bytes_within(self.max_memory, pixels, photo.size) if self.max_memory else MAX_BAND_BYTES
        run = OutOfCore(self.network, self.style, band_bytes, spill_folder, self.band_rows, self.spill_dtype)
        photo_rows = PhotoRows(photo.rgb, height, width, self.device)

        def finish(styled: torch.Tensor, first: int) -> torch.Tensor:
            if not preserve_color and strength == 1.0:
                return styled
            content = photo_rows.rows(first, first + styled.shape[-2])
            return finished(content, styled, strength, preserve_color)

        autocast = torch.autocast(self.device.type, self.autocast_dtype) if self.autocast_dtype else nullcontext()
        with autocast:
            return run(photo.rgb, padded_height, padded_width, finish, photo.rgb if consume else None)

    def stylize_finished(
        self, content: torch.Tensor, strength: float, preserve_color: bool, offsets: list[tuple[int, int]] | None = None
    ) -> torch.Tensor:
        """(N, 3, H, W) in 0..255 stylized, with the photo's colours kept and blended back by strength as asked."""
        return finished(content, self.stylize_tensor(content, offsets), strength, preserve_color)

    @torch.inference_mode()
    def stylize_tensor(self, content: torch.Tensor, offsets: list[tuple[int, int]] | None = None) -> torch.Tensor:
        """(N, 3, H, W) in 0..255 to the same shape: mirror-padded to what the network needs (and by the grid
        offsets, see pad_to_grid), then cropped back."""
        height, width = content.shape[-2:]
        padded = pad_to_grid(content, self.arch.size_multiple, self.arch.min_size, offsets)
        autocast = torch.autocast(self.device.type, self.autocast_dtype) if self.autocast_dtype else nullcontext()
        with autocast:
            styled = self.network(padded.contiguous(memory_format=torch.channels_last), self.style)
        return crop_from_grid(styled, height, width, offsets).float().clamp(0, 255)


def pad_to_grid(
    content: torch.Tensor, multiple: int, smallest: int, offsets: list[tuple[int, int]] | None = None
) -> torch.Tensor:
    """(N, C, H, W) mirror-padded at the bottom and right to sides that are multiples of `multiple`, at least
    `smallest`. offsets, one (rows, columns) pair per image, each below `multiple`, first mirror-pad that many pixels
    at the top and left: a network's strided layers then meet the content at another phase of their grid (video keeps
    each scene point at one phase while the camera pans, see video.steadiness.CameraTrack)."""
    height, width = content.shape[-2:]
    size = grid_size(height, width, multiple, smallest, multiple - 1 if offsets else 0)
    if not offsets:
        return mirror_pad_to(content, *size)
    return torch.cat(
        [
            mirror_pad_to(mirror_lead(frame[None], *offset), *size)
            for frame, offset in zip(content, offsets, strict=True)
        ]
    )


def grid_size(height: int, width: int, multiple: int, smallest: int, lead: int = 0) -> tuple[int, int]:
    """The padded (height, width) a network runs at: the content's plus `lead`, rounded up to `multiple`, at least
    `smallest` (the whole-image and the out-of-core paths must agree on it to the pixel)."""
    return max(smallest, _round_up(height + lead, multiple)), max(smallest, _round_up(width + lead, multiple))


def crop_from_grid(
    styled: torch.Tensor, height: int, width: int, offsets: list[tuple[int, int]] | None = None
) -> torch.Tensor:
    """pad_to_grid's output, stylized, cropped back to the (height, width) content."""
    if offsets:
        styled = torch.stack(
            [
                image[:, top : top + height, left : left + width]
                for image, (top, left) in zip(styled, offsets, strict=True)
            ]
        )
    return styled[..., :height, :width]


def finished(content: torch.Tensor, styled: torch.Tensor, strength: float, preserve_color: bool) -> torch.Tensor:
    """Stylized pixels with the photo's colours kept (preserve_color) and blended back by strength."""
    if preserve_color:
        styled = keep_colors(content, styled)
    return styled if strength == 1.0 else torch.lerp(content, styled, strength)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def mirror_pad_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Extend (N, C, h, w) to (N, C, height, width) by mirroring at the bottom and right edges.

    A reflection can add at most side-1 pixels, so tiny images are mirrored repeatedly; a 1-pixel side has nothing
    to mirror and is repeated once first.
    """
    while x.shape[-2:] != (height, width):
        h, w = x.shape[-2:]
        if min(h, w) == 1:
            x = F.pad(x, (0, min(1, width - w), 0, min(1, height - h)), mode="replicate")
        else:
            x = F.pad(x, (0, min(width - w, w - 1), 0, min(height - h, h - 1)), mode="reflect")
    return x


def mirror_lead(x: torch.Tensor, top: int, left: int) -> torch.Tensor:
    """(N, C, h, w) with `top` rows and `left` columns mirrored in front: mirror_pad_to on the flipped image."""
    if not (top or left):
        return x
    height, width = x.shape[-2:]
    return mirror_pad_to(x.flip(-2, -1), height + top, width + left).flip(-2, -1)


def keep_colors(content: torch.Tensor, styled: torch.Tensor) -> torch.Tensor:
    """The stylized luminance with the photo's chroma (YCbCr), after Gatys et al. 2017, "Controlling perceptual
    factors in neural style transfer": adding the luma difference to every channel leaves Cb and Cr unchanged."""
    return (content + luma(styled - content)).clamp(0, 255)


def target_size(size: tuple[int, int], scale: float | None, max_size: int | None) -> tuple[int, int]:
    """--scale first, then --max-size shrinks the long side; each side stays at least one pixel."""
    width, height = size
    factor = scale or 1.0
    if max_size is not None:
        factor = min(factor, max_size / max(width, height))
    return max(1, round(width * factor)), max(1, round(height * factor))
