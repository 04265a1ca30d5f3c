"""nn modules on the compiled kernels: drop-in InstanceNorm1d/2d, conditional instance norm, AdaIN."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.instancenorm import _InstanceNorm

from instancenorm.ops import forward_op, instance_norm


class _KernelInstanceNorm(_InstanceNorm):
    """torch.nn's _InstanceNorm (constructor, parameters, state_dict keys, forward with its input checks, num_features
    check and unbatched inputs) with our kernel inside: only _apply_instance_norm, the F.instance_norm call, is ours.

    Running statistics follow torch: in training they move towards the batch average of each instance's mean and
    unbiased variance; in eval with track_running_stats=True the input is normalized with them instead.
    """

    def _apply_instance_norm(self, input: Tensor) -> Tensor:
        use_input_stats = self.training or not self.track_running_stats
        n, c = input.shape[:2]
        if self.running_mean is not None and c != self.running_mean.numel():
            # torch.instance_norm repeats the running statistics over the batch and hands them to batch_norm.
            raise RuntimeError(f"running_mean should contain {n * c} elements not {n * self.running_mean.numel()}")
        if use_input_stats:
            F._verify_spatial_size(input.size())  # type: ignore[attr-defined]  # private, not in torch's functional.pyi
        else:
            # Fixed per-channel statistics: an affine map, which is exactly what batch_norm in eval computes.
            return F.batch_norm(
                input, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        y, mean, _, var, _ = forward_op(input, self.weight, self.bias, self.eps)
        if self.running_mean is not None:
            self._update_running_stats(mean, var, spatial=math.prod(input.shape[2:]))
        return y

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, var: Tensor, spatial: int) -> None:
        # As torch.nn.InstanceNorm*: momentum=None means 0 (no update) and num_batches_tracked is never advanced. An
        # empty batch averages to NaN, as torch's does.
        assert self.running_mean is not None and self.running_var is not None  # only called when tracking
        factor = 0.0 if self.momentum is None else self.momentum
        unbiased = var * (spatial / max(spatial - 1, 1))
        self.running_mean.lerp_(mean.mean(dim=0).to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased.mean(dim=0).to(self.running_var.dtype), factor)


class InstanceNorm1d(_KernelInstanceNorm, nn.InstanceNorm1d):
    """Drop-in for torch.nn.InstanceNorm1d: input (N, C, L) or (C, L)."""


class InstanceNorm2d(_KernelInstanceNorm, nn.InstanceNorm2d):
    """Drop-in for torch.nn.InstanceNorm2d: input (N, C, H, W) or (C, H, W), NCHW or channels_last."""


class ConditionalInstanceNorm2d(nn.Module):
    """Instance norm with one (scale, bias) pair per style (Dumoulin et al. 2017, "A learned representation for
    artistic style").

    forward(x, style): style is an int or a LongTensor (N,) of style indices, or a float tensor of mixing weights,
    (num_styles,) for the whole batch or (N, num_styles) per sample; mixing weights blend the styles' parameters.
    """

    def __init__(self, num_features: int, num_styles: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features, self.num_styles, self.eps = num_features, num_styles, eps
        self.weight = nn.Parameter(torch.ones(num_styles, num_features))
        self.bias = nn.Parameter(torch.zeros(num_styles, num_features))

    def forward(self, x: Tensor, style: int | Tensor) -> Tensor:
        return instance_norm(x, *self.style_affine(style, x.shape[0]), self.eps)

    def style_affine(self, style: int | Tensor, batch: int) -> tuple[Tensor, Tensor]:
        """The (weight, bias) pair, each (batch, num_features), that forward() normalizes with."""
        style = torch.as_tensor(style, device=self.weight.device)
        if style.is_floating_point():
            mix = style.to(self.weight.dtype).expand(batch, self.num_styles)
            return mix @ self.weight, mix @ self.bias
        index = style.expand(batch)
        return self.weight[index], self.bias[index]

    def extra_repr(self) -> str:
        return f"{self.num_features}, num_styles={self.num_styles}, eps={self.eps}"


def adaptive_instance_norm(
    content: Tensor, style_or_stats: Tensor | tuple[Tensor, Tensor], eps: float = 1e-5
) -> Tensor:
    """AdaIN (Huang & Belongie 2017): normalize content per instance, then give it the style's per-channel statistics.

    style_or_stats is a style feature map (N or 1, C, *spatial) or a (mean, std) pair of shape (N, C) or (C,).
    The style statistics stay differentiable; the content goes through the compiled kernel with per-sample affine.
    """
    if isinstance(style_or_stats, tuple):
        mean, std = style_or_stats
    else:
        flat = style_or_stats.flatten(2)
        mean = flat.mean(dim=2)
        std = (flat.var(dim=2, unbiased=False) + eps).sqrt()
    n, c = content.shape[:2]
    return instance_norm(content, std.expand(n, c), mean.expand(n, c), eps)
