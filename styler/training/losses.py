"""Perceptual losses (Johnson et al. 2016) and distillation from trained teachers.

The features come from a loss network (`FeatureNetwork`): VGG16 (vgg16.py) or fixed random filters
(random_features.py), both reading images in 0..255 as the transformer network writes them. Gram matrices are
divided by C*H*W, so their size does not depend on the image size. With VGG16 the losses are plain mean squared
errors with pytorch/examples' weights; with random features each loss is divided by the squared size of its
target, so every layer and scale counts alike and the weights read as ratios.

Every loss is a mean of per-image values, so the mean over a batch split across processes (DDP) is the same number.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from styler.training.config import LossWeights


def gram_matrix(features: Tensor) -> Tensor:
    """(N, C, H, W) to (N, C, C) feature correlations divided by C*H*W, computed in float32 even under autocast
    (the sums over H*W overflow float16)."""
    with torch.autocast(features.device.type, enabled=False):
        return _GramMatrix.apply(features.float())


def _is_channels_last(x: Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class _GramMatrix(torch.autograd.Function):
    """G = F Fᵀ / (C·H·W) read in the features' own layout (no copy), with a one-product backward
    dF = (dG + dGᵀ) F / (C·H·W): autograd's generic bmm backward takes two products plus transposing copies, and
    a random-feature training step takes twelve of these."""

    @staticmethod
    def forward(ctx, features: Tensor) -> Tensor:
        ctx.save_for_backward(features)
        n, c, h, w = features.shape
        if _is_channels_last(features):
            rows = features.permute(0, 2, 3, 1).reshape(n, h * w, c)
            return torch.bmm(rows.transpose(1, 2), rows) / (c * h * w)
        columns = features.reshape(n, c, h * w)
        return torch.bmm(columns, columns.transpose(1, 2)) / (c * h * w)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (features,) = ctx.saved_tensors
        n, c, h, w = features.shape
        symmetric = (grad + grad.transpose(1, 2)) / (c * h * w)
        if _is_channels_last(features):
            rows = features.permute(0, 2, 3, 1).reshape(n, h * w, c)
            return torch.bmm(rows, symmetric).reshape(n, h, w, c).permute(0, 3, 1, 2)
        return torch.bmm(symmetric, features.reshape(n, c, h * w)).reshape(n, c, h, w)


def total_variation(images: Tensor) -> Tensor:
    """Mean squared difference of neighbouring pixels (0..1 scale), per image, averaged: penalises speckle."""
    pixels = images.float() / 255.0
    vertical = (pixels[..., 1:, :] - pixels[..., :-1, :]).square().flatten(1).mean(1)
    horizontal = (pixels[..., :, 1:] - pixels[..., :, :-1]).square().flatten(1).mean(1)
    return (vertical + horizontal).mean()


class FeatureNetwork(Protocol):
    """What the losses need of a loss network (VGG16Features, RandomFeatureNetwork): a frozen nn.Module, so it moves
    with the loss that holds it, mapping images to named feature maps."""

    content_layers: tuple[str, ...]  # the maps the content loss compares
    style_layers: tuple[str, ...]  # the maps whose Gram matrices the style loss compares, in this order
    relative_losses: bool  # each loss divided by its target's squared size instead of a plain mean squared error

    def __call__(self, images: Tensor, layers: tuple[str, ...] | None = None) -> dict[str, Tensor]:
        """The named feature maps of (N, 3, H, W) images in 0..255: `layers`, default all the network has."""


# ----------------------------------------------------------------------------------------------- the loss


@dataclass
class LossTerms:
    """Weighted loss terms of one batch; total = content + style + tv + color."""

    content: Tensor
    style: Tensor
    tv: Tensor
    color: Tensor | None = None  # None: the loss has no colour term

    @property
    def total(self) -> Tensor:
        total = self.content + self.style + self.tv
        return total if self.color is None else total + self.color

    def as_floats(self) -> dict[str, float]:
        terms = {"content": self.content, "style": self.style, "tv": self.tv}
        if self.color is not None:
            terms["color"] = self.color
        values = dict(zip(terms, torch.stack(list(terms.values())).detach().float().cpu().tolist(), strict=True))
        return values | {"total": sum(values.values())}


class ColorDistribution(nn.Module):
    """How far an output's colours are from a painting's, as a distribution: the sliced Wasserstein-2 distance
    (Rabin et al. 2011) between the output's pixels and the painting's, in RGB 0..1. Gram matrices of VGG features
    say little about which colours, and how much of each: without this term the outputs kept the photo's palette
    under the painting's texture. Each step projects PIXELS random pixels of each output and the painting's fixed
    sample of as many on `directions` random unit vectors and compares the sorted projections (the 1-D optimal
    transport); sampling keeps it cheap (sorting every pixel cost a third of a step) and its noise averages out
    over steps like the photos' own."""

    PIXELS = 4096
    painting_pixels: Tensor  # (styles, PIXELS, 3), a buffer

    def __init__(self, style_images: list[Tensor], directions: int = 16) -> None:
        """style_images: (1, 3, H, W) tensors in 0..255, one per style index."""
        super().__init__()
        self.directions = directions
        generator = torch.Generator().manual_seed(0)
        samples = []
        for image in style_images:
            pixels = image.float().flatten(2)[0].t() / 255.0  # (H*W, 3)
            samples.append(pixels[torch.randint(len(pixels), (self.PIXELS,), generator=generator)])
        self.register_buffer("painting_pixels", torch.stack(samples))  # (styles, PIXELS, 3)

    def forward(self, output: Tensor, style: int) -> Tensor:
        """Per image of (N, 3, H, W) 0..255 output: the mean squared difference of the sorted projections."""
        with torch.autocast(output.device.type, enabled=False):
            n, pixels_per_image = output.shape[0], output.shape[2] * output.shape[3]
            chosen = torch.randint(pixels_per_image, (n, self.PIXELS), device=output.device)
            pixels = output.float().flatten(2).gather(2, chosen.unsqueeze(1).expand(n, 3, -1)) / 255.0  # (N, 3, P)
            directions = torch.randn(self.directions, 3, device=output.device)
            directions = directions / directions.norm(dim=1, keepdim=True)
            ours = (directions @ pixels).sort(dim=-1).values  # (N, directions, P)
            theirs = (directions @ self.painting_pixels[style].t()).sort(dim=-1).values  # (directions, P)
            return (ours - theirs).square().mean((1, 2))


def _total(losses: Iterable[Tensor]) -> Tensor:
    """The losses added up: sum() without its start value 0, so the result is always a Tensor."""
    return functools.reduce(operator.add, losses)


def _squared_error(output: Tensor, target: Tensor, relative: bool) -> Tensor:
    """Per image: mean squared error, or squared error divided by the target's squared size ("relative")."""
    per_image = tuple(range(1, output.dim()))  # summed in place: flatten() would copy channels-last maps
    difference = (output.float() - target.float()).square()
    if not relative:
        return difference.mean(per_image)
    return difference.sum(per_image) / target.float().square().sum(per_image).clamp_min(1e-12)


class FeatureLoss(nn.Module):
    """The perceptual loss terms of an output against content features and Gram matrices from a loss network;
    the subclasses say where those targets come from (the photo and a painting, or a teacher's output)."""

    def __init__(self, network: FeatureNetwork, weights: LossWeights) -> None:
        super().__init__()
        self.network = network
        self.weights = weights

    def terms(
        self, output: Tensor, content_features: dict[str, Tensor], style_grams: list[Tensor], style_scale: float
    ) -> LossTerms:
        """The weighted terms against content features and Gram matrices (each of batch 1, or one per image)."""
        relative = self.network.relative_losses
        # With style weight 0 (reconstruction, e.g. to make an --init network) the style features are not computed:
        # with random features that is 10 of the 12 maps and every Gram matrix.
        style_weight = self.weights.style * style_scale
        wants_style = style_weight != 0
        output_features = self.network(output, None if wants_style else self.network.content_layers)
        content_loss = _total(
            _squared_error(output_features[layer], content_features[layer], relative).mean()
            for layer in self.network.content_layers
        )
        style_loss = output.new_zeros(())
        if wants_style:
            style_loss = _total(
                _squared_error(
                    gram_matrix(output_features[layer]), target.expand(output.shape[0], -1, -1), relative
                ).mean()
                for layer, target in zip(self.network.style_layers, style_grams, strict=True)
            )
        return LossTerms(
            content=self.weights.content * content_loss,
            style=style_weight * style_loss,
            tv=self.weights.tv * total_variation(output),
        )


class PerceptualLoss(FeatureLoss):
    """Content, style and total-variation losses of a transformer network's output, for one or more styles."""

    def __init__(self, network: FeatureNetwork, style_images: list[Tensor], weights: LossWeights) -> None:
        """style_images: (1, 3, H, W) tensors in 0..255, one per style index (sizes may differ)."""
        super().__init__(network, weights)
        self.colors = ColorDistribution(style_images) if weights.color else None
        with torch.no_grad():
            per_style = [network(image) for image in style_images]
            for index, layer in enumerate(network.style_layers):
                self.register_buffer(
                    f"gram{index}", torch.cat([gram_matrix(features[layer]) for features in per_style])
                )

    def style_grams(self, style: int) -> list[Tensor]:
        return [getattr(self, f"gram{index}")[style : style + 1] for index in range(len(self.network.style_layers))]

    def forward(self, output: Tensor, content: Tensor, style: int = 0, style_scale: float = 1.0) -> LossTerms:
        """output: the network's result for `content`; both (N, 3, H, W) in 0..255. style: the style index.
        style_scale: a factor on the style weight (training's content-first ramp)."""
        with torch.no_grad():
            content_features = self.network(content, self.network.content_layers)
        terms = self.terms(output, content_features, self.style_grams(style), style_scale)
        if self.colors is not None:  # a painting's palette is part of its style: it follows the style ramp
            terms.color = self.weights.color * style_scale * self.colors(output, style).mean()
        return terms


def _teacher_outputs(teachers: nn.ModuleList, content: Tensor, style: int) -> Tensor:
    with torch.no_grad():
        return teachers[style](content).clamp(0, 255)


class FeatureDistillationLoss(FeatureLoss):
    """Distillation through the loss network: the student's output against a trained teacher's output for the same
    photo, in the loss network's content features and in each image's own Gram matrices. A small student cannot
    copy its teacher's strokes pixel for pixel, and a pixel loss then averages them away into a blur; matched as
    texture statistics they survive. The teacher's output, not the painting, is the style target, so the student
    is never pulled towards statistics it can only fake (docs/training.md)."""

    def __init__(self, network: FeatureNetwork, teachers: list[nn.Module], weights: LossWeights) -> None:
        super().__init__(network, weights)
        self.teachers = nn.ModuleList(teachers).requires_grad_(False).eval()

    def forward(self, output: Tensor, content: Tensor, style: int = 0, style_scale: float = 1.0) -> LossTerms:
        target = _teacher_outputs(self.teachers, content, style)
        with torch.no_grad():
            features = self.network(target)
            grams = [gram_matrix(features[layer]) for layer in self.network.style_layers]
        return self.terms(output, features, grams, style_scale)


class DistillationLoss(nn.Module):
    """Knowledge distillation: the student's output against trained teachers' outputs for the same photo, one
    teacher per style index. The teachers carry the style, so no loss network runs: a step costs one teacher forward
    and the student's forward and backward."""

    def __init__(self, teachers: list[nn.Module], weights: LossWeights) -> None:
        super().__init__()
        self.teachers = nn.ModuleList(teachers).requires_grad_(False).eval()
        self.weights = weights

    def forward(self, output: Tensor, content: Tensor, style: int = 0, style_scale: float = 1.0) -> LossTerms:
        target = _teacher_outputs(self.teachers, content, style)
        difference = _squared_error(output / 255.0, target / 255.0, relative=False)  # per image, 0..1 scale
        return LossTerms(
            content=self.weights.content * difference.mean(),
            style=output.new_zeros(()),
            tv=self.weights.tv * total_variation(output),
        )
