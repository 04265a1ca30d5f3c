"""torch.library wiring of the compiled kernels: fake (meta) implementations, and the Python entry points.

The kernels themselves are registered from C++: csrc/bindings.cpp defines the schemas, each backend file its
implementation, and csrc/autograd.cpp the backward of `forward` and the version bumps and autograd refusals of the
inference ops (in C++ because a Python wrapper's fixed cost per call is a large share of a small call, see there).
Here they learn to run under torch.compile / FakeTensor.

forward_op(input, weight, bias, eps) returns (y, mean, inv_std, var, mean_lo): mean + mean_lo is the mean to twice
the statistics' precision (pass mean_lo to backward_op to keep a large-offset gradient as exact as the forward), var
the biased variance. The *_op names are the handles of the ops instancenorm::forward, backward, normalize_,
normalize_out, and of the forward's two phases alone: moments (the statistics) and normalize_with_stats (applying
given ones) with its in-place and out= flavours.
"""

from __future__ import annotations

import torch
from torch import Tensor

from instancenorm.dtypes import stats_dtype

forward_op = torch.ops.instancenorm.forward.default
backward_op = torch.ops.instancenorm.backward.default
normalize_op_ = torch.ops.instancenorm.normalize_.default
normalize_out_op = torch.ops.instancenorm.normalize_out.default
moments_op = torch.ops.instancenorm.moments.default
normalize_with_stats_op = torch.ops.instancenorm.normalize_with_stats.default
normalize_with_stats_op_ = torch.ops.instancenorm.normalize_with_stats_.default
normalize_with_stats_out_op = torch.ops.instancenorm.normalize_with_stats_out.default


def is_channels_last(x: Tensor) -> bool:
    """(N, *spatial, C) in memory, size-1 dims ignored; mirrors the C++ layout choice."""
    expected = x.shape[1]
    for size, stride in zip(reversed(x.shape[2:]), reversed(x.stride()[2:]), strict=True):
        if size != 1 and stride != expected:
            return False
        expected *= size
    return (x.shape[1] == 1 or x.stride(1) == 1) and (x.shape[0] == 1 or x.stride(0) == expected)


def _like_kernel_output(x: Tensor) -> Tensor:
    """The kernels write NC* and N*C inputs in place of layout and make anything else contiguous."""
    if x.is_contiguous() or is_channels_last(x):
        return torch.empty_like(x)
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


@torch.library.register_fake("instancenorm::forward")
def _forward_fake(input: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float):
    stats = [input.new_empty(input.shape[:2], dtype=stats_dtype(input.dtype)) for _ in range(4)]
    return _like_kernel_output(input), *stats


@torch.library.register_fake("instancenorm::backward")
def _backward_fake(
    grad_output: Tensor,
    input: Tensor,
    mean: Tensor,
    inv_std: Tensor,
    weight: Tensor | None,
    mean_lo: Tensor | None = None,
):
    # The kernel allocates fresh contiguous (N, C) gradients whatever mean's strides are.
    return _like_kernel_output(input), mean.new_empty(mean.shape), mean.new_empty(mean.shape)


@torch.library.register_fake("instancenorm::normalize_")
def _normalize_fake(input: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> None:
    return None


@torch.library.register_fake("instancenorm::normalize_out")
def _normalize_out_fake(input: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, *, out: Tensor) -> None:
    return None


@torch.library.register_fake("instancenorm::moments")
def _moments_fake(input: Tensor, eps: float):
    return tuple(input.new_empty(input.shape[:2], dtype=stats_dtype(input.dtype)) for _ in range(3))


@torch.library.register_fake("instancenorm::normalize_with_stats")
def _normalize_with_stats_fake(
    input: Tensor, mean: Tensor, inv_std: Tensor, weight: Tensor | None, bias: Tensor | None
) -> Tensor:
    return _like_kernel_output(input)


@torch.library.register_fake("instancenorm::normalize_with_stats_")
def _normalize_with_stats_inplace_fake(
    input: Tensor, mean: Tensor, inv_std: Tensor, weight: Tensor | None, bias: Tensor | None
) -> None:
    return None


@torch.library.register_fake("instancenorm::normalize_with_stats_out")
def _normalize_with_stats_out_fake(
    input: Tensor, mean: Tensor, inv_std: Tensor, weight: Tensor | None, bias: Tensor | None, *, out: Tensor
) -> None:
    return None


def instance_norm(
    input: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
    *,
    out: Tensor | None = None,
) -> Tensor:
    """Instance normalization over every dim after (N, C), with weight/bias of shape (C,) or (N, C).

    Differentiable in input, weight and bias; the output keeps the input's memory format (NCHW or channels_last).
    With out (for inference, not differentiable), the result is written into that tensor and returned: it must have
    the input's shape, dtype, device and memory format, and be the input itself or not overlap it. Reusing one
    buffer saves allocating (and page-faulting in) an output per call.
    """
    if out is None:
        return forward_op(input, weight, bias, eps)[0]
    normalize_out_op(input, weight, bias, eps, out=out)
    return out


def instance_norm_(
    input: Tensor, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5
) -> Tensor:
    """In-place instance_norm for inference: overwrites input (contiguous or channels_last) and returns it.

    Saves allocating an output the size of the input, which for large activations costs more than the arithmetic.
    Not differentiable: refuses an argument that requires grad while autograd is recording, and bumps input's
    version, so a graph that saved input fails in backward as after any in-place op.
    """
    normalize_op_(input, weight, bias, eps)
    return input


def instance_moments(input: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor, Tensor]:
    """(mean, inv_std, var) of every instance, each (N, C): instance_norm's statistics, without its output.

    Float32 for float16/bfloat16/float32 input, float64 for float64, accumulated as the forward does (exact for
    constant channels, no cancellation for large offsets). var is biased; inv_std = 1 / sqrt(var + eps). Not
    differentiable: refuses an input that requires grad while autograd is recording (pass input.detach()).
    """
    return moments_op(input, eps)


def normalize_with_stats(
    input: Tensor,
    mean: Tensor,
    inv_std: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    *,
    out: Tensor | None = None,
) -> Tensor:
    """y = (input - mean) * inv_std * weight + bias, with given statistics instead of the input's own.

    mean, inv_std, weight and bias are (C,) or (N, C) (weight/bias optional); e.g. statistics averaged over the
    frames of a video, so each frame is normalized alike. Differentiable in all five, the statistics as inputs; the
    output keeps the input's memory format. With out (for inference, not differentiable), the rules of
    instance_norm's out= apply. normalize_with_stats(x, *instance_moments(x)[:2], w, b) is instance_norm(x, w, b),
    up to the rounding of the mean to its dtype (the forward keeps the rest, which matters for large offsets).
    """
    if out is None:
        return normalize_with_stats_op(input, mean, inv_std, weight, bias)
    normalize_with_stats_out_op(input, mean, inv_std, weight, bias, out=out)
    return out


def normalize_with_stats_(
    input: Tensor, mean: Tensor, inv_std: Tensor, weight: Tensor | None = None, bias: Tensor | None = None
) -> Tensor:
    """In-place normalize_with_stats for inference: overwrites input (contiguous or channels_last) and returns it.

    Not differentiable, and bumps input's version, as instance_norm_.
    """
    normalize_with_stats_op_(input, mean, inv_std, weight, bias)
    return input
