"""The compiled ops against the float64 reference, on every kernel path, on CPU and (when present) CUDA."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import REPOSITORY  # tests/helpers.py (pytest puts tests/ on sys.path)

import instancenorm
from instancenorm import reference
from instancenorm.dtypes import stats_dtype
from instancenorm.testing import CHECK_CASES, Case

cuda_only = pytest.mark.skipif(
    "cuda" not in instancenorm.usable_devices(), reason="needs a GPU and instancenorm built with CUDA"
)
DEVICES = ["cpu", pytest.param("cuda", marks=cuda_only)]

# Error bounds per dtype, relative to the output's scale: the rounding of the type itself, with room for sums.
TOLERANCE = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}


CASES = [
    Case("nchw", (2, 3, 5, 7)),
    Case("channels_last", (2, 3, 5, 7), channels_last=True),
    Case("per_sample_affine", (3, 4, 6, 5), affine="sample"),
    Case("per_sample_affine_cl", (3, 4, 6, 5), channels_last=True, affine="sample"),
    Case("no_affine", (2, 4, 9, 9), affine="none"),
    Case("hw_1", (4, 6, 1, 1)),
    Case("hw_1_cl", (4, 6, 1, 1), channels_last=True),
    Case("sequence_3d", (3, 5, 33)),
    Case("sequence_3d_cl", (3, 5, 33), channels_last=True),
    Case("volume_5d", (2, 3, 4, 5, 6)),
    Case("large_offset", (2, 3, 16, 16), offset=1e4),
    Case("large_offset_cl", (2, 3, 16, 16), channels_last=True, offset=1e4),
    Case("tiny_scale", (2, 3, 8, 8), scale=1e-3),
    # Few big planes: the CPU kernel splits a plane across threads and merges partial moments.
    Case("split_planes", (1, 3, 160, 150), affine="sample"),
    Case("split_rows_cl", (1, 19, 100, 90), channels_last=True),
    # Many tiny planes and a channel count that is not a multiple of the SIMD width.
    Case("many_planes", (16, 37, 3, 5)),
    Case("wide_channels_cl", (2, 2100, 2, 3), channels_last=True),
    # NHWC over several row chunks (merged per channel), with a partial channel vector and with a large offset.
    Case("row_chunks_cl", (2, 40, 30, 30), channels_last=True, affine="sample"),
    Case("large_offset_row_chunks_cl", (1, 5, 120, 100), channels_last=True, offset=1e4),
]


def ids(cases):
    return [c.name for c in cases]


def output_scale(case: Case, dtype: torch.dtype) -> float:
    """Error bound of a normalized output: the type's own, plus the rounding of a large mean kept in the stats
    type (float32 for every input but float64), amplified by 1/std."""
    stats_roundoff = 1.2e-16 if dtype == torch.float64 else 6e-8
    return TOLERANCE[dtype] + 4 * abs(case.offset) / case.scale * stats_roundoff


def assert_close(actual, expected, tol):
    torch.testing.assert_close(actual.to(expected.dtype), expected, atol=tol, rtol=tol, equal_nan=True)


# ---------- forward ----------


def _test_forward(device: str, dtype: torch.dtype, case: Case) -> None:
    x, w, b, _ = case.make(device, dtype)
    y, mean, inv_std, var, mean_lo = torch.ops.instancenorm.forward(x, w, b, 1e-5)
    x64, w64, b64 = (None if t is None else t.double() for t in (x, w, b))
    y_ref, mean_ref, inv_std_ref = reference.forward(x64, w64, b64, 1e-5)
    var_ref = _planes(x64).var(dim=2, unbiased=False)
    # The CPU kernel normalizes with the mean as a float pair (hi + lo): large offsets cost it no accuracy.
    tol = TOLERANCE[dtype] if device == "cpu" else output_scale(case, dtype)
    assert y.dtype == dtype and y.shape == x.shape and y.stride() == x.stride()
    assert mean.dtype == inv_std.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert_close(mean, mean_ref, TOLERANCE[torch.float32] * (1 + abs(case.offset)) if dtype != torch.float64 else 1e-10)
    assert_close(inv_std, inv_std_ref, 1e-4 if dtype != torch.float64 else 1e-10)
    # The pair holds the mean with the error of sums of deviations from it, relative to the spread, not to the offset.
    # (The float64 reference's own sum carries its rounding relative to the offset.)
    pair_tol = (1e-12 if dtype == torch.float64 else 1e-6) * case.scale + 2.0**-50 * abs(case.offset)
    torch.testing.assert_close(mean.double() + mean_lo.double(), mean_ref, atol=pair_tol, rtol=0, equal_nan=True)
    assert var.dtype == mean.dtype
    torch.testing.assert_close(var.double(), var_ref, rtol=1e-5 if dtype != torch.float64 else 1e-10, atol=0)
    assert_close(y, y_ref, tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_forward_matches_reference(device, dtype, case):
    _test_forward(device, dtype, case)


# ---------- backward ----------


def _planes(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(*t.shape[:2], -1)


# Gradient error bounds, element by element, from how the kernels compute: every sum and product in the accumulation
# type (float32, or float64 for float64 inputs) from inputs converted exactly, and dx rounded once to the input dtype
# at the end; dweight and dbias are returned in the accumulation type. So against the float64 reference
#   |dx - ref| <= u(dtype) * |ref| + (ACC_DX * scale_dx) * (1 + u(dtype)) + subnormal step of dtype
#   scale_dx    = |w| * inv_std * (|dy| + mean|dy| + |x̂| * mean|dy x̂|)   (the terms dx is made of)
#   |dw - ref| <= ACC_SUM * (1 + log2 M) * Σ|dy x̂|,   |db - ref| <= ACC_SUM * (1 + log2 M) * Σ|dy|
# with u the unit roundoff of the dtype and ACC_* those of test_kernel_properties.py's Tolerance for the
# accumulation type (2-5x the largest error of 5000 random problems). The float64 reference's own x - mean is
# relative to |mean|: REFERENCE * |mean| * inv_std more for dx.
UNIT_ROUNDOFF = {torch.float64: 2.0**-53, torch.float32: 2.0**-24, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
ACC_DX = {torch.float64: 1.5e-15, torch.float32: 6e-7}
ACC_SUM = {torch.float64: 8e-16, torch.float32: 2.5e-7}
REFERENCE = 16 * 2.0**-53


def gradient_bounds(dtype, x64, dy64, w64, mean64, inv_std64):
    """(dx, dweight, dbias) bounds for the float64 reference computed from these float64 values."""
    acc = stats_dtype(dtype)
    n, c = x64.shape[:2]
    xhat = ((_planes(x64) - mean64[..., None]) * inv_std64[..., None]).abs()
    dy = _planes(dy64).abs()
    w = (torch.ones(n, c, dtype=torch.float64) if w64 is None else w64.expand(n, c)).abs()
    scale_dx = (w * inv_std64)[..., None] * (
        dy + dy.mean(dim=2, keepdim=True) + xhat * (dy * xhat).mean(dim=2, keepdim=True)
    )
    dx_abs = scale_dx * (ACC_DX[acc] * (1 + UNIT_ROUNDOFF[dtype]) + REFERENCE * (mean64.abs() * inv_std64)[..., None])
    info = torch.finfo(dtype)
    sums = 1 + math.log2(max(1, _planes(x64).shape[2]))
    return (
        lambda ref: (UNIT_ROUNDOFF[dtype] * _planes(ref).abs() + dx_abs + info.tiny * info.eps).reshape(ref.shape),
        ACC_SUM[acc] * sums * (dy * xhat).sum(dim=2),
        ACC_SUM[acc] * sums * dy.sum(dim=2),
    )


def assert_gradients_within(grads, refs, bounds) -> None:
    for name, got, ref, bound in zip(("dx", "dweight", "dbias"), grads, refs, bounds, strict=True):
        limit = bound(ref) if callable(bound) else bound
        err = (got.double().cpu() - ref).abs()
        worst = (err - limit).flatten().argmax()
        assert (err <= limit).all(), (
            f"{name}: error {err.flatten()[worst].item():.3g} over the bound {limit.flatten()[worst].item():.3g} "
            f"(value {ref.flatten()[worst].item():.6g})"
        )


def _backward_and_reference(device: str, dtype: torch.dtype, case: Case):
    """The backward op on the statistics the forward returned (mean as its float pair), and the float64 reference
    on those same statistics, with the bounds for them."""
    x, w, b, dy = case.make(device, dtype)
    _, mean, inv_std, _, mean_lo = torch.ops.instancenorm.forward(x, w, b, 1e-5)
    grads = torch.ops.instancenorm.backward(dy, x, mean, inv_std, w, mean_lo)
    x64, dy64, w64 = x.double().cpu(), dy.double().cpu(), None if w is None else w.double().cpu()
    mean64, inv_std64 = mean.double().cpu() + mean_lo.double().cpu(), inv_std.double().cpu()
    refs = reference.backward(dy64, x64, mean64, inv_std64, w64)
    return x, grads, refs, gradient_bounds(dtype, x64, dy64, w64, mean64, inv_std64)


def _test_backward(device: str, dtype: torch.dtype, case: Case) -> None:
    x, grads, refs, bounds = _backward_and_reference(device, dtype, case)
    dx, dw, db = grads
    assert dx.stride() == x.stride() and dw.shape == db.shape == x.shape[:2] and dx.dtype == dtype
    assert_gradients_within(grads, refs, bounds)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_backward_matches_reference(device, dtype, case):
    _test_backward(device, dtype, case)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_gradient_bounds_reject_a_one_percent_error(dtype):
    """No vacuous bounds: dx, dweight or dbias 1 % off, or dx by the naive per-element formula, fails the check on
    every case where that gradient is not zero."""
    for case in CASES:
        _, grads, refs, bounds = _backward_and_reference("cpu", dtype, case)
        assert_gradients_within(grads, refs, bounds)
        for k, name in enumerate(("dx", "dweight", "dbias")):
            if not refs[k].any():  # e.g. dx and dweight of 1x1 planes
                continue
            wrong = list(grads)
            wrong[k] = (grads[k].double() * 1.01).to(grads[k].dtype)
            with pytest.raises(AssertionError, match=name):
                assert_gradients_within(wrong, refs, bounds)
        x_, w, _, dy = case.make("cpu", dtype)
        _, _, inv_std, _, _ = torch.ops.instancenorm.forward(x_, w, None, 1e-5)
        naive = reference.naive_backward(dy, inv_std, w)
        if not torch.equal(naive, grads[0]):
            with pytest.raises(AssertionError, match="dx"):
                assert_gradients_within((naive, *grads[1:]), refs, bounds)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("offset", [1e4, -3e3])
def test_backward_is_exact_against_float64_statistics(device, channels_last, offset):
    """The gradient of a plane far from zero, x = offset + 0.01 * noise, through autograd, against the float64
    reference on the float64 statistics of the same values: the backward gets the mean as the forward's float pair,
    so it is as exact as the forward (with the mean rounded to float32 it was 1e-3 off)."""
    case = Case("t", (2, 3, 16, 16), channels_last=channels_last, affine="sample", offset=offset, scale=1e-2)
    x, w, b, dy = case.make(device, torch.float32)
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    grads = torch.autograd.grad(instancenorm.instance_norm(*leaves), leaves, dy)
    x64, w64, dy64 = x.double().cpu(), w.double().cpu(), dy.double().cpu()
    _, mean64, inv_std64 = reference.forward(x64, w64, None, 1e-5)
    refs = reference.backward(dy64, x64, mean64, inv_std64, w64)
    bounds = gradient_bounds(torch.float32, x64, dy64, w64, mean64, inv_std64)
    assert_gradients_within(grads, refs, bounds)  # w, b are (N, C): their gradients are the per-instance ones


@pytest.mark.parametrize("device", DEVICES)
def test_backward_accepts_gradient_in_another_layout(device):
    x, w, b, dy = Case("cl", (2, 5, 6, 7), channels_last=True).make(device, torch.float32)
    _, mean, inv_std, _, _ = torch.ops.instancenorm.forward(x, w, b, 1e-5)
    dx_nchw_grad = torch.ops.instancenorm.backward(dy.contiguous(), x, mean, inv_std, w)[0]
    dy_cl = dy.contiguous(memory_format=torch.channels_last)
    dx_cl_grad = torch.ops.instancenorm.backward(dy_cl, x, mean, inv_std, w)[0]
    torch.testing.assert_close(dx_nchw_grad, dx_cl_grad)


# ---------- autograd through the public function ----------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CHECK_CASES, ids=[f"{c.name}-{c.layout}" for c in CHECK_CASES])
def test_gradcheck(device, case):
    x, w, b, _ = case.make(device, torch.float64)
    inputs = [t.requires_grad_() for t in (x, w, b) if t is not None]
    fn = (lambda x, w, b: instancenorm.instance_norm(x, w, b)) if w is not None else instancenorm.instance_norm
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_gradients_match_torch_instance_norm(device):
    x, w, b, dy = Case("t", (3, 8, 12, 10)).make(device, torch.float32)
    grads = []
    for fn in (instancenorm.instance_norm, lambda x, w, b: F.instance_norm(x, weight=w, bias=b)):
        leaves = [t.clone().requires_grad_() for t in (x, w, b)]
        y = fn(*leaves)
        grads.append((y, *torch.autograd.grad(y, leaves, dy)))
    for ours, theirs in zip(*grads, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


# The affine parameters given ("w", "b"), and which of the given ones are trained: the C++ autograd numbers only the
# tensors passed, so an absent weight moves the bias's slot, and a frozen parameter must get no gradient.
AFFINE_GRAD_CASES = [("wb", "b"), ("wb", "w"), ("wb", ""), ("b", "b"), ("w", "w"), ("", "")]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("given", "trained"), AFFINE_GRAD_CASES, ids=lambda s: s or "none")
def test_gradients_with_absent_or_frozen_affine(device, given, trained):
    x, w, b, dy = Case("t", (2, 3, 5, 4)).make(device, torch.float64)
    w, b = (w if "w" in given else None), (b if "b" in given else None)
    for name, t in (("w", w), ("b", b)):
        if t is not None and name in trained:
            t.requires_grad_()
    x.requires_grad_()
    leaves = [t for t in (x, w, b) if t is not None and t.requires_grad]
    grads = torch.autograd.grad(instancenorm.instance_norm(x, w, b), leaves, dy)
    expected = torch.autograd.grad(reference.forward(x, w, b, 1e-5)[0], leaves, dy)
    for ours, ref in zip(grads, expected, strict=True):
        torch.testing.assert_close(ours, ref, atol=1e-10, rtol=1e-10)
    assert all(t is None or t.grad is None for t in (x, w, b))


@pytest.mark.parametrize("device", DEVICES)
def test_gradient_of_gradient_is_refused(device):
    """create_graph=True gives the first-order gradient (a gradient penalty can build on it); differentiating it
    again fails with a clear error instead of silently returning zeros."""
    x, w, b, _ = Case("t", (2, 3, 5, 4)).make(device, torch.float64)
    leaves = [t.requires_grad_() for t in (x, w, b)]
    (dx,) = torch.autograd.grad(instancenorm.instance_norm(*leaves).square().sum(), x, create_graph=True)
    (dx_ref,) = torch.autograd.grad(reference.forward(*leaves, 1e-5)[0].square().sum(), x)
    torch.testing.assert_close(dx, dx_ref, atol=1e-10, rtol=1e-10)
    with pytest.raises(RuntimeError, match="double backward"):
        dx.square().sum().backward()


class _DropGradient(torch.autograd.Function):
    """Identity whose backward passes no gradient on, as a layer that cuts the graph may."""

    @staticmethod
    def forward(ctx, y):
        return y.clone()

    @staticmethod
    def backward(ctx, grad):
        return None


def test_output_receiving_no_gradient():
    x, w, b, _ = Case("t", (2, 3, 5, 4)).make("cpu", torch.float64)
    leaves = [t.requires_grad_() for t in (x, w, b)]
    loss = _DropGradient.apply(instancenorm.instance_norm(*leaves)).sum() + x.sum()
    dx, dw, db = torch.autograd.grad(loss, leaves, allow_unused=True, materialize_grads=True)
    torch.testing.assert_close(dx, torch.ones_like(x))
    assert not dw.any() and not db.any()


def test_naive_per_element_derivative_is_wrong():
    x, w, b, dy = Case("t", (2, 3, 4, 4)).make("cpu", torch.float64)
    _, mean, inv_std = reference.forward(x, w, b, 1e-5)
    exact = reference.backward(dy, x, mean, inv_std, w)[0]
    naive = reference.naive_backward(dy, inv_std, w)
    assert (exact - naive).abs().max() > 0.1


# ---------- opcheck and torch.compile ----------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[3], CASES[7]], ids=lambda c: c.name)
def test_opcheck(device, case):
    x, w, b, dy = case.make(device, torch.float32)
    x.requires_grad_()
    w.requires_grad_()
    torch.library.opcheck(torch.ops.instancenorm.forward.default, (x, w, b, 1e-5))
    _, mean, inv_std, _, mean_lo = torch.ops.instancenorm.forward(x.detach(), w.detach(), b, 1e-5)
    torch.library.opcheck(torch.ops.instancenorm.backward.default, (dy, x.detach(), mean, inv_std, w.detach(), mean_lo))
    # Statistics in any layout: the gradients still come back as fresh contiguous (N, C) tensors, as the fake says.
    mean_t = mean.t().contiguous().t()
    assert not mean_t.is_contiguous()
    torch.library.opcheck(torch.ops.instancenorm.backward.default, (dy, x.detach(), mean_t, inv_std, w.detach()))


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_full_graph(device):
    torch._dynamo.reset()
    layer = instancenorm.InstanceNorm2d(4, affine=True).to(device)
    conv = torch.nn.Conv2d(3, 4, 3).to(device)

    def net(x):
        return torch.relu(layer(conv(x))).sum()

    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 3, 10, 10, device=device, requires_grad=True)
    loss_eager, loss_compiled = net(x), compiled(x)
    torch.testing.assert_close(loss_compiled, loss_eager)
    (g_eager,) = torch.autograd.grad(loss_eager, x)
    (g_compiled,) = torch.autograd.grad(loss_compiled, x)
    torch.testing.assert_close(g_compiled, g_eager)


# ---------- edge cases ----------


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch(device):
    x = torch.randn(0, 3, 4, 4, device=device, requires_grad=True)
    w = torch.ones(3, device=device, requires_grad=True)
    y = instancenorm.instance_norm(x, w)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad.shape == x.shape and torch.equal(w.grad, torch.zeros(3, device=device))


@pytest.mark.parametrize("device", DEVICES)
def test_empty_spatial_gives_nan_statistics(device):
    y, *stats = torch.ops.instancenorm.forward(torch.randn(2, 3, 0, 4, device=device), None, None, 1e-5)
    assert y.shape == (2, 3, 0, 4) and all(s.isnan().all() for s in stats)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_and_inf_stay_in_their_plane(device, channels_last, bad):
    x, w, b, _ = Case("t", (2, 3, 8, 8), channels_last=channels_last).make(device, torch.float32)
    x = x.clone()
    x[1, 2, 3, 4] = bad
    y = torch.ops.instancenorm.forward(x, w, b, 1e-5)[0]
    assert y[1, 2].isnan().all()
    clean = torch.ones_like(y, dtype=torch.bool)
    clean[1, 2] = False
    assert y[clean].isfinite().all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("value", [0.0, 0.1, 1e4 + 0.3, -7e6])
def test_constant_channel_gives_exactly_bias(device, channels_last, dtype, value):
    x, w, b, _ = Case("t", (2, 3, 40, 60), channels_last=channels_last, affine="sample").make(device, dtype)
    x = x.clone()
    x[:, 1] = value
    y, mean, _, var, mean_lo = torch.ops.instancenorm.forward(x, w, b, 1e-5)
    assert torch.equal(y[:, 1], b[:, 1, None, None].expand_as(y[:, 1]))
    assert torch.equal(mean[:, 1], torch.full_like(mean[:, 1], torch.tensor(value, dtype=dtype).item()))
    assert not var[:, 1].any() and not mean_lo[:, 1].any()  # exactly 0, not a rounding residue


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_tiny_values_with_zero_eps(device, channels_last):
    """With eps = 0 a plane of values near 1e-20 has a variance near 1e-40, below float32's smallest normal number:
    flushing it to zero (as CUDA's fast math does) would call the plane constant and make its output infinite."""
    x = torch.tensor([1.0, -1.0, 3.0, -3.0, 2.0, -2.0], dtype=torch.float64).repeat(2, 4, 1).view(2, 4, 2, 3) * 1e-20
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x32 = x.float().to(device).contiguous(memory_format=memory_format)
    y, _, inv_std, _, _ = torch.ops.instancenorm.forward(x32, None, None, 0.0)
    y_ref, _, inv_std_ref = reference.forward(x32.double(), None, None, 0.0)
    # Subnormal squares keep ~5 significant digits (their step is 1.4e-45).
    assert_close(inv_std, inv_std_ref, 1e-4)
    assert_close(y, y_ref, 1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_inputs(device):
    base = torch.randn(3, 10, 12, 9, device=device)
    views = {
        "sliced": base[:, ::2, 1:, :],
        "transposed_hw": base.transpose(2, 3),
        "expanded": torch.randn(1, 4, 5, 6, device=device).expand(3, 4, 5, 6),
    }
    w = torch.randn(base.shape[1], device=device)
    for name, view in views.items():
        weight = w[: view.shape[1]]
        y = instancenorm.instance_norm(view, weight)
        y_ref = reference.instance_norm(view.double(), weight.double())
        torch.testing.assert_close(y.double(), y_ref, atol=2e-5, rtol=1e-5, msg=name)


def test_result_does_not_depend_on_thread_count():
    x, w, b, dy = Case("t", (1, 3, 200, 170), affine="sample").make("cpu", torch.float32)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            y, mean, inv_std, _, mean_lo = torch.ops.instancenorm.forward(x, w, b, 1e-5)
            results.append((y, *torch.ops.instancenorm.backward(dy, x, mean, inv_std, w, mean_lo)))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b_ in zip(results[0], other, strict=True):
            torch.testing.assert_close(a, b_, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "args, message",
    [
        ((torch.randn(3, 4), None, None), "at least 3 dims"),
        ((torch.randint(0, 5, (2, 3, 4)), None, None), "float32, float64"),
        ((torch.randn(2, 3, 4), torch.ones(4), None), r"shape \(C,\)"),
        ((torch.randn(2, 3, 4), None, torch.ones(3, 2)), r"\(N, C\)"),
    ],
)
def test_bad_arguments_raise_clear_errors(args, message):
    with pytest.raises(RuntimeError, match=message):
        torch.ops.instancenorm.forward(*args, 1e-5)


def test_import_reports_devices():
    assert "cpu" in instancenorm.compiled_devices
    assert set(instancenorm.usable_devices()) <= set(instancenorm.compiled_devices)


STREAMED_CASES = [
    # An odd plane size leaves planes (and the blocks they are split into) off the vector alignment, so the unaligned
    # heads and tails are written too.
    Case("streamed_nchw", (1, 3, 1531, 917)),
    # 32 channels fill whole vectors, so every row is streamed; one sample is split into blocks of rows.
    Case("streamed_channels_last", (1, 32, 365, 361), channels_last=True),
]


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    """code in a fresh interpreter started in the repository root (so it imports this checkout's instancenorm): for
    what must not change this process (malloc settings, the CPU variant) or may crash it."""
    root = REPOSITORY
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=root,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


# Run in a child process: keep_freed_memory() changes malloc's settings for the rest of the process it runs in.
STREAMED_CHILD = "INSTANCENORM_TEST_STREAMED_CHILD"


def test_streamed_outputs_match_reference():
    """The CPU kernels write an output of 16 MiB or more with streaming stores once its memory is mapped in, which
    with malloc keeping freed memory is from the second call on."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"{__file__}::test_streamed_in_this_process"],
        cwd=REPOSITORY,
        env={**os.environ, STREAMED_CHILD: "1"},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0 and f"{len(STREAMED_CASES)} passed" in result.stdout, result.stdout + result.stderr


@pytest.mark.skipif(not os.environ.get(STREAMED_CHILD), reason="run by test_streamed_outputs_match_reference")
@pytest.mark.parametrize("case", STREAMED_CASES, ids=ids(STREAMED_CASES))
def test_streamed_in_this_process(case):
    from styler.memory import keep_freed_memory

    keep_freed_memory()
    x, w, b, _ = case.make("cpu", torch.float32)
    assert x.nbytes >= 16 << 20
    with torch.inference_mode():  # in place is never streamed, and does the same arithmetic
        normalized_in_place = instancenorm.instance_norm_(x.clone(), w, b)
    for _ in range(3):
        torch.testing.assert_close(instancenorm.instance_norm(x, w, b), normalized_in_place, atol=0, rtol=0)
        _test_forward("cpu", torch.float32, case)
        _test_backward("cpu", torch.float32, case)
    # A buffer the caller has filled is mapped in whatever malloc does: out= streams into it on the first call.
    out = torch.full_like(x, float("nan"))
    with torch.inference_mode():
        torch.testing.assert_close(instancenorm.instance_norm(x, w, b, out=out), normalized_in_place, atol=0, rtol=0)


def test_out_into_a_buffer_off_the_element_alignment():
    """A 16 MiB out= buffer whose address is not a multiple of 4 (torch.frombuffer at offset 1) is above the streaming
    threshold, but streaming stores need aligned addresses: it is written with ordinary stores, not crashed on. Run
    in a child process, since the failure is a segfault."""
    result = run_python("""
        import torch, instancenorm
        n = 4 * 1024 * 1024  # elements: 16 MiB of float32, the streaming threshold
        x = torch.randn(1, 4, 1024, 1024)
        expected = instancenorm.instance_norm(x)
        for offset in (1, 2, 4):
            out = torch.frombuffer(bytearray(4 * n + 8), dtype=torch.float32, offset=offset, count=n).view(x.shape)
            out.fill_(float("nan"))  # mapped in: the kernel streams only into resident pages
            assert out.data_ptr() % 4 == offset % 4
            instancenorm.instance_norm(x, out=out)
            assert torch.equal(out, expected), offset
            instancenorm.instance_norm_(out)
            assert torch.equal(out, instancenorm.instance_norm(expected)), offset
        print("ok")
    """)
    assert result.returncode == 0 and result.stdout.strip() == "ok", (result.returncode, result.stderr[-2000:])


# ---------- in place and into out=, for inference ----------

INFERENCE_CASES = [
    c for c in CASES if c.name in ("nchw", "per_sample_affine_cl", "split_planes", "split_rows_cl", "sequence_3d_cl")
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", INFERENCE_CASES, ids=ids(INFERENCE_CASES))
def test_in_place_matches_out_of_place(device, dtype, case):
    x, w, b, _ = case.make(device, dtype)
    expected = instancenorm.instance_norm(x, w, b)
    data_ptr, strides = x.data_ptr(), x.stride()
    with torch.inference_mode():
        out = instancenorm.instance_norm_(x, w, b)
    assert out is x and x.data_ptr() == data_ptr and x.stride() == strides
    torch.testing.assert_close(x, expected, atol=0, rtol=0)


def test_in_place_refuses_what_it_cannot_do():
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        instancenorm.instance_norm_(torch.randn(2, 3, 4, 4, requires_grad=True))
    with pytest.raises(RuntimeError, match="for inference"):  # a non-leaf: autograd would have to record it
        instancenorm.instance_norm_(torch.randn(2, 3, 4, 4, requires_grad=True) * 2)
    with pytest.raises(RuntimeError, match="for inference"):  # called as the op itself, not through ops.py
        torch.ops.instancenorm.normalize_(torch.randn(2, 3, 4, 4), torch.ones(3, requires_grad=True), None, 1e-5)
    with pytest.raises(RuntimeError, match="contiguous or channels_last"):
        instancenorm.instance_norm_(torch.randn(2, 3, 8, 8)[:, :, ::2])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", INFERENCE_CASES, ids=ids(INFERENCE_CASES))
def test_out_matches_out_of_place(device, case):
    x, w, b, _ = case.make(device, torch.float32)
    expected = instancenorm.instance_norm(x, w, b)
    out = torch.full_like(x, float("nan"))  # in x's memory format
    data_ptr = out.data_ptr()
    with torch.inference_mode():
        result = instancenorm.instance_norm(x, w, b, out=out)
        assert result is out and out.data_ptr() == data_ptr
        torch.testing.assert_close(out, expected, atol=0, rtol=0)
        in_place = x.clone()
        assert instancenorm.instance_norm(in_place, w, b, out=in_place) is in_place  # the input itself: in place
        torch.testing.assert_close(in_place, expected, atol=0, rtol=0)


def test_out_refuses_what_it_cannot_do():
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(RuntimeError, match="for inference"):
        instancenorm.instance_norm(x.clone().requires_grad_(), out=torch.empty_like(x))
    with pytest.raises(RuntimeError, match="for inference"):
        torch.ops.instancenorm.normalize_out(x, None, torch.zeros(3, requires_grad=True), 1e-5, out=torch.empty_like(x))
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        instancenorm.instance_norm(x, out=torch.empty_like(x, requires_grad=True))
    bad_outs = {
        "out must be a Float tensor of shape": [torch.empty(2, 3, 8, 7), torch.empty_like(x, dtype=torch.float64)],
        "memory format the input is read in": [torch.empty_like(x, memory_format=torch.channels_last)],
    }
    for message, outs in bad_outs.items():
        for out in outs:
            with pytest.raises(RuntimeError, match=message):
                instancenorm.instance_norm(x, out=out)
    rows = torch.randn(3, 3, 8, 8)
    with pytest.raises(RuntimeError, match="single memory location"):  # out overlaps part of the input
        instancenorm.instance_norm(rows[:2], out=rows[1:])


@pytest.mark.parametrize("how", ["in_place", "out"])
def test_writes_bump_the_version_so_a_graph_that_saved_the_tensor_refuses_backward(how):
    """As after torch's own in-place ops: the product saved a for its backward, which a later write makes wrong."""
    a, target = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    w = torch.randn(2, 3, 4, 4, requires_grad=True)
    written = a if how == "in_place" else target
    loss = (a * w).sum() + (target * w).sum()
    before = written._version
    if how == "in_place":
        instancenorm.instance_norm_(a)
    else:
        instancenorm.instance_norm(a, out=target)
    assert written._version > before
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_writes_without_autograd_recording():
    """Under no_grad (or inference mode) the inference ops take any tensor, a parameter included, as torch's in-place
    ops do."""
    p = torch.randn(2, 3, 4, 4, requires_grad=True)
    expected = instancenorm.instance_norm(p.detach())
    with torch.no_grad():
        instancenorm.instance_norm_(p)
        assert p._version == 1
        instancenorm.instance_norm(expected.clone(), out=p)
    torch.testing.assert_close(p.detach(), instancenorm.instance_norm(expected))


def test_out_and_gradient_of_a_dense_slice():
    """randn(1, 6, 8, 8)[:, :3] is contiguous with a batch stride of 384 that never moves a pointer: a fresh
    contiguous out is its layout, and a gradient in the fresh layout is used as it is, not copied first."""
    x = torch.randn(1, 6, 8, 8)[:, :3]
    assert x.is_contiguous() and x.stride(0) != 3 * 64
    out = torch.empty(1, 3, 8, 8)
    torch.testing.assert_close(instancenorm.instance_norm(x, out=out), instancenorm.instance_norm(x.clone()))
    _, mean, inv_std, _, mean_lo = torch.ops.instancenorm.forward(x, None, None, 1e-5)
    dy = torch.randn(1, 3, 8, 8)
    with torch.profiler.profile() as prof:
        torch.ops.instancenorm.backward(dy, x, mean, inv_std, None, mean_lo)
    assert "aten::copy_" not in {e.name for e in prof.events()}


def test_out_opcheck():
    x, w, b, _ = Case("t", (2, 3, 5, 6), channels_last=True).make("cpu", torch.float32)
    out = torch.empty_like(x)
    torch.library.opcheck(torch.ops.instancenorm.normalize_out.default, (x, w, b, 1e-5), {"out": out})


def test_in_place_opcheck():
    x, w, b, _ = Case("t", (2, 3, 5, 6), channels_last=True).make("cpu", torch.float32)
    torch.library.opcheck(torch.ops.instancenorm.normalize_.default, (x, w, b, 1e-5))


# ---------- CPU variants chosen at run time ----------


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))


def best_variant(flags: set[str]) -> str:
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl", "fma"} <= flags:
        return "avx512"
    if {"avx2", "fma"} <= flags:
        return "avx2"
    return "default"


@pytest.mark.skipif(not (sys.platform == "linux" and os.uname().machine == "x86_64"), reason="x86-64 Linux")
def test_cpu_dispatch_picks_the_best_variant_this_cpu_runs():
    assert torch.ops.instancenorm.cpu_capability() == best_variant(cpu_flags())


# Each variant this CPU can run, capped by INSTANCENORM_CPU_CAPABILITY in a child process, on every kernel path.
RUNNABLE_VARIANTS = ["default", "avx2", "avx512"][: ["default", "avx2", "avx512"].index(best_variant(cpu_flags())) + 1]


@pytest.mark.parametrize("variant", RUNNABLE_VARIANTS)
def test_each_cpu_variant_matches_the_reference(variant):
    result = run_python(
        """
        import sys, torch
        sys.path[:0] = ["tests/instancenorm", "tests"]
        import test_kernels as t
        print(torch.ops.instancenorm.cpu_capability())
        for case in t.CASES:
            for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
                t._test_forward("cpu", dtype, case)
                t._test_backward("cpu", dtype, case)
        """,
        INSTANCENORM_CPU_CAPABILITY=variant,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == [variant]


@pytest.mark.skipif(not (sys.platform == "linux" and os.uname().machine == "x86_64"), reason="x86-64 Linux")
@pytest.mark.skipif(not shutil.which("objdump"), reason="needs binutils' objdump")
def test_no_avx_instruction_outside_the_avx_variants():
    """The library must load and run its baseline variant on any x86-64 CPU: no AVX (VEX or EVEX encoded) instruction
    in a function outside the AVX2 / AVX512 namespaces, e.g. a std::vector member or c10 conversion that several
    variant objects define and the linker kept from an AVX one. (Per-object clones, "[clone .constprop]", are local
    to the object that calls them.)"""
    library = Path(instancenorm._C.__file__)
    listing = subprocess.run(
        ["objdump", "-d", "-C", "--no-show-raw-insn", str(library)], capture_output=True, text=True, check=True
    ).stdout
    offenders, function = set(), ""
    for line in listing.splitlines():
        if line.endswith(">:"):
            function = line
        elif "%xmm" in line or "%ymm" in line or "%zmm" in line:
            fields = line.split()
            if (
                len(fields) > 1
                and fields[1].startswith("v")
                and not any(tag in function for tag in ("AVX2::", "AVX512::", "4AVX2", "6AVX512", "[clone ."))
            ):
                offenders.add(function)
    assert not offenders, sorted(offenders)[:5]


def test_unknown_cpu_variant_is_a_clear_error():
    result = run_python(
        "import torch, instancenorm; instancenorm.instance_norm(torch.randn(1, 2, 3))",
        INSTANCENORM_CPU_CAPABILITY="sse9",
    )
    assert result.returncode != 0 and "INSTANCENORM_CPU_CAPABILITY must be default, avx2 or avx512" in result.stderr


# ---------- transforms the C++ autograd does not support ----------


def test_forward_mode_ad_is_refused_clearly():
    import torch.autograd.forward_ad as fwAD

    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    with fwAD.dual_level():
        dual = fwAD.make_dual(x, torch.randn_like(x))
        with pytest.raises(RuntimeError, match="forward-mode AD"):
            instancenorm.instance_norm(dual)
    with pytest.raises(RuntimeError, match="forward-mode AD"):
        torch.func.jvp(instancenorm.instance_norm, (x,), (torch.randn_like(x),))


def test_torch_func_grad_is_refused_clearly_and_vmap_runs_per_sample():
    x = torch.randn(4, 2, 3, 5, 5, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="functorch transforms"):
        torch.func.grad(lambda x: instancenorm.instance_norm(x).square().sum())(x[0])
    batched = torch.func.vmap(instancenorm.instance_norm)(x)
    torch.testing.assert_close(batched, torch.stack([reference.instance_norm(s) for s in x]))


# ---------- the forward's two phases alone: moments, and normalizing with given statistics ----------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_moments_match_reference_and_forward(device, dtype, case):
    """The forward's own reduction without its output: the same numbers bit for bit, and the reference's."""
    x, _, _, _ = case.make(device, dtype)
    mean, inv_std, var = instancenorm.instance_moments(x)
    assert mean.shape == inv_std.shape == var.shape == x.shape[:2]
    assert mean.dtype == inv_std.dtype == var.dtype == stats_dtype(dtype)
    _, fwd_mean, fwd_inv_std, fwd_var, _ = torch.ops.instancenorm.forward(x, None, None, 1e-5)
    for ours, forward in ((mean, fwd_mean), (inv_std, fwd_inv_std), (var, fwd_var)):
        assert torch.equal(ours, forward)
    mean_ref, inv_std_ref, var_ref = reference.moments(x.double(), 1e-5)
    float64 = dtype == torch.float64
    assert_close(mean, mean_ref, 1e-10 if float64 else TOLERANCE[torch.float32] * (1 + abs(case.offset)))
    assert_close(inv_std, inv_std_ref, 1e-10 if float64 else 1e-4)
    torch.testing.assert_close(var.double(), var_ref, rtol=1e-10 if float64 else 1e-5, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("value", [0.25, 1e4 + 0.3])
def test_moments_of_constant_channel_are_exact(device, channels_last, value):
    x, _, _, _ = Case("t", (2, 3, 40, 60), channels_last=channels_last).make(device, torch.float32)
    x = x.clone()
    x[:, 1] = value
    mean, inv_std, var = instancenorm.instance_moments(x, eps=1e-5)
    assert torch.equal(mean[:, 1], torch.full_like(mean[:, 1], torch.tensor(value).item()))
    assert not var[:, 1].any()
    torch.testing.assert_close(inv_std[:, 1], torch.full_like(inv_std[:, 1], 1e-5**-0.5))


@pytest.mark.parametrize("device", DEVICES)
def test_moments_of_empty_and_nan_inputs(device):
    mean, inv_std, var = instancenorm.instance_moments(torch.randn(0, 3, 4, 4, device=device))
    assert mean.shape == inv_std.shape == var.shape == (0, 3)
    assert all(s.isnan().all() for s in instancenorm.instance_moments(torch.randn(2, 3, 0, 4, device=device)))
    x = torch.randn(2, 3, 8, 8, device=device)
    x[1, 2, 3, 4] = float("nan")
    stats = instancenorm.instance_moments(x.contiguous(memory_format=torch.channels_last))
    nan_plane = torch.zeros(2, 3, dtype=torch.bool, device=device)
    nan_plane[1, 2] = True
    for s in stats:
        assert torch.equal(s.isnan(), nan_plane)


def given_statistics(case: Case, device: str, dtype: torch.dtype, per: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, inv_std) unrelated to the input, as a video's averaged statistics are: (C,) or (N, C), stats dtype."""
    g = torch.Generator().manual_seed(1)
    shape = case.shape[:2] if per == "sample" else case.shape[1:2]
    mean = torch.randn(shape, generator=g, dtype=torch.float64) * case.scale + case.offset
    inv_std = (torch.rand(shape, generator=g, dtype=torch.float64) + 0.5) / case.scale
    return mean.to(device, stats_dtype(dtype)), inv_std.to(device, stats_dtype(dtype))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("per", ["sample", "channel"])
@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_normalize_with_stats_matches_reference_in_every_flavour(device, dtype, per, case):
    x, w, b, _ = case.make(device, dtype)
    mean, inv_std = given_statistics(case, device, dtype, per)
    y = instancenorm.normalize_with_stats(x, mean, inv_std, w, b)
    assert y.dtype == dtype and y.shape == x.shape and y.stride() == x.stride()
    x64, w64, b64 = (None if t is None else t.double() for t in (x, w, b))
    y_ref = reference.normalize_with_stats(x64, mean.double(), inv_std.double(), w64, b64)
    # x - mean is rounded relative to the offset (in float32 for reduced types), which inv_std amplifies.
    assert_close(y, y_ref, output_scale(case, dtype))
    out = torch.full_like(x, float("nan"))
    with torch.inference_mode():
        assert instancenorm.normalize_with_stats(x, mean, inv_std, w, b, out=out) is out
        in_place = x.clone()
        assert instancenorm.normalize_with_stats_(in_place, mean, inv_std, w, b) is in_place
    torch.testing.assert_close(out, y, atol=0, rtol=0)
    torch.testing.assert_close(in_place, y, atol=0, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_normalize_with_own_moments_is_instance_norm(device, dtype, case):
    """The two phases in a row give instance_norm, but for the mean's rounding to its dtype (which the forward keeps
    as a pair): output_scale bounds that for large offsets."""
    x, w, b, _ = case.make(device, dtype)
    mean, inv_std, _ = instancenorm.instance_moments(x)
    y = instancenorm.normalize_with_stats(x, mean, inv_std, w, b)
    assert_close(y, instancenorm.instance_norm(x, w, b).double(), output_scale(case, dtype))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("per", ["sample", "channel"])
@pytest.mark.parametrize("case", CHECK_CASES, ids=[f"{c.name}-{c.layout}" for c in CHECK_CASES])
def test_normalize_with_stats_gradcheck(device, per, case):
    """Float64 gradients in the input, both statistics (as given inputs) and the affine parameters."""
    x, w, b, _ = case.make(device, torch.float64)
    mean, inv_std = given_statistics(case, device, torch.float64, per)
    inputs = [t.requires_grad_() for t in (x, mean, inv_std, w, b) if t is not None]
    assert torch.autograd.gradcheck(instancenorm.normalize_with_stats, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_normalize_with_stats_gradients_match_reference(device):
    """float32 input with float64 statistics and (C,) parameters: each gradient has its input's shape and dtype."""
    case = Case("t", (3, 4, 6, 5), channels_last=True)
    x, w, b, dy = case.make(device, torch.float32)
    mean, inv_std = (s.double() for s in given_statistics(case, device, torch.float32, "channel"))
    leaves = [t.clone().requires_grad_() for t in (x, mean, inv_std, w, b)]
    grads = torch.autograd.grad(instancenorm.normalize_with_stats(*leaves), leaves, dy)
    ref_leaves = [t.double().requires_grad_() for t in (x, mean, inv_std, w, b)]
    expected = torch.autograd.grad(reference.normalize_with_stats(*ref_leaves), ref_leaves, dy.double())
    for got, leaf, ref in zip(grads, leaves, expected, strict=True):
        assert got.shape == leaf.shape and got.dtype == leaf.dtype
        torch.testing.assert_close(got.double(), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_stats_ops_opcheck(device):
    x, w, b, _ = Case("t", (2, 3, 5, 6), channels_last=True, affine="sample").make(device, torch.float32)
    torch.library.opcheck(torch.ops.instancenorm.moments.default, (x, 1e-5))
    mean, inv_std, _ = instancenorm.instance_moments(x)
    for stats in ((mean, inv_std), (mean[0], inv_std[0])):
        args = (x.clone().requires_grad_(), stats[0].clone().requires_grad_(), stats[1], w.clone().requires_grad_(), b)
        torch.library.opcheck(torch.ops.instancenorm.normalize_with_stats.default, args)
        torch.library.opcheck(torch.ops.instancenorm.normalize_with_stats_.default, (x.clone(), *stats, w, b))
        torch.library.opcheck(
            torch.ops.instancenorm.normalize_with_stats_out.default, (x, *stats, w, b), {"out": torch.empty_like(x)}
        )


def test_stats_ops_refuse_what_they_cannot_do():
    x = torch.randn(2, 3, 8, 8)
    mean, inv_std, _ = instancenorm.instance_moments(x)
    with pytest.raises(RuntimeError, match="moments is for inference"):
        instancenorm.instance_moments(x.clone().requires_grad_())
    with torch.no_grad():  # nothing records there: the statistics are computed, and need no gradient
        assert not instancenorm.instance_moments(x.clone().requires_grad_())[0].requires_grad
    bad_stats = {
        r"mean must have shape \(C,\) = \(3,\) or \(N, C\) = \(2, 3\)": (mean[:, :2], inv_std),
        r"inv_std must have shape \(C,\)": (mean, inv_std.t()),
        "mean must be floating point": (mean.int(), inv_std),
    }
    for message, (m, s) in bad_stats.items():
        with pytest.raises(RuntimeError, match=message):
            instancenorm.normalize_with_stats(x, m, s)
    with pytest.raises(RuntimeError, match="float32, float64"):
        instancenorm.normalize_with_stats(x.int(), mean, inv_std)
    with pytest.raises(RuntimeError, match="at least 3 dims"):
        instancenorm.instance_moments(torch.randn(2, 3))
    with pytest.raises(RuntimeError, match="normalize_with_stats_: input must be contiguous or channels_last"):
        instancenorm.normalize_with_stats_(x[:, :, ::2], mean, inv_std)
    with pytest.raises(RuntimeError, match="normalize_with_stats_ is for inference"):
        instancenorm.normalize_with_stats_(x, mean.clone().requires_grad_(), inv_std)
    with pytest.raises(RuntimeError, match="normalize_with_stats_out is for inference"):
        instancenorm.normalize_with_stats(x, mean, inv_std, torch.ones(3, requires_grad=True), out=torch.empty_like(x))
    with pytest.raises(RuntimeError, match="normalize_with_stats_out: out must be a Float tensor"):
        instancenorm.normalize_with_stats(x, mean, inv_std, out=torch.empty(2, 3, 8, 7))
    with pytest.raises(RuntimeError, match="memory format the input is read in"):
        instancenorm.normalize_with_stats(x, mean, inv_std, out=torch.empty_like(x, memory_format=torch.channels_last))
    before = x._version
    instancenorm.normalize_with_stats_(x, mean, inv_std)
    assert x._version > before


@cuda_only
def test_stats_on_another_device_raise_clear_errors():
    x = torch.randn(2, 3, 8, 8, device="cuda")
    mean, inv_std, _ = instancenorm.instance_moments(x)
    with pytest.raises(RuntimeError, match="mean is on cpu but input is on cuda"):
        instancenorm.normalize_with_stats(x, mean.cpu(), inv_std)
    with pytest.raises(RuntimeError, match="inv_std is on cpu but input is on cuda"):
        instancenorm.normalize_with_stats(x, mean, inv_std.cpu())
