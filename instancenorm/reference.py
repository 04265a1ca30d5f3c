"""Instance norm in plain torch: the oracle for every kernel test and for `styler check-grad`.

Same contract as the compiled ops (torch.ops.instancenorm.forward / backward), written for clarity, not speed.
Inputs are (N, C, *spatial); weight and bias are (C,), (N, C) or None. Run it in float64 for a reference.
"""

from __future__ import annotations

import torch
from torch import Tensor

from instancenorm.dtypes import stats_dtype


def _per_instance(param: Tensor | None, n: int, c: int, fill: float, like: Tensor) -> Tensor:
    """weight/bias as an (N, C) tensor: per-channel parameters are shared by every sample."""
    if param is None:
        return torch.full((n, c), fill, dtype=like.dtype, device=like.device)
    return param.to(like.dtype).expand(n, c)


def forward(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """Returns (y, mean, inv_std); mean and inv_std are (N, C), statistics over all spatial positions."""
    n, c = x.shape[:2]
    acc = x.to(stats_dtype(x.dtype)).flatten(2)
    mean = acc.mean(dim=2)
    var = (acc - mean[..., None]).square().mean(dim=2)  # biased, two-pass
    inv_std = torch.rsqrt(var + eps)
    xhat = (acc - mean[..., None]) * inv_std[..., None]
    y = xhat * _per_instance(weight, n, c, 1.0, acc)[..., None] + _per_instance(bias, n, c, 0.0, acc)[..., None]
    return y.reshape(x.shape).to(x.dtype), mean, inv_std


def moments(x: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor, Tensor]:
    """(mean, inv_std, var) per instance, (N, C), as forward computes them (var biased, two-pass)."""
    acc = x.to(stats_dtype(x.dtype)).flatten(2)
    mean = acc.mean(dim=2)
    var = (acc - mean[..., None]).square().mean(dim=2)
    return mean, torch.rsqrt(var + eps), var


def normalize_with_stats(
    x: Tensor, mean: Tensor, inv_std: Tensor, weight: Tensor | None = None, bias: Tensor | None = None
) -> Tensor:
    """y = (x - mean) * inv_std * weight + bias with given statistics, each (C,) or (N, C); differentiable in all."""
    n, c = x.shape[:2]
    acc = x.to(stats_dtype(x.dtype)).flatten(2)

    def per_plane(t: Tensor | None, fill: float) -> Tensor:
        return _per_instance(t, n, c, fill, acc)[..., None]

    y = (acc - per_plane(mean, 0.0)) * per_plane(inv_std, 1.0) * per_plane(weight, 1.0) + per_plane(bias, 0.0)
    return y.reshape(x.shape).to(x.dtype)


def backward(
    grad_output: Tensor, x: Tensor, mean: Tensor, inv_std: Tensor, weight: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Returns (dx, dweight, dbias) with dweight, dbias per instance, shape (N, C).

    dx = w * inv_std * (dy - mean(dy) - xhat * mean(dy * xhat)): the mean and the variance both depend on every
    element of the plane, so the derivative is not the per-element w * inv_std * dy.
    """
    n, c = x.shape[:2]
    acc = mean.dtype
    dy = grad_output.to(acc).flatten(2)
    xhat = (x.to(acc).flatten(2) - mean[..., None]) * inv_std[..., None]
    dweight = (dy * xhat).sum(dim=2)
    dbias = dy.sum(dim=2)
    w = _per_instance(weight, n, c, 1.0, mean)
    dx = (w * inv_std)[..., None] * (dy - dy.mean(dim=2, keepdim=True) - xhat * (dweight / dy.shape[2])[..., None])
    return dx.reshape(x.shape).to(x.dtype), dweight, dbias


def naive_backward(grad_output: Tensor, inv_std: Tensor, weight: Tensor | None) -> Tensor:
    """The per-element derivative some documents print, dx = w * inv_std * dy. It is wrong: it treats the mean and
    the variance as constants. Kept only so check-grad can show it disagrees with the numerical Jacobian."""
    n, c = grad_output.shape[:2]
    w = _per_instance(weight, n, c, 1.0, inv_std)
    scale = (w * inv_std).reshape(n, c, *([1] * (grad_output.dim() - 2)))
    return (grad_output.to(inv_std.dtype) * scale).to(grad_output.dtype)


def instance_norm(x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Autograd-capable reference (torch differentiates the plain ops above)."""
    return forward(x, weight, bias, eps)[0]
