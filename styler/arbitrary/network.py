"""The encoder (ImageNet VGG16 up to one layer) and the decoder that mirrors it (Huang & Belongie 2017).

CONTENT_LAYER is the one place the cut is chosen: the encoder runs no deeper, AdaIN works there, and the decoder's
layers are derived from the VGG16 layers above it, in reverse: each convolution mirrored (its channels swapped),
each max-pooling replaced by a nearest-neighbour upsampling, every convolution reflection-padded (zero padding
draws a frame at the border). `width` scales the decoder's inner channels: half width costs a quarter of the
arithmetic of the paper's decoder.
"""

from __future__ import annotations

from torch import Tensor, nn

from styler.vgg16 import VGG16Features

CONTENT_LAYER = "relu4_1"
# The style loss compares the output's statistics with the painting's at these layers (Huang & Belongie's choice).
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", CONTENT_LAYER)


class Encoder(nn.Module):
    """VGG16Features cut after CONTENT_LAYER; frozen. Reads 0..255 RGB."""

    def __init__(self, state_dict: dict[str, Tensor] | None = None) -> None:
        """state_dict: VGG16Features' weights (load_vgg16_weights); None leaves random weights (tests)."""
        super().__init__()
        self.vgg = VGG16Features(state_dict)
        self.vgg.layers = self.vgg.layers[: VGG16Features.RELU_INDEX[CONTENT_LAYER] + 1]
        self.requires_grad_(False).eval()

    def forward(self, images: Tensor, layers: tuple[str, ...] = (CONTENT_LAYER,)) -> dict[str, Tensor]:
        return self.vgg(images, layers)

    def channels(self) -> int:
        convolutions = [layer for layer in self.vgg.layers if isinstance(layer, nn.Conv2d)]
        return convolutions[-1].out_channels


def decoder_plan(width: float) -> list[tuple[int, int] | None]:
    """The decoder's steps: (in, out) channels of a convolution, None for an upsampling. The encoder's layers
    reversed; the first convolution reads the encoder's channels and the last writes RGB, the inner widths scaled."""
    steps: list[tuple[int, int] | None] = []
    for layer in Encoder().vgg.layers:
        if isinstance(layer, nn.Conv2d):
            steps.append((layer.out_channels, layer.in_channels))
        elif isinstance(layer, nn.MaxPool2d):
            steps.append(None)
    steps.reverse()
    convolutions = [index for index, step in enumerate(steps) if step is not None]
    plan: list[tuple[int, int] | None] = []
    for index, step in enumerate(steps):
        if step is None:
            plan.append(None)
            continue
        c_in, c_out = step
        plan.append(
            (
                c_in if index == convolutions[0] else max(1, round(c_in * width)),
                c_out if index == convolutions[-1] else max(1, round(c_out * width)),
            )
        )
    return plan


class Decoder(nn.Module):
    """Features at CONTENT_LAYER back to a 0..255 RGB image twice per upsampling the size of the feature map."""

    def __init__(self, width: float = 0.5) -> None:
        super().__init__()
        self.width = width
        layers: list[nn.Module] = []
        plan = decoder_plan(width)
        for index, step in enumerate(plan):
            if step is None:
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
                continue
            layers += [nn.ReflectionPad2d(1), nn.Conv2d(*step, kernel_size=3)]
            if index < len(plan) - 1:  # the last convolution writes the image: no ReLU
                layers.append(nn.ReLU(inplace=True))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: Tensor) -> Tensor:
        # Centred on mid-grey so that a fresh decoder starts near the middle of the pixel range.
        return (self.layers(features) + 0.5) * 255.0

    @property
    def size_multiple(self) -> int:
        """The photo's sides are padded to a multiple of this: the encoder's poolings halve them this many times."""
        return 2 ** sum(isinstance(layer, nn.Upsample) for layer in self.layers)
