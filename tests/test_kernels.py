"""The compiled ops against the float64 reference, on every kernel path, on CPU and (when present) CUDA."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import instancenorm
from instancenorm import reference
from instancenorm.testing import CHECK_CASES, Case
from styler.memory import keep_freed_memory

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
    y, mean, inv_std = torch.ops.instancenorm.forward(x, w, b, 1e-5)
    x64, w64, b64 = (None if t is None else t.double() for t in (x, w, b))
    y_ref, mean_ref, inv_std_ref = reference.forward(x64, w64, b64, 1e-5)
    # The CPU kernel normalizes with the mean as a float pair (hi + lo): large offsets cost it no accuracy.
    tol = TOLERANCE[dtype] if device == "cpu" else output_scale(case, dtype)
    assert y.dtype == dtype and y.shape == x.shape and y.stride() == x.stride()
    assert mean.dtype == inv_std.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert_close(mean, mean_ref, TOLERANCE[torch.float32] * (1 + abs(case.offset)) if dtype != torch.float64 else 1e-10)
    assert_close(inv_std, inv_std_ref, 1e-4 if dtype != torch.float64 else 1e-10)
    assert_close(y, y_ref, tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_forward_matches_reference(device, dtype, case):
    _test_forward(device, dtype, case)


# ---------- backward ----------


def _test_backward(device: str, dtype: torch.dtype, case: Case) -> None:
    x, w, b, dy = case.make(device, dtype)
    _, mean, inv_std = torch.ops.instancenorm.forward(x, w, b, 1e-5)
    dx, dw, db = torch.ops.instancenorm.backward(dy, x, mean, inv_std, w)
    x64, w64, dy64 = x.double(), None if w is None else w.double(), dy.double()
    dx_ref, dw_ref, db_ref = reference.backward(dy64, x64, mean.double(), inv_std.double(), w64)
    assert dx.stride() == x.stride() and dw.shape == db.shape == x.shape[:2]
    # dx sums M terms of size |w| * inv_std * |dy|: scale the bound by that and by the plane size.
    plane = x[0, 0].numel()
    w_scale = 1.0 if w is None else w.abs().max().item()
    tol = output_scale(case, dtype)
    assert_close(dx, dx_ref, tol * w_scale * inv_std.max().item() * (1 + plane**0.5 * TOLERANCE[dtype]))
    assert_close(dw, dw_ref, tol * plane**0.5 * 4)
    assert_close(db, db_ref, TOLERANCE[dtype] * plane**0.5 * 4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_backward_matches_reference(device, dtype, case):
    _test_backward(device, dtype, case)


@pytest.mark.parametrize("device", DEVICES)
def test_backward_accepts_gradient_in_another_layout(device):
    x, w, b, dy = Case("cl", (2, 5, 6, 7), channels_last=True).make(device, torch.float32)
    _, mean, inv_std = torch.ops.instancenorm.forward(x, w, b, 1e-5)
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
    for ours, theirs in zip(*grads):
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
    _, mean, inv_std = torch.ops.instancenorm.forward(x.detach(), w.detach(), b, 1e-5)
    torch.library.opcheck(torch.ops.instancenorm.backward.default, (dy, x.detach(), mean, inv_std, w.detach()))


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
    y, mean, inv_std = torch.ops.instancenorm.forward(torch.randn(2, 3, 0, 4, device=device), None, None, 1e-5)
    assert y.shape == (2, 3, 0, 4) and mean.isnan().all() and inv_std.isnan().all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_and_inf_stay_in_their_plane(device, channels_last, bad):
    x, w, b, _ = Case("t", (2, 3, 8, 8), channels_last=channels_last).make(device, torch.float32)
    x = x.clone()
    x[1, 2, 3, 4] = bad
    y, _, _ = torch.ops.instancenorm.forward(x, w, b, 1e-5)
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
    y, mean, _ = torch.ops.instancenorm.forward(x, w, b, 1e-5)
    assert torch.equal(y[:, 1], b[:, 1, None, None].expand_as(y[:, 1]))
    assert torch.equal(mean[:, 1], torch.full_like(mean[:, 1], torch.tensor(value, dtype=dtype).item()))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_tiny_values_with_zero_eps(device, channels_last):
    """With eps = 0 a plane of values near 1e-20 has a variance near 1e-40, below float32's smallest normal number:
    flushing it to zero (as CUDA's fast math does) would call the plane constant and make its output infinite."""
    x = torch.tensor([1.0, -1.0, 3.0, -3.0, 2.0, -2.0], dtype=torch.float64).repeat(2, 4, 1).view(2, 4, 2, 3) * 1e-20
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x32 = x.float().to(device).contiguous(memory_format=memory_format)
    y, _, inv_std = torch.ops.instancenorm.forward(x32, None, None, 0.0)
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
            y, mean, inv_std = torch.ops.instancenorm.forward(x, w, b, 1e-5)
            results.append((y, *torch.ops.instancenorm.backward(dy, x, mean, inv_std, w)))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b_ in zip(results[0], other):
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


@pytest.mark.parametrize("case", STREAMED_CASES, ids=ids(STREAMED_CASES))
def test_streamed_outputs_match_reference(case):
    """The CPU kernels write an output of 16 MiB or more with streaming stores once its memory is mapped in, which
    with malloc keeping freed memory is from the second call on."""
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
    with pytest.raises(RuntimeError, match="for inference"):
        instancenorm.instance_norm_(torch.randn(2, 3, 4, 4, requires_grad=True))
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


def test_out_opcheck():
    x, w, b, _ = Case("t", (2, 3, 5, 6), channels_last=True).make("cpu", torch.float32)
    out = torch.empty_like(x)
    torch.library.opcheck(torch.ops.instancenorm.normalize_out.default, (x, w, b, 1e-5), {"out": out})


def test_in_place_opcheck():
    x, w, b, _ = Case("t", (2, 3, 5, 6), channels_last=True).make("cpu", torch.float32)
    torch.library.opcheck(torch.ops.instancenorm.normalize_.default, (x, w, b, 1e-5))
