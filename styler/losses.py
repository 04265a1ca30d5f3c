"""Perceptual losses (Johnson et al. 2016) and the two loss networks that supply their features.

- `VGG16Features`: torchvision's VGG16 convolutional layers up to relu4_3 with ImageNet weights, read from
  torchvision's own cache or a file the user names; content at relu2_2, style at relu1_2/2_2/3_3/4_3.
- `RandomFeatureNetwork`: one layer of fixed random filters (128 each of 3x3, 5x5, 7x7, 11x11) applied at full,
  1/2 and 1/4 resolution, for machines without ImageNet weights. Random-feature Gram matrices carry colour and
  texture (Ustyuzhaninov et al. 2016; He, Wang & Hopcroft 2016) but not the large coherent shapes VGG features do.

Both take images in 0..255 (what the transformer network reads and writes) and normalize them with ImageNet's mean
and std. Gram matrices are divided by C*H*W, so their size does not depend on the image size. With VGG16 the losses
are plain mean squared errors with pytorch/examples' weights; with random features each loss is divided by the
squared size of its target, so every layer and scale counts alike and the weights read as ratios.

Every loss is a mean of per-image values, so the mean over a batch split across processes (DDP) is the same number.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from styler.errors import StylerError
from styler.train_config import LossWeights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalize(images: Tensor) -> Tensor:
    """0..255 RGB to the inputs ImageNet-trained networks expect."""
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images / 255.0 - mean) / std


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


# ----------------------------------------------------------------------------------------------- VGG16


class VGG16Features(nn.Module):
    """torchvision's vgg16().features up to relu4_3, frozen; forward returns the four named activations."""

    content_layers: tuple[str, ...] = ("relu2_2",)
    style_layers: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
    LAYER_INDEX = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22}
    relative_losses = False

    def __init__(self, state_dict: dict[str, Tensor] | None = None) -> None:
        """state_dict: torchvision vgg16 keys ("features.0.weight", ...); None leaves random weights (tests)."""
        super().__init__()
        from torchvision.models import vgg

        self.layers = vgg.make_layers(vgg.cfgs["D"])[: self.LAYER_INDEX["relu4_3"] + 1]
        if state_dict is not None:
            self.layers.load_state_dict(state_dict)
        self.requires_grad_(False).eval()

    def forward(self, images: Tensor, layers: tuple[str, ...] | None = None) -> dict[str, Tensor]:
        """The named activations (`layers`, default all four), computing no deeper than the deepest of them."""
        wanted = {self.LAYER_INDEX[name]: name for name in layers or self.LAYER_INDEX}
        features = {}
        x = imagenet_normalize(images)
        for index, layer in enumerate(self.layers[: max(wanted) + 1]):
            x = layer(x)
            if index in wanted:
                features[wanted[index]] = x
        return features


def torchvision_vgg16_file() -> Path:
    """Where torchvision keeps (or would download) its ImageNet VGG16 weights."""
    from torchvision.models import VGG16_Weights

    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]


def load_vgg16_weights(path: Path | None) -> tuple[dict[str, Tensor], Path]:
    """The feature-layer weights of a torchvision vgg16 state_dict, or of the file `styler weights vgg16` writes, and
    the file they came from: `path`, else that converted file, else torchvision's cache (vgg_weights.find). Missing
    or unusable weights are one StylerError line saying how to get them."""
    from styler.files import foreign_file_kind, load_failure
    from styler.vgg_weights import FORMAT, find_vgg16_weights

    source = find_vgg16_weights(path)
    expected_kind = "a VGG16 weights file (a torchvision vgg16 state_dict or `styler weights vgg16`'s output)"
    try:
        contents = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for bytes that are not a state_dict
        reason = foreign_file_kind(source) or load_failure(error)[:120]
        raise StylerError(f"{source}: not {expected_kind}: {reason}") from None
    if isinstance(contents, dict) and contents.get("format") == FORMAT:
        contents = contents.get("state_dict")
    if not isinstance(contents, dict):
        raise StylerError(f"{source}: not {expected_kind}")
    expected = VGG16Features().layers.state_dict()
    layers = {
        key.removeprefix("features."): value
        for key, value in contents.items()
        if isinstance(key, str) and key.startswith("features.")
    }
    layers = {key: value for key, value in layers.items() if key in expected}
    wrong = [
        key
        for key in expected
        if key not in layers or not isinstance(layers[key], Tensor) or layers[key].shape != expected[key].shape
    ]
    if wrong:
        raise StylerError(f"{source}: not {expected_kind} (missing or misshapen features.{wrong[0]})")
    return {key: value.float() for key, value in layers.items()}, source


# ----------------------------------------------------------------------------------------------- random features


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
    is never pulled towards statistics it can only fake (with the painting as target a `lite` network answered with
    a checkerboard)."""

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
