"""The encoder (ImageNet VGG16 up to one layer) and the decoder that mirrors it (Huang & Belongie 2017).

CONTENT_LAYER is the one place the cut is chosen: the encoder runs no deeper, AdaIN works there, and the decoder's
layers are derived from the VGG16 layers above it, in reverse: each convolution mirrored (its channels swapped),
each max-pooling replaced by a nearest-neighbour upsampling, every convolution reflection-padded (zero padding
draws a frame at the border). `width` scales the decoder's inner channels: half width costs a quarter of the
arithmetic of the paper's decoder.

Skips (coarse to fine, after Li et al. 2017's several levels, here in one decoder): the decoder may also read the
photo's features at shallower layers, each given the painting's statistics by AdaIN like the deepest, projected by
a 1x1 convolution and added where its upsampling reaches that layer's resolution. relu4_1 alone has to be inverted
from an eighth of the photo's resolution, which a decoder learns slowly (the relief-like pictures of 2,000 CPU
steps); the shallower levels hand it the photo's outlines and the painting's finer statistics at their own scale.
The projections start at zero, so a decoder without skips is the same network with them switched off.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from styler.vgg16 import VGG16_LAYOUT, VGG16Features, relu_activations, vgg16_layers

CONTENT_LAYER = "relu4_1"
# The style loss compares the output's statistics with the painting's at these layers (Huang & Belongie's choice).
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", CONTENT_LAYER)
# The layer at each resolution the decoder passes through: index k is 1/2**k of the photo's size.
LEVEL_LAYERS = ("relu1_1", "relu2_1", "relu3_1")


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


class SmallEncoder(nn.Module):
    """VGG16's layout up to CONTENT_LAYER with `width` of its channels, distilled from it (distill.py), with a head
    per layer in LAYERS: a 1x1 convolution and ReLU back to VGG16's channels there. Its features stand in for
    VGG16's (AdaIN, the decoder and the painting's statistics see the same channels) at 1/width**2 less arithmetic
    in the trunk; the heads run on the pooled resolutions and add little. Reads 0..255 RGB; frozen once trained."""

    # The layers the shipped decoder reads. relu1_1 is left out: a full-resolution head and loss for a skip no decoder
    # uses would double the distillation's step (the style loss measures with VGG16 itself, not with this encoder).
    LAYERS = ("relu2_1", "relu3_1", CONTENT_LAYER)

    def __init__(self, width: float) -> None:
        super().__init__()
        if not 0 < width <= 1:
            raise ValueError(f"encoder width {width}: must be in (0, 1]")
        self.width = width
        self.layers = vgg16_layers(width)[: VGG16Features.RELU_INDEX[CONTENT_LAYER] + 1]
        narrow = {name: _conv(self.layers[VGG16Features.RELU_INDEX[name] - 1]).out_channels for name in self.LAYERS}
        self.heads = nn.ModuleDict(
            {
                name: nn.Sequential(nn.Conv2d(narrow[name], _channels_at(name), kernel_size=1), nn.ReLU())
                for name in self.LAYERS
            }
        )

    def head(self, layer: str) -> nn.Conv2d:
        """The 1x1 convolution of `layer`'s head."""
        head = self.heads[layer]
        assert isinstance(head, nn.Sequential)
        return _conv(head[0])

    def forward(self, images: Tensor, layers: tuple[str, ...] = (CONTENT_LAYER,)) -> dict[str, Tensor]:
        return {name: self.heads[name](narrow) for name, narrow in self.trunk(images, layers).items()}

    def trunk(self, images: Tensor, layers: tuple[str, ...]) -> dict[str, Tensor]:
        """The narrow features at `layers`, before their heads."""
        return relu_activations(self.layers, images, layers)


def decoder_plan(width: float) -> list[tuple[int, int] | None]:
    """The decoder's steps: (in, out) channels of a convolution, None for an upsampling. The encoder's layers
    reversed; the first convolution reads the encoder's channels and the last writes RGB, the inner widths scaled."""
    steps: list[tuple[int, int] | None] = []
    channels = 3
    for layout in VGG16_LAYOUT[: _layout_index(CONTENT_LAYER) + 1]:  # from the layout: building VGG16 costs 40 ms
        if isinstance(layout, int):
            steps.append((layout, channels))
            channels = layout
        else:
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
    """Features at CONTENT_LAYER (and at `skips`, see above) back to a 0..255 RGB image."""

    def __init__(self, width: float = 0.5, skips: tuple[str, ...] = ()) -> None:
        super().__init__()
        unknown = set(skips) - set(LEVEL_LAYERS)
        if unknown:
            raise ValueError(f"decoder skips must be among {LEVEL_LAYERS}, not {sorted(unknown)}")
        self.width = width
        self.skips = tuple(layer for layer in LEVEL_LAYERS if layer in skips)  # one order, whatever was given
        layers: list[nn.Module] = []
        plan = decoder_plan(width)
        level = plan.count(None)
        self.projections = nn.ModuleDict()
        channels = {layer: _channels_at(layer) for layer in LEVEL_LAYERS}
        for index, step in enumerate(plan):
            if step is None:
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
                level -= 1
                if LEVEL_LAYERS[level] in self.skips:
                    decoder_channels = next(s for s in plan[index:] if s is not None)[0]
                    projection = nn.Conv2d(channels[LEVEL_LAYERS[level]], decoder_channels, kernel_size=1)
                    for parameter in projection.parameters():
                        nn.init.zeros_(parameter)
                    self.projections[LEVEL_LAYERS[level]] = projection
                continue
            layers += [nn.ReflectionPad2d(1), nn.Conv2d(*step, kernel_size=3)]
            if index < len(plan) - 1:  # the last convolution writes the image: no ReLU
                layers.append(nn.ReLU(inplace=True))
        self.layers = nn.Sequential(*layers)

    @property
    def inputs(self) -> tuple[str, ...]:
        """The encoder layers this decoder reads (the AdaIN targets it needs)."""
        return (CONTENT_LAYER, *self.skips)

    def forward(self, features: Tensor | dict[str, Tensor]) -> Tensor:
        """features: the AdaIN'd CONTENT_LAYER features, or a dict of them at `inputs` (autocast picks the dtype)."""
        if isinstance(features, Tensor):
            features = {CONTENT_LAYER: features}
        x = features[CONTENT_LAYER].contiguous(memory_format=torch.channels_last)
        level = self.size_exponent
        for layer in self.layers:
            x = layer(x)
            if isinstance(layer, nn.Upsample):
                level -= 1
                name = LEVEL_LAYERS[level]
                if name in self.projections:
                    x = x + self.projections[name](features[name].contiguous(memory_format=torch.channels_last))
        # Centred on mid-grey so that a fresh decoder starts near the middle of the pixel range; in float32, where
        # bfloat16 would round 0..255 to whole levels (or coarser) before the result is rounded to bytes.
        return (x.float() + 0.5) * 255.0

    @property
    def size_exponent(self) -> int:
        return sum(isinstance(layer, nn.Upsample) for layer in self.layers)

    @property
    def size_multiple(self) -> int:
        """The photo's sides are padded to a multiple of this: the encoder's poolings halve them this many times."""
        return 2**self.size_exponent


def _layout_index(layer: str) -> int:
    """relu{k}_{j}'s position in VGG16_LAYOUT: the j-th convolution after k - 1 poolings."""
    block, index = int(layer[4]) - 1, int(layer[6]) - 1
    positions = [i for i, step in enumerate(VGG16_LAYOUT) if step == "M"]
    return (positions[block - 1] + 1 if block else 0) + index


def _conv(module: nn.Module) -> nn.Conv2d:
    assert isinstance(module, nn.Conv2d)
    return module


def _channels_at(layer: str) -> int:
    """VGG16's channels at a ReLU layer, read from its layout (not by building it, which would draw from the random
    generator)."""
    channels = VGG16_LAYOUT[_layout_index(layer)]
    assert isinstance(channels, int)
    return channels
