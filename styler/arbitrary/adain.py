"""Adaptive instance normalization on the instancenorm kernels, and its float64 reference in plain torch.

AdaIN(x, s) = std(s) * (x - mean(x)) / std(x) + mean(s), per sample and channel: the instance-norm forward with a
per-sample affine whose weight is the painting's standard deviation and whose bias is its mean. The painting's
statistics come from the `moments` op, so a painting is reduced to two (N, C) tensors once and reused for every
photo; several paintings blend as a weighted sum of those statistics, which equals the same blend of their AdaIN
outputs (AdaIN is linear in the style's mean and std).

In a video (inference.statistics_in_use, video.steadiness.SteadyStatistics), the photo's features are normalized
with the statistics the video supplies for their layer, averaged over the frames, instead of each frame's own,
which would flicker: the `normalize_with_stats` op applies them with the same per-sample affine.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

import instancenorm
from styler.model.inference import active_statistics

EPS = 1e-5


@dataclass(frozen=True)
class StyleStatistics:
    """A painting's features reduced to per-channel statistics: mean and std, each (N, C), float32 or float64."""

    mean: Tensor
    std: Tensor

    def to(self, device: torch.device) -> StyleStatistics:
        return StyleStatistics(self.mean.to(device), self.std.to(device))


def style_statistics(features: Tensor, eps: float = EPS) -> StyleStatistics:
    """(N, C, H, W) features to their per-channel mean and sqrt(var + eps), by the kernels' `moments`.

    The statistics are targets, never trained through (moments refuses inputs that require grad): detached here.
    """
    mean, _, var = instancenorm.instance_moments(features.detach(), eps)
    return StyleStatistics(mean, (var + eps).sqrt())


def blend(statistics: Sequence[StyleStatistics], weights: Sequence[float]) -> StyleStatistics:
    """The weighted mix of several paintings' statistics (weights normalized to sum 1)."""
    if len(statistics) != len(weights) or not statistics:
        raise ValueError(f"{len(statistics)} statistics for {len(weights)} weights")
    total = float(sum(weights))
    mean = sum(w / total * s.mean for s, w in zip(statistics, weights, strict=True))
    std = sum(w / total * s.std for s, w in zip(statistics, weights, strict=True))
    assert isinstance(mean, Tensor) and isinstance(std, Tensor)
    return StyleStatistics(mean, std)


def adain(
    content: Tensor, style: StyleStatistics, strength: float = 1.0, eps: float = EPS, layer: Hashable | None = None
) -> Tensor:
    """The photo's features `content` (N, C, H, W) with the style's per-channel statistics (N or 1, C).

    strength is AdaIN's alpha: a blend in feature space between the photo's own features (0) and the transferred
    ones (1). Differentiable in `content` and in the statistics (the instance-norm kernel's autograd). `layer` names
    the features for a video's steady statistics (see above); without it, or outside a video, content's own are used.
    """
    weight, bias = style.std.to(content.dtype), style.mean.to(content.dtype)
    if weight.shape[0] != content.shape[0]:  # one painting for a batch of photos
        weight, bias = weight.expand(content.shape[0], -1), bias.expand(content.shape[0], -1)
    steady = active_statistics() if layer is not None else None
    if steady is not None:
        mean, inv_std = steady.of(layer, content, eps)
        transferred = instancenorm.normalize_with_stats(content, mean, inv_std, weight.contiguous(), bias.contiguous())
    else:
        transferred = instancenorm.instance_norm(content, weight.contiguous(), bias.contiguous(), eps)
    return transferred if strength == 1.0 else torch.lerp(content, transferred, strength)


def reference_adain(
    content: Tensor,
    style_features: Tensor,
    strength: float = 1.0,
    eps: float = EPS,
    content_statistics: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """AdaIN in float64 plain torch, from the painting's features themselves: the oracle for the tests.
    content_statistics: the (mean, var), each (N, C), to normalize content with instead of its own (a video's)."""
    x, s = content.double(), style_features.double()
    if content_statistics is None:
        x_mean, x_var = x.mean((2, 3), keepdim=True), x.var((2, 3), unbiased=False, keepdim=True)
    else:
        x_mean, x_var = (value.double()[..., None, None] for value in content_statistics)
    s_mean, s_var = s.mean((2, 3), keepdim=True), s.var((2, 3), unbiased=False, keepdim=True)
    transferred = (x - x_mean) / (x_var + eps).sqrt() * (s_var + eps).sqrt() + s_mean
    return strength * transferred + (1 - strength) * x


def adain_layers(
    features: dict[str, Tensor], styles: dict[str, StyleStatistics], strength: float = 1.0
) -> dict[str, Tensor]:
    """AdaIN at every layer of `features`, each with the style's statistics at that layer (and in a video with the
    steady statistics of that layer's features), in the features' own dtype: the kernels accumulate in float32
    whatever it is, and a bfloat16 network is spared two conversions per layer."""
    return {layer: adain(value, styles[layer], strength, layer=layer) for layer, value in features.items()}
