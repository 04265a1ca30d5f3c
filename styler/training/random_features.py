"""The loss network for machines without ImageNet weights: one layer of fixed random filters.

128 each of 3x3, 5x5, 7x7 and 11x11 filters applied at full, 1/2 and 1/4 resolution. Random-feature Gram matrices
carry colour and texture (Ustyuzhaninov et al. 2016; He, Wang & Hopcroft 2016) but not the large coherent shapes
VGG features do. Images in 0..255 are normalized as VGG16's are, so both networks see the same input.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from styler.vgg16 import imagenet_normalize

RANDOM_KERNEL_SIZES = (3, 5, 7, 11)
RANDOM_SCALES = (1, 2, 4)  # full, 1/2 and 1/4 resolution


class RandomFeatureNetwork(nn.Module):
    """One layer of fixed random filters, ReLU, at three resolutions: 12 feature maps of 128 channels.

    Filters are uniform(-1, 1)/sqrt(fan_in) from a fixed seed. `calibrate()` then gives each filter, at each
    resolution, the scale and offset that make its response over the calibration images mean 0 and std 1 before the
    ReLU, so every filter is half active and no size or scale dominates the Gram matrices.
    """

    KERNEL_SIZES = RANDOM_KERNEL_SIZES
    FILTERS = 128
    SCALES = RANDOM_SCALES
    content_layers: tuple[str, ...] = ("3x3@1", "5x5@1")
    style_layers: tuple[str, ...] = tuple(f"{k}x{k}@{s}" for s in RANDOM_SCALES for k in RANDOM_KERNEL_SIZES)
    relative_losses = True
    # Smallest image side: the 11x11 filters at 1/4 resolution need 11 pixels there.
    min_size = max(KERNEL_SIZES) * max(SCALES)
    gain: Tensor  # buffers (scale, kernel, filter), set by calibrate()
    offset: Tensor

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        for k in self.KERNEL_SIZES:
            fan_in = 3 * k * k
            weight = (torch.rand(self.FILTERS, 3, k, k, generator=generator) * 2 - 1) / math.sqrt(fan_in)
            self.register_buffer(f"weight{k}", weight)
        shape = (len(self.SCALES), len(self.KERNEL_SIZES), self.FILTERS)
        self.register_buffer("gain", torch.ones(shape))
        self.register_buffer("offset", torch.zeros(shape))

    def _responses(self, images: Tensor, layers: tuple[str, ...] | None = None):
        """(scale index, kernel index, name, pre-ReLU response with the calibration applied) for each wanted map.

        Channels-last throughout: oneDNN's convolutions from 3 channels and the Gram matrices of their 128-channel
        outputs run faster so on the CPU, and this network dominates a step.
        """
        x = imagenet_normalize(images).contiguous(memory_format=torch.channels_last)
        for s, scale in enumerate(self.SCALES):
            names = {k: f"{size}x{size}@{scale}" for k, size in enumerate(self.KERNEL_SIZES)}
            if layers is not None and not set(names.values()) & set(layers):
                continue
            scaled = F.avg_pool2d(x, scale) if scale > 1 else x
            for k, size in enumerate(self.KERNEL_SIZES):
                if layers is not None and names[k] not in layers:
                    continue
                weight = getattr(self, f"weight{size}") * self.gain[s, k].view(-1, 1, 1, 1)
                weight = weight.to(scaled.dtype).contiguous(memory_format=torch.channels_last)
                yield s, k, names[k], F.conv2d(scaled, weight, self.offset[s, k].to(scaled.dtype))

    def forward(self, images: Tensor, layers: tuple[str, ...] | None = None) -> dict[str, Tensor]:
        """The named ReLU feature maps (`layers`, default all twelve)."""
        return {name: torch.relu(response) for _, _, name, response in self._responses(images, layers)}

    @torch.no_grad()
    def calibrate(self, images: list[Tensor]) -> None:
        """Set gain and offset from (1, 3, H, W) images in 0..255 (content and style photos, any sizes)."""
        self.gain.fill_(1.0)
        self.offset.zero_()
        total = torch.zeros(self.gain.shape, dtype=torch.float64)
        squares = torch.zeros_like(total)
        count = torch.zeros(self.gain.shape[:2], dtype=torch.float64)
        for image in images:
            for s, k, _, response in self._responses(image.to(self.gain.device, torch.float32)):
                values = response.double().transpose(0, 1).flatten(1)  # (filters, positions)
                total[s, k] += values.sum(1).cpu()
                squares[s, k] += values.square().sum(1).cpu()
                count[s, k] += values.shape[1]
        mean = total / count.unsqueeze(-1)
        std = (squares / count.unsqueeze(-1) - mean.square()).clamp_min(1e-12).sqrt()
        self.gain.copy_(1.0 / std)
        self.offset.copy_(-mean / std)
