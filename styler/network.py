"""The feed-forward transformer network: Johnson et al. 2016 with Ulyanov et al.'s instance normalization.

Layer and parameter names follow pytorch/examples fast_neural_style (conv1.conv2d.weight, in1.weight, res1.conv1...,
deconv1..3), so its published `.pth` models load unchanged. Like those models, the network maps pixel values in
0..255 to pixel values in (roughly) 0..255.

The architecture is a small value object stored in every model file: a width multiplier on the 32/64/128 channels,
the number of residual blocks, the stride of the first 9x9 convolution (2 halves the resolution the whole network
runs at, for the compact `lite` configuration) and the number of styles (more than one selects conditional
instance norm, Dumoulin et al. 2017, and `forward(x, style)` picks or blends the styles).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import torch
from torch import Tensor, nn

import instancenorm
from styler.errors import StylerError
from styler.temporal import ACTIVE_STATISTICS


@dataclass(frozen=True)
class Architecture:
    width: float = 1.0
    residual_blocks: int = 5
    stem_stride: int = 1
    num_styles: int = 1

    def __post_init__(self) -> None:
        problems = []
        if not (isinstance(self.width, (int, float)) and 0 < self.width <= 8):
            problems.append(f"width {self.width!r} is not in (0, 8]")
        if not (isinstance(self.residual_blocks, int) and 0 <= self.residual_blocks <= 64):
            problems.append(f"residual_blocks {self.residual_blocks!r} is not an integer in 0..64")
        if self.stem_stride not in (1, 2):
            problems.append(f"stem_stride {self.stem_stride!r} is not 1 or 2")
        if not (isinstance(self.num_styles, int) and self.num_styles >= 1):
            problems.append(f"num_styles {self.num_styles!r} is not a positive integer")
        if problems:
            raise StylerError("bad architecture: " + "; ".join(problems))

    @property
    def channels(self) -> tuple[int, int, int]:
        """Channels after the first, second and third convolution (32, 64, 128 at width 1)."""
        base = max(1, round(32 * self.width))
        return base, 2 * base, 4 * base

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this for the output to have the input's size."""
        return 4 * self.stem_stride

    @property
    def min_size(self) -> int:
        """Smallest input side: the 3x3 reflection pads at the lowest resolution need at least 2 pixels there."""
        return 2 * self.size_multiple

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: object) -> Architecture:
        known = {field.name for field in fields(cls)}
        if not isinstance(values, dict) or not set(values) <= known:
            raise StylerError(f"bad architecture {values!r}: expected a dict with keys from {sorted(known)}")
        return cls(**values)


ARCHITECTURES = {
    # The network of the paper and of pytorch/examples: 1.68M parameters.
    "johnson": Architecture(),
    # Compact: a quarter of the channels, three residual blocks (71.5k parameters). Its stem runs at full resolution:
    # with the stem at stride 2 the last layer upsamples 2x and a texture loss finds a checkerboard there.
    "lite": Architecture(width=0.25, residual_blocks=3, stem_stride=1),
}
# What a name meant when checkpoints stored only the name (model files always stored the whole architecture).
FORMER_ARCHITECTURES = {"lite": Architecture(width=0.25, residual_blocks=3, stem_stride=2)}


def checkpoint_architecture(name: str | None, num_styles: int, saved: dict | None) -> Architecture:
    """A checkpoint's network: the architecture it stored, or for one written before checkpoints stored it, what its
    architecture's name meant then (None: its config names none)."""
    if saved is not None:
        return Architecture.from_dict({**saved, "num_styles": num_styles})
    if name in FORMER_ARCHITECTURES:
        return replace(FORMER_ARCHITECTURES[name], num_styles=num_styles)
    return architecture(name, num_styles)


def architecture(name: str | None, num_styles: int = 1) -> Architecture:
    """A named configuration ("johnson" or "lite") with the given number of styles."""
    if name not in ARCHITECTURES:
        raise StylerError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    return Architecture(**{**ARCHITECTURES[name].to_dict(), "num_styles": num_styles})


class InstanceNorm(instancenorm.InstanceNorm2d):
    """Affine instance norm that accepts and ignores a style, so single- and multi-style networks share forward()."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, affine=True)

    def forward(self, x: Tensor, style: Tensor | None = None) -> Tensor:
        return super().forward(x)

    def style_affine(self, style: Tensor | None, batch: int) -> tuple[Tensor, Tensor]:
        return self.weight, self.bias


def normalization(channels: int, num_styles: int) -> nn.Module:
    if num_styles == 1:
        return InstanceNorm(channels)
    return instancenorm.ConditionalInstanceNorm2d(channels, num_styles)


OUR_NORMS = (InstanceNorm, instancenorm.ConditionalInstanceNorm2d)


def _inference_in_place() -> bool:
    """Whether the network may work in place: true outside autograd, where no op's input is kept for a backward pass.

    Then a conv output that no one else holds may be overwritten: instance norm and ReLU write into it (normalize), a
    residual block adds its input into it (ResidualBlock), and a convolution gathers its upsampled, reflection-padded
    input in one pass, band by band for large layers (ConvLayer), instead of materializing each intermediate. With
    autograd every op is the ordinary out-of-place one, as the backward pass needs their inputs.
    """
    return not torch.is_grad_enabled()


def normalize(norm: nn.Module, x: Tensor, style: Tensor | None, relu: bool = True) -> Tensor:
    """norm(x, style), then ReLU; in place on x where _inference_in_place() allows, which saves two activation-sized
    allocations per layer (a norm module other than ours, as the benchmarks swap in, runs out of place). While a
    video runs with steady statistics (temporal.SteadyStatistics), our norms use those instead of x's own."""
    in_place = _inference_in_place()
    steady = ACTIVE_STATISTICS.get()
    # A conditional norm always gets a style: TransformerNet.forward refuses a multi-style call without one.
    if isinstance(norm, OUR_NORMS) and steady is not None:
        mean, inv_std = steady.of(norm, x, norm.eps)
        apply = instancenorm.normalize_with_stats_ if in_place else instancenorm.normalize_with_stats
        y = apply(x, mean, inv_std, *norm.style_affine(style, x.shape[0]))  # type: ignore[arg-type]
    elif isinstance(norm, OUR_NORMS) and in_place:
        y = instancenorm.instance_norm_(x, *norm.style_affine(style, x.shape[0]), norm.eps)  # type: ignore[arg-type]
    else:
        y = norm(x, style)
    if not relu:
        return y
    return y.relu_() if in_place else torch.relu(y)


# Outside autograd, a convolution whose padded (and upsampled) input or output is bigger than WHOLE_BYTES runs a band
# of output rows at a time, each band's input and output about BAND_BYTES, so the full-size padded copy never exists:
# at 4000x3000 johnson's deconv2 input would be 3.1 GB upsampled and again padded. Smaller layers (all of johnson's at
# 1024x768) run whole, as each band costs a weight reorder and an output copy (docs/reliability.md).
WHOLE_BYTES = 256 * 2**20
BAND_BYTES = 32 * 2**20


def _source_index(start: int, stop: int, pad: int, size: int, upsample: int) -> Tensor:
    """For positions start..stop-1 of a line upsampled to `size` then reflection-padded by `pad`: the input index."""
    index = (torch.arange(start, stop) - pad).abs()
    index = torch.where(index >= size, 2 * (size - 1) - index, index)
    return index // upsample


def _gather(x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """x[:, :, rows][..., cols] in x's memory layout, as one gather of whole pixels (channels_last) or values."""
    n, c, _, width = x.shape
    flat = (rows[:, None] * width + cols).flatten().to(x.device)
    if x.is_contiguous(memory_format=torch.channels_last):
        pixels = x.permute(0, 2, 3, 1).reshape(n, -1, c).index_select(1, flat)
        return pixels.view(n, len(rows), len(cols), c).permute(0, 3, 1, 2)
    return x.reshape(n, c, -1).index_select(2, flat).view(n, c, len(rows), len(cols))


class ConvLayer(nn.Module):
    """Reflection padding then a convolution, so borders see mirrored content instead of zeros."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, upsample: int = 1):
        super().__init__()
        self.upsample_factor = upsample
        self.upsample = nn.Upsample(scale_factor=upsample, mode="nearest") if upsample > 1 else nn.Identity()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: Tensor) -> Tensor:
        if _inference_in_place():
            return self._banded(x)
        return self.conv2d(self.reflection_pad(self.upsample(x)))

    def _banded(self, x: Tensor) -> Tensor:
        """The same convolution with its padded input gathered (one pass instead of upsample + pad), for large
        layers band by band: exact, as each output row needs only kernel_size rows of the padded input."""
        (kernel, _), (stride, _) = self.conv2d.kernel_size, self.conv2d.stride
        pad, up = kernel // 2, self.upsample_factor
        height, width = x.shape[-2] * up, x.shape[-1] * up
        cols = _source_index(0, width + 2 * pad, pad, width, up)
        out_rows = (height + 2 * pad - kernel) // stride + 1
        # Bytes per output row: of its padded input, and of its output (which the conv may reorder, i.e. copy).
        row = max(x.shape[1] * len(cols) * stride, self.conv2d.out_channels * ((len(cols) - kernel) // stride + 1))
        row *= x.element_size()
        band = out_rows if row * out_rows <= WHOLE_BYTES else max(1, BAND_BYTES // row)
        out = None
        for first in range(0, out_rows, band):
            last = min(out_rows, first + band)
            rows = _source_index(first * stride, (last - 1) * stride + kernel, pad, height, up)
            y = self.conv2d(_gather(x, rows, cols))
            if last - first == out_rows:
                return y
            if out is None:
                channels_last = y.is_contiguous(memory_format=torch.channels_last)
                layout = torch.channels_last if channels_last else torch.contiguous_format
                out = torch.empty(
                    (*y.shape[:2], out_rows, y.shape[-1]), dtype=y.dtype, device=y.device, memory_format=layout
                )
            out[:, :, first:last] = y
        assert out is not None  # more than one band, so the first one made it
        return out


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, num_styles: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, kernel_size=3)
        self.in1 = normalization(channels, num_styles)
        self.conv2 = ConvLayer(channels, channels, kernel_size=3)
        self.in2 = normalization(channels, num_styles)

    def forward(self, x: Tensor, style: Tensor | None = None) -> Tensor:
        y = normalize(self.in1, self.conv1(x), style)
        y = normalize(self.in2, self.conv2(y), style, relu=False)
        return y.add_(x) if _inference_in_place() else x + y


class TransformerNet(nn.Module):
    """Image in, stylized image out, both (N, 3, H, W) in 0..255; H and W multiples of arch.size_multiple.

    With several styles, `style` is a LongTensor (N,) of style indices or a float tensor (N, num_styles) of
    blending weights (rows summing to 1).
    """

    def __init__(self, arch: Architecture = ARCHITECTURES["johnson"]) -> None:
        super().__init__()
        self.arch = arch
        c1, c2, c3 = arch.channels
        styles = arch.num_styles
        self.conv1 = ConvLayer(3, c1, kernel_size=9, stride=arch.stem_stride)
        self.in1 = normalization(c1, styles)
        self.conv2 = ConvLayer(c1, c2, kernel_size=3, stride=2)
        self.in2 = normalization(c2, styles)
        self.conv3 = ConvLayer(c2, c3, kernel_size=3, stride=2)
        self.in3 = normalization(c3, styles)
        for index in range(1, arch.residual_blocks + 1):
            self.add_module(f"res{index}", ResidualBlock(c3, styles))
        self.deconv1 = ConvLayer(c3, c2, kernel_size=3, upsample=2)
        self.in4 = normalization(c2, styles)
        self.deconv2 = ConvLayer(c2, c1, kernel_size=3, upsample=2)
        self.in5 = normalization(c1, styles)
        self.deconv3 = ConvLayer(c1, 3, kernel_size=9, upsample=arch.stem_stride)

    @property
    def residual_blocks(self) -> list[ResidualBlock]:
        return [getattr(self, f"res{index}") for index in range(1, self.arch.residual_blocks + 1)]

    def forward(self, x: Tensor, style: Tensor | None = None) -> Tensor:
        if self.arch.num_styles > 1 and style is None:
            raise ValueError(f"this network holds {self.arch.num_styles} styles: pass style= indices or weights")
        y = normalize(self.in1, self.conv1(x), style)
        y = normalize(self.in2, self.conv2(y), style)
        y = normalize(self.in3, self.conv3(y), style)
        for block in self.residual_blocks:
            y = block(y, style)
        y = normalize(self.in4, self.deconv1(y), style)
        y = normalize(self.in5, self.deconv2(y), style)
        return self.deconv3(y)
