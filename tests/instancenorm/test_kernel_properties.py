"""Property-based tests (hypothesis) of the compiled instance-norm ops against the float64 reference, on the CPU.

Each example draws a problem: a shape (general, 1x1 planes, many tiny planes, or one larger plane), a memory layout
(contiguous, channels_last, strided views, a transposed memory order, expanded tensors with stride 0), affine
parameters (none, per channel (C,), per sample (N, C); weight and bias each optional), a dtype, a value range
(scale 1e-8 .. 1e8, offsets up to 1e4, constant planes) and optionally a NaN or +-Inf in one element. The ops'
results are compared element by element with `instancenorm.reference` run in float64 on the same (rounded) values.

The hypothesis profile is registered in conftest.py: fixed (derandomized) examples in CI; HYPOTHESIS_PROFILE=thorough
runs many more.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st

from instancenorm import reference
from instancenorm.dtypes import stats_dtype
from instancenorm.ops import backward_op, forward_op, instance_norm, is_channels_last


@dataclass(frozen=True)
class Tolerance:
    """Error bounds, each relative to the scale of what it bounds, element by element (`_check_forward/_backward`):

    y        |y - y_ref|     <= (y + cond) * |w| * (|x̂| + 1) + y * |b|
    mean     |mean - ref|    <= mean * sums * max|x| of the plane
    inv_std  |inv - ref|     <= (inv_std * sums + cond) * inv_ref
    dx       |dx - ref|      <= (dx + cond) * |w| * inv_std * (|dy| + mean|dy| + |x̂| * mean|dy x̂|)
    grad     |dw - ref|      <= grad * sums * Σ|dy x̂|,   |db - ref| <= grad * sums * Σ|dy|

    sums = 1 + log2(M) for a plane of M elements: the rounding of sums over the plane grows with its length.

    cond = REFERENCE * |mean| * inv_std is the rounding of the float64 reference itself, which computes x - mean
    relative to |mean|, not to the spread: a plane 1e4 + 1e-2 * noise is conditioned 1e6 times worse than 1e-2 * noise.
    y and dx also get the dtype's subnormal step (results below the smallest normal number round to a fixed step).
    """

    y: float
    mean: float
    inv_std: float
    dx: float
    grad: float


# 2-5x the largest error seen in 5000 random examples (3000 finite, 2000 with NaN/Inf; 2026-11-25). float16 and bfloat16
# round y and dx to their own 11 / 8 bits (the bounds are one unit in the last place) but accumulate in float32, so
# their statistics and affine gradients, float32 tensors, have float32 bounds.
TOLERANCES = {
    #                         y       mean     inv_std  dx       dweight/dbias
    torch.float64: Tolerance(1e-12, 4e-16, 2e-15, 1.5e-15, 8e-16),
    torch.float32: Tolerance(2e-6, 1.5e-7, 5e-7, 6e-7, 2.5e-7),
    torch.float16: Tolerance(1e-3, 1.5e-7, 5e-7, 1e-3, 2.5e-7),
    torch.bfloat16: Tolerance(8e-3, 1.5e-7, 5e-7, 8e-3, 2.5e-7),
}
REFERENCE = 16 * 2.0**-53  # float64 roundings of the reference (its mean is a sum over the plane, too)
DTYPES = list(TOLERANCES)


def sums(x: torch.Tensor) -> float:
    return 1 + math.log2(max(1, math.prod(x.shape[2:])))


def subnormal_step(dtype: torch.dtype) -> float:
    """Results below the smallest normal number round to a fixed absolute step (6e-8 for float16)."""
    info = torch.finfo(dtype)
    return info.tiny * info.eps


LAYOUTS = ["contiguous", "channels_last", "strided", "transposed", "expanded_batch", "expanded_spatial"]
AFFINE = ["none", "channel", "sample"]


@dataclass(frozen=True)
class Problem:
    shape: tuple[int, ...]
    layout: str
    affine: str
    has_weight: bool
    has_bias: bool
    dtype: torch.dtype
    scale: float
    offset: float
    constant_plane: tuple[int, int] | None
    bad_value: tuple[float, tuple[int, ...]] | None  # (NaN or +-Inf, logical index)
    grad_layout: str
    eps: float
    seed: int


shapes = st.one_of(
    # general: 1-3 spatial dims of 1..7
    st.tuples(st.integers(1, 4), st.integers(1, 8)).flatmap(
        lambda nc: st.lists(st.integers(1, 7), min_size=1, max_size=3).map(lambda s: (*nc, *s))
    ),
    # 1x1 planes (torch refuses these in training; here y = b and dx = 0)
    st.tuples(st.integers(1, 4), st.integers(1, 16)).map(lambda nc: (*nc, 1, 1)),
    # N*C large, tiny planes: channel counts off the SIMD width
    st.tuples(st.integers(2, 8), st.integers(16, 300), st.integers(1, 3), st.integers(1, 2)),
    # one larger plane: the CPU kernel splits it across chunks and merges their moments
    st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(24, 96), st.integers(24, 96)),
)


@st.composite
def problems(draw, dtypes=DTYPES, bad_values: bool = False) -> Problem:
    shape = draw(shapes)
    dtype = draw(st.sampled_from(dtypes))
    layouts = [layout for layout in LAYOUTS if layout != "expanded_spatial" or len(shape) > 3]
    affine = draw(st.sampled_from(AFFINE))
    has_weight, has_bias = (
        (False, False) if affine == "none" else draw(st.sampled_from([(True, True), (True, False), (False, True)]))
    )
    # float16 holds magnitudes up to 65504 only: keep |x| well inside that.
    top_exponent = 2 if dtype == torch.float16 else 8
    scale = 10.0 ** draw(st.integers(-8, top_exponent))
    offset = draw(st.sampled_from([0.0, 1.0, -3.0, 1e2, 1e4, -1e4]))
    if dtype == torch.float16 and abs(offset) + 8 * scale > 6e4:
        offset = 0.0
    n, c = shape[:2]
    constant_plane = draw(st.none() | st.tuples(st.integers(0, n - 1), st.integers(0, c - 1)))
    bad_value = None
    if bad_values:
        index = tuple(draw(st.integers(0, size - 1)) for size in shape)
        bad_value = (draw(st.sampled_from([math.nan, math.inf, -math.inf])), index)
    return Problem(
        shape=shape,
        layout=draw(st.sampled_from(layouts)),
        affine=affine,
        has_weight=has_weight,
        has_bias=has_bias,
        dtype=dtype,
        scale=scale,
        offset=offset,
        constant_plane=constant_plane,
        bad_value=bad_value,
        grad_layout=draw(st.sampled_from(["contiguous", "channels_last", "strided"])),
        eps=draw(st.sampled_from([1e-5, 1e-3, 0.1])),
        seed=draw(st.integers(0, 2**16)),
    )


def _in_layout(logical: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as `logical`, stored in `layout` (expanded layouts are made in `make_inputs`)."""
    dims = logical.dim()
    if layout == "channels_last":  # (N, *spatial, C) in memory
        return logical.permute(0, *range(2, dims), 1).contiguous().permute(0, dims - 1, *range(1, dims - 1))
    if layout == "strided":  # every other element of a bigger tensor, in every dim
        big = torch.zeros([2 * size for size in logical.shape], dtype=logical.dtype)
        view = big[tuple(slice(None, None, 2) for _ in range(dims))]
        view.copy_(logical)
        return view
    if layout == "transposed":  # the last two dims swapped in memory ((C, N, L) for sequences)
        a, b = (dims - 2, dims - 1) if dims > 3 else (0, 1)
        return logical.transpose(a, b).contiguous().transpose(a, b)
    return logical.contiguous()


def make_inputs(p: Problem):
    """(x, weight, bias, dy) for the problem: values drawn in float64, rounded to the dtype, stored in its layout."""
    g = torch.Generator().manual_seed(p.seed)
    n, c = p.shape[:2]
    # Expanded inputs repeat one sample over N (stride 0), or one row over the first spatial dim.
    base_shape = list(p.shape)
    if p.layout == "expanded_batch":
        base_shape[0] = 1
    elif p.layout == "expanded_spatial":
        base_shape[2] = 1
    base = torch.randn(base_shape, generator=g, dtype=torch.float64) * p.scale + p.offset
    if p.constant_plane is not None:
        cn, cc = p.constant_plane
        base[min(cn, base.shape[0] - 1), cc] = p.offset + 0.37 * p.scale
    if p.bad_value is not None:
        value, index = p.bad_value
        base[tuple(min(i, size - 1) for i, size in zip(index, base.shape, strict=True))] = value
    base = base.to(p.dtype)
    x = base.expand(p.shape) if p.layout.startswith("expanded") else _in_layout(base, p.layout)
    param_shape = (c,) if p.affine == "channel" else (n, c)
    weight = (torch.rand(param_shape, generator=g, dtype=torch.float64) * 4 - 2).to(p.dtype) if p.has_weight else None
    bias = torch.randn(param_shape, generator=g, dtype=torch.float64).to(p.dtype) if p.has_bias else None
    dy = _in_layout(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype), p.grad_layout)
    return x, weight, bias, dy


def _per_instance(param, n, c, fill):
    return torch.full((n, c), fill, dtype=torch.float64) if param is None else param.double().expand(n, c)


def _planes(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(*t.shape[:2], -1)


def _assert_within(name: str, actual: torch.Tensor, expected: torch.Tensor, bound: torch.Tensor) -> None:
    """Element-wise |actual - expected| <= bound, NaN only where the reference has NaN, both infinite alike."""
    actual = actual.double()
    same_nan = actual.isnan() == expected.isnan()
    assert same_nan.all(), f"{name}: NaN at {(~same_nan).nonzero()[:5].tolist()} differs from the reference"
    finite = expected.isfinite()
    assert torch.equal(actual[~finite & ~expected.isnan()], expected[~finite & ~expected.isnan()]), name
    error = (actual - expected).abs()[finite]
    limit = bound.expand_as(expected)[finite]
    bad = error > limit
    if bad.any():
        worst = (error / limit.clamp_min(1e-300)).argmax()
        raise AssertionError(
            f"{name}: {int(bad.sum())} of {error.numel()} elements out of bounds; worst error {error[worst]:.3g} "
            f"against a bound of {limit[worst]:.3g}"
        )


def _bad_planes(x: torch.Tensor) -> torch.Tensor:
    """(N, C) mask of the instances holding a NaN or an infinity."""
    return ~_planes(x).isfinite().all(dim=2)


def _check_forward(p: Problem, x, weight, bias, result) -> None:
    """`result` = forward(x, weight, bias, eps) from the op, checked against the float64 reference."""
    tol = TOLERANCES[p.dtype]
    y, mean, inv_std = result
    # Layout: contiguous and channels_last inputs keep theirs, anything else comes out contiguous.
    assert y.shape == x.shape and y.dtype == x.dtype
    if x.is_contiguous():
        assert y.is_contiguous()
    elif is_channels_last(x):
        assert is_channels_last(y)
    else:
        assert y.is_contiguous()
    assert mean.dtype == inv_std.dtype == stats_dtype(p.dtype) and mean.shape == inv_std.shape == x.shape[:2]

    x64 = x.double()
    w64, b64 = (None if t is None else t.double() for t in (weight, bias))
    y_ref, mean_ref, inv_std_ref = reference.forward(x64, w64, b64, p.eps)
    bad = _bad_planes(x)
    n, c = x.shape[:2]

    # NaN or Inf poisons its own plane (all NaN) and nothing else.
    assert _planes(y)[bad].isnan().all(), "a NaN/Inf input must make its whole plane NaN"
    assert _planes(y)[~bad].isfinite().all(), "a NaN/Inf input leaked into another plane"
    assert mean[~bad].isfinite().all() and inv_std[~bad].isfinite().all()

    good = ~bad
    xhat = (_planes(x64) - mean_ref[..., None]) * inv_std_ref[..., None]
    w, b = _per_instance(weight, n, c, 1.0), _per_instance(bias, n, c, 0.0)
    cond = (REFERENCE * mean_ref.abs() * inv_std_ref)[..., None]
    y_bound = (tol.y + cond) * w.abs()[..., None] * (xhat.abs() + 1) + tol.y * b.abs()[..., None]
    y_bound = y_bound + subnormal_step(p.dtype)
    _assert_within("y", _planes(y)[good], _planes(y_ref)[good], y_bound[good])
    plane_max = _planes(x64).abs().amax(dim=2)
    _assert_within("mean", mean[good], mean_ref[good], tol.mean * sums(x) * plane_max[good])
    inv_std_bound = (tol.inv_std * sums(x) + cond[..., 0]) * inv_std_ref
    _assert_within("inv_std", inv_std[good], inv_std_ref[good], inv_std_bound[good])

    # A constant plane has mean exactly its value (it is summed around its first element): y is exactly the bias.
    constant = good & (_planes(x) == _planes(x)[..., :1]).all(dim=2)
    if constant.any():
        expected = b.to(p.dtype)[constant][:, None].expand(-1, _planes(y).shape[2])
        assert torch.equal(_planes(y)[constant], expected), "a constant plane must give exactly the bias"


def _check_backward(p: Problem, x, weight, dy, mean, inv_std, result) -> None:
    """`result` = backward(dy, x, mean, inv_std, weight) from the op, checked against the float64 reference."""
    tol = TOLERANCES[p.dtype]
    dx, dweight, dbias = result
    assert dx.shape == x.shape and dx.dtype == x.dtype
    assert dweight.shape == dbias.shape == x.shape[:2] and dweight.dtype == dbias.dtype == mean.dtype
    if x.is_contiguous():
        assert dx.is_contiguous()
    elif is_channels_last(x):
        assert is_channels_last(dx)

    # The op's contract: the gradient for the statistics it is given (those the forward saved).
    x64, dy64, mean64, inv64 = x.double(), dy.double(), mean.double(), inv_std.double()
    w64 = None if weight is None else weight.double()
    dx_ref, dw_ref, db_ref = reference.backward(dy64, x64, mean64, inv64, w64)
    n, c = x.shape[:2]
    good = ~_bad_planes(x)
    xhat = (_planes(x64) - mean64[..., None]) * inv64[..., None]
    dyp = _planes(dy64).abs()
    w = _per_instance(weight, n, c, 1.0).abs()
    dx_scale = (w * inv64)[..., None] * (
        dyp + dyp.mean(dim=2, keepdim=True) + xhat.abs() * (dyp * xhat.abs()).mean(dim=2, keepdim=True)
    )
    dx_bound = dx_scale * (tol.dx + REFERENCE * (mean64.abs() * inv64)[..., None]) + subnormal_step(p.dtype)
    _assert_within("dx", _planes(dx)[good], _planes(dx_ref)[good], dx_bound[good])
    assert _planes(dx)[good].isfinite().all()
    _assert_within("dweight", dweight[good], dw_ref[good], tol.grad * sums(x) * (dyp * xhat.abs()).sum(dim=2)[good])
    # dbias = Σ dy does not depend on x at all: right even in a plane holding NaN.
    _assert_within("dbias", dbias, db_ref, tol.grad * sums(x) * dyp.sum(dim=2))


def _check_problem(p: Problem) -> None:
    x, weight, bias, dy = make_inputs(p)
    note(f"{p!r}; x strides {x.stride()}")
    _, mean, inv_std = result = forward_op(x, weight, bias, p.eps)[:3]
    _check_forward(p, x, weight, bias, result)
    _check_backward(p, x, weight, dy, mean, inv_std, backward_op(dy, x, mean, inv_std, weight))


@given(problems())
def test_forward_and_backward_match_the_float64_reference(p):
    _check_problem(p)


@given(problems(bad_values=True))
def test_nan_and_inf_stay_in_their_own_plane(p):
    _check_problem(p)


@given(problems(dtypes=[torch.float32, torch.bfloat16]))
def test_autograd_uses_the_ops_and_sums_per_channel_gradients_over_the_batch(p):
    """instance_norm's backward is the backward op on the statistics the forward saved (the mean as its float pair),
    per-channel affine gradients summed over N: bit for bit what calling the ops directly gives."""
    note(repr(p))
    x, weight, bias, dy = make_inputs(p)
    leaves = {
        name: t.detach().clone().requires_grad_()
        for name, t in zip("xwb", (x, weight, bias), strict=True)
        if t is not None
    }
    y = instance_norm(leaves["x"], leaves.get("w"), leaves.get("b"), p.eps)
    grads = dict(zip(leaves, torch.autograd.grad(y, list(leaves.values()), dy), strict=True))
    y_op, mean, inv_std, _, mean_lo = forward_op(x, weight, bias, p.eps)
    dx, dweight, dbias = backward_op(dy, x, mean, inv_std, weight, mean_lo)
    assert torch.equal(y, y_op) and torch.equal(grads["x"], dx)
    for name, per_instance, param in (("w", dweight, weight), ("b", dbias, bias)):
        if param is not None:
            expected = per_instance if param.dim() == 2 else per_instance.sum(dim=0)
            assert torch.equal(grads[name], expected.to(param.dtype)), name


# Found by HYPOTHESIS_PROFILE=thorough with 2 threads (kernels of commit 832456c): channels_last statistics summed
# each channel's rows of a chunk in one float32 accumulator, over up to 16384 / C rows; with C = 2, 4539 rows of
# -10048 / -9984 put inv_std off by 7.4e-6 relative (NCHW 1e-7). Chunks are now capped at 256 rows.
@pytest.mark.parametrize("layout", ["channels_last", "contiguous"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_statistics_of_a_long_two_valued_plane(dtype, layout):
    """bfloat16 rounds -1e4 + 10 * noise to -10048 or -9984: a plane of two values, far from zero."""
    p = Problem((1, 2, 51, 89), layout, "none", False, False, torch.bfloat16, 10.0, -1e4, None, None, layout, 1e-5, 0)
    x, _, _, dy = make_inputs(p)
    x, dy, p = x.to(dtype), dy.to(dtype), dataclasses.replace(p, dtype=dtype)
    _, mean, inv_std = result = forward_op(x, None, None, p.eps)[:3]
    _check_forward(p, x, None, None, result)
    _check_backward(p, x, None, dy, mean, inv_std, backward_op(dy, x, mean, inv_std, None))


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_bounds_catch_plausible_bugs(dtype):
    """No vacuous bounds: the unbiased variance (a 1.7 % change on these 30-element planes) in the statistics, y or
    dweight, or the naive per-element derivative for dx, must each fail the checks above."""
    p = Problem((2, 3, 6, 5), "contiguous", "channel", True, True, dtype, 1.0, 0.0, None, None, "contiguous", 1e-5, 0)
    x, weight, bias, dy = make_inputs(p)
    y, mean, inv_std = forward_op(x, weight, bias, p.eps)[:3]
    unbiased = inv_std * math.sqrt(29 / 30)
    y_unbiased = reference.forward(x.double(), weight.double(), bias.double(), p.eps)[0]
    y_unbiased = (y_unbiased - bias.double()[:, None, None]) * math.sqrt(29 / 30) + bias.double()[:, None, None]
    with pytest.raises(AssertionError, match="inv_std"):
        _check_forward(p, x, weight, bias, (y, mean, unbiased))
    with pytest.raises(AssertionError, match="y:"):
        _check_forward(p, x, weight, bias, (y_unbiased.to(dtype), mean, inv_std))
    dx, dweight, dbias = backward_op(dy, x, mean, inv_std, weight)
    naive = reference.naive_backward(dy, inv_std, weight)
    with pytest.raises(AssertionError, match="dx"):
        _check_backward(p, x, weight, dy, mean, inv_std, (naive, dweight, dbias))
    with pytest.raises(AssertionError, match="dweight"):
        _check_backward(p, x, weight, dy, mean, inv_std, (dx, dweight * math.sqrt(29 / 30), dbias))
    _check_forward(p, x, weight, bias, (y, mean, inv_std))  # and the right results pass
    _check_backward(p, x, weight, dy, mean, inv_std, (dx, dweight, dbias))
