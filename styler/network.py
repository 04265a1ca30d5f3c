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

from dataclasses import asdict, dataclass, fields

import instancenorm
import torch
from torch import Tensor, nn

from styler.errors import StylerError


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
    # Compact: a quarter of the channels, three residual blocks, the body at half resolution (see README timings).
    "lite": Architecture(width=0.25, residual_blocks=3, stem_stride=2),
}


def architecture(name: str, num_styles: int = 1) -> Architecture:
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


def normalization(channels: int, num_styles: int) -> nn.Module:
    if num_styles == 1:
        return InstanceNorm(channels)
    return instancenorm.ConditionalInstanceNorm2d(channels, num_styles)


class ConvLayer(nn.Module):
    """Reflection padding then a convolution, so borders see mirrored content instead of zeros."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, upsample: int = 1):
        super().__init__()
        self.upsample = nn.Upsample(scale_factor=upsample, mode="nearest") if upsample > 1 else nn.Identity()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2d(self.reflection_pad(self.upsample(x)))


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, num_styles: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, kernel_size=3)
        self.in1 = normalization(channels, num_styles)
        self.conv2 = ConvLayer(channels, channels, kernel_size=3)
        self.in2 = normalization(channels, num_styles)

    def forward(self, x: Tensor, style: Tensor | None = None) -> Tensor:
        y = torch.relu(self.in1(self.conv1(x), style))
        return x + self.in2(self.conv2(y), style)


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
        y = torch.relu(self.in1(self.conv1(x), style))
        y = torch.relu(self.in2(self.conv2(y), style))
        y = torch.relu(self.in3(self.conv3(y), style))
        for block in self.residual_blocks:
            y = block(y, style)
        y = torch.relu(self.in4(self.deconv1(y), style))
        y = torch.relu(self.in5(self.deconv2(y), style))
        return self.deconv3(y)
