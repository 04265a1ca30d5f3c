"""An arbitrary-style model applied to photos: its encoder (VGG16, or the small one distilled from it), AdaIN on our
kernels, the trained decoder.

Each painting is read, scaled to `style_size` and reduced to its statistics once per file (cached by path), so a
folder of photos reads the painting once; several paintings blend as a weighted mix of their statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from styler.arbitrary.adain import StyleStatistics, adain, adain_layers, blend, style_statistics
from styler.arbitrary.model_file import ArbitraryModel
from styler.errors import StylerError
from styler.io.images import DEFAULT_MAX_PIXELS, Photo, image_to_tensor, read_photo, tensor_to_image
from styler.model.inference import for_inference
from styler.model.stylizer import PRECISIONS, crop_from_grid, keep_colors, pad_to_grid
from styler.vgg16 import COMMAND, converted_file, load_vgg16_weights, torchvision_vgg16_file

DEFAULT_STYLE_SIZE = 512
MIN_PAINTING_SIDE = 32  # a painting scaled to --style-size must keep at least this much on its short side
MAX_STYLE_SIZE = 4096


@dataclass(frozen=True)
class Painting:
    path: Path
    weight: float = 1.0


def style_tag(paintings: list[Painting]) -> str:
    """Names outputs: the painting's stem, or stem70+stem30 for a blend."""
    total = sum(p.weight for p in paintings)
    if len(paintings) == 1:
        text = paintings[0].path.stem
    else:
        text = "+".join(f"{p.path.stem}{round(100 * p.weight / total)}" for p in paintings)
    return "".join(c if c.isalnum() or c in "+-_." else "_" for c in text)


def encoder_weights(vgg_weights: Path | None = None) -> dict[str, Tensor]:
    """The ImageNet VGG16 weights; missing ones are one line naming the command that fetches them."""
    if vgg_weights is None and not converted_file().is_file() and not torchvision_vgg16_file().is_file():
        raise StylerError(
            f"arbitrary-style models need the ImageNet VGG16 encoder, which is not here: run `{COMMAND}` once "
            f"(it writes {converted_file()})"
        )
    return load_vgg16_weights(vgg_weights)[0]


def weights_for(model: ArbitraryModel) -> dict[str, Tensor] | None:
    """VGG16's weights where the model reads VGG16; None where it carries its own small encoder."""
    return encoder_weights() if model.uses_vgg16 else None


class ArbitraryStylizer:
    """The encoder and decoder on their device, the paintings' cached statistics, and the per-photo pipeline."""

    def __init__(
        self,
        model: ArbitraryModel,
        weights: dict[str, Tensor] | None,
        device: torch.device,
        precision: str = "float32",
        style_size: int = DEFAULT_STYLE_SIZE,
        match_colors: bool = True,
    ) -> None:
        if precision == "float16" and device.type != "cuda":
            raise StylerError("--precision float16 is for CUDA; on the CPU use bfloat16 or float32")
        if not MIN_PAINTING_SIDE <= style_size <= MAX_STYLE_SIZE:
            raise StylerError(f"--style-size {style_size}: choose between {MIN_PAINTING_SIDE} and {MAX_STYLE_SIZE}")
        self.device, self.style_size = device, style_size
        # The networks are held in the precision asked for, not autocast: autocast would cast every weight again
        # for every photo (measured: 40 % of the decoder's time in bfloat16 at 480x320). AdaIN, the statistics and
        # the decoder's last step stay float32.
        self.dtype = PRECISIONS[precision] or torch.float32
        # torch accepts to(device, dtype, memory_format=...); its type stubs lack that overload.
        # Both only ever run outside autograd: for_inference's faster ReLUs and max-pools.
        encoder, decoder = for_inference(model.build_encoder(weights)), for_inference(model.build())
        self.encoder = encoder.to(device, self.dtype, memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.decoder = decoder.to(device, self.dtype, memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.size_multiple = self.decoder.size_multiple
        self.match_colors = match_colors
        # Per painting file: its statistics at each layer the decoder reads and its pixels' (its palette).
        self._statistics: dict[Path, tuple[dict[str, StyleStatistics], StyleStatistics]] = {}
        self.style: dict[str, StyleStatistics] | None = None
        self.palette: StyleStatistics | None = None

    def _encode(self, images: Tensor) -> dict[str, Tensor]:
        """The features at every layer the decoder reads, in the networks' dtype (the statistics and AdaIN
        accumulate in float32 whatever it is)."""
        return self.encoder(images.to(self.dtype).contiguous(memory_format=torch.channels_last), self.decoder.inputs)

    def _decode(self, features: dict[str, Tensor]) -> Tensor:
        return self.decoder(features).float()

    def painting_statistics(self, path: Path) -> tuple[dict[str, StyleStatistics], StyleStatistics]:
        """The painting's statistics at the decoder's layers and of its pixels, read and encoded once per file."""
        key = Path(path).resolve()
        if key not in self._statistics:
            photo = read_photo(Path(path), DEFAULT_MAX_PIXELS)
            width, height = photo.size
            if min(width, height) < MIN_PAINTING_SIDE:  # a few pixels hold no strokes to transfer
                raise StylerError(
                    f"--style-image {path}: {width}x{height} is too small to carry a style "
                    f"(at least {MIN_PAINTING_SIDE} px a side)"
                )
            factor = self.style_size / max(width, height)
            size = round(width * factor), round(height * factor)
            if min(size) < MIN_PAINTING_SIDE:
                raise StylerError(
                    f"--style-image {path}: {width}x{height} is too small or too narrow to carry a style "
                    f"(its short side must be at least {MIN_PAINTING_SIDE} px at --style-size {self.style_size})"
                )
            painting = image_to_tensor(photo.rgb.resize(size, Image.Resampling.LANCZOS)).to(self.device)
            with torch.inference_mode():
                features = self._encode(painting)
            by_layer = {layer: style_statistics(value) for layer, value in features.items()}
            self._statistics[key] = by_layer, style_statistics(painting)
        return self._statistics[key]

    def set_paintings(self, paintings: list[Painting]) -> None:
        """The style every following photo gets: one painting, or the weighted blend of several."""
        if not paintings:
            raise StylerError("give a painting with --style-image")
        statistics = [self.painting_statistics(p.path) for p in paintings]
        weights = [p.weight for p in paintings]
        self.style = {layer: blend([s[layer] for s, _ in statistics], weights) for layer in self.decoder.inputs}
        self.palette = blend([pixels for _, pixels in statistics], weights)

    def __call__(self, photo: Photo, strength: float = 1.0, preserve_color: bool = False) -> Photo:
        content = image_to_tensor(photo.rgb).to(self.device)
        result = self.stylize_finished(content, strength, preserve_color)
        return Photo(tensor_to_image(result), photo.alpha, photo.icc_profile, photo.exif)

    def stylize_finished(
        self, content: Tensor, strength: float, preserve_color: bool, offsets: list[tuple[int, int]] | None = None
    ) -> Tensor:
        styled = self.stylize_tensor(content, strength, offsets)
        return keep_colors(content, styled) if preserve_color else styled

    @torch.inference_mode()
    def stylize_tensor(
        self, content: Tensor, strength: float = 1.0, offsets: list[tuple[int, int]] | None = None
    ) -> Tensor:
        """(N, 3, H, W) 0..255 to the same shape, mirror-padded to the encoder's size multiple (and by the grid
        offsets, see model.stylizer.pad_to_grid) and cropped back.

        strength is AdaIN's alpha: the decoder gets a feature-space blend of the photo's own features and the
        transferred ones, so 0.5 is half the style's statistics, not a cross-fade of two pictures."""
        if self.style is None:
            raise StylerError("no painting chosen (set_paintings)")
        height, width = content.shape[-2:]
        # The decoder's reflection padding needs feature maps of at least 2x2: photos of at least 2 * multiple.
        padded = pad_to_grid(content, self.size_multiple, 2 * self.size_multiple, offsets)
        transferred = adain_layers(self._encode(padded), self.style, strength)
        styled = crop_from_grid(self._decode(transferred), height, width, offsets)
        if self.match_colors:
            styled = self.match_palette(styled, content, strength)
        return styled.clamp(0, 255)

    def match_palette(self, styled: Tensor, content: Tensor, strength: float) -> Tensor:
        """AdaIN in pixel space, on the same kernels: the result's per-channel mean and std of R, G and B set to the
        painting's (at strength 1; between the photo's and the painting's below), as in Reinhard et al. 2001's
        colour transfer. The decoder carries the painting's strokes; this carries its palette exactly. In a video,
        the result's own statistics are the steady ones of its frames (adain's layer), as at the encoder's layers."""
        assert self.palette is not None
        photo = style_statistics(content.float())
        target = StyleStatistics(
            torch.lerp(photo.mean, self.palette.mean.expand_as(photo.mean), strength),
            torch.lerp(photo.std, self.palette.std.expand_as(photo.std), strength),
        )
        return adain(styled, target, layer=PALETTE)


PALETTE = "pixels"  # the decoded result's RGB, as the steady statistics of a video know it beside the encoder's layers
