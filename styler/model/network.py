"""The feed-forward transformer network: Johnson et al. 2016 with Ulyanov et al.'s instance normalization.

Layer and parameter names follow pytorch/examples fast_neural_style (conv1.conv2d.weight, in1.weight, res1.conv1...,
deconv1..3), so its published `.pth` models load unchanged. Like those models, the network maps pixel values in
0..255 to pixel values in (roughly) 0..255.

Its shape is an Architecture (architecture.py); with several styles `forward(x, style)` picks or blends them. Outside
autograd the layers take the in-place and banded paths of inference.py.
"""

from __future__ import annotations

from torch import Tensor, nn

import instancenorm
from styler.model.architecture import ARCHITECTURES, Architecture
from styler.model.inference import banded_conv, inference_in_place, normalize


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


class ConvLayer(nn.Module):
    """Reflection padding then a convolution, so borders see mirrored content instead of zeros."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, upsample: int = 1):
        super().__init__()
        self.upsample_factor = upsample
        self.upsample = nn.Upsample(scale_factor=upsample, mode="nearest") if upsample > 1 else nn.Identity()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: Tensor) -> Tensor:
        if inference_in_place():
            return banded_conv(self, x)
        return self.conv2d(self.reflection_pad(self.upsample(x)))


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
        return y.add_(x) if inference_in_place() else x + y


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
