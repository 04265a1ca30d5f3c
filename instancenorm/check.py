"""Prove the instance-norm kernels on this machine (what `styler check-grad` runs and prints).

For each sample problem and device:
  gradcheck   float64 kernels: analytical Jacobian (our backward) against central finite differences, for the
              input, weight and bias, plus torch.autograd.gradcheck's own verdict;
  forward     float32 kernel against the float64 reference (and against torch's F.instance_norm where it applies);
  backward    float32 kernel gradients against the float64 reference.
One extra row shows that the per-element derivative printed in some documents (dx = w * inv_std * dy) does not
match the numerical Jacobian, which is why the kernels use the full formula.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor

import instancenorm
from instancenorm import reference
from instancenorm.testing import CHECK_CASES, Case

EPS = 1e-5


class DeviceError(ValueError):
    """The device asked for cannot be checked: not cpu, cuda or all, or CUDA is not usable here."""


@dataclass
class Row:
    case: str
    device: str
    dtype: str
    layout: str
    check: str
    max_abs_err: float
    max_rel_err: float
    tolerance: float
    passed: bool


def errors(actual: Tensor, expected: Tensor) -> tuple[float, float]:
    """Largest absolute error, and that error relative to the largest expected magnitude."""
    actual, expected = actual.double().cpu(), expected.double().cpu()
    if actual.numel() == 0:
        return 0.0, 0.0
    diff = (actual - expected).abs()
    abs_err = math.inf if diff.isnan().any() else diff.max().item()
    return abs_err, abs_err / max(expected.abs().max().item(), 1e-30)


def numerical_jacobian(fn, inputs: list[Tensor], h: float = 1e-6) -> list[Tensor]:
    """d fn(*inputs) / d inputs[k] by central differences, as (outputs, inputs[k].numel()) matrices."""
    jacobians = []
    for k, t in enumerate(inputs):
        columns = []
        for j in range(t.numel()):
            shifted = [i.detach().clone() for i in inputs]  # clone keeps the layout (channels_last stays)
            index = tuple(int(i) for i in torch.unravel_index(torch.tensor(j), t.shape))
            shifted[k][index] += h
            plus = fn(*shifted).reshape(-1)
            shifted[k][index] -= 2 * h
            minus = fn(*shifted).reshape(-1)
            columns.append((plus - minus) / (2 * h))
        jacobians.append(torch.stack(columns, dim=1))
    return jacobians


def analytical_jacobian(fn, inputs: list[Tensor]) -> list[Tensor]:
    """The same matrices from autograd, i.e. from the backward kernel, one output element at a time."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*leaves).reshape(-1)
    rows: list[list[Tensor]] = [[] for _ in leaves]
    for i in range(out.numel()):
        grads = torch.autograd.grad(out[i], leaves, retain_graph=True, allow_unused=True)
        for k, g in enumerate(grads):
            rows[k].append(torch.zeros_like(leaves[k]).reshape(-1) if g is None else g.reshape(-1))
    return [torch.stack(r, dim=0) for r in rows]


def case_inputs(case: Case, device: str, dtype: torch.dtype):
    x, w, b, dy = case.make(device, dtype)
    inputs = [t for t in (x, w, b) if t is not None]
    fn = partial(instancenorm.instance_norm, eps=EPS)  # fn(x) or fn(x, w, b)
    return fn, inputs, x, w, b, dy


def gradcheck_row(case: Case, device: str) -> Row:
    fn, inputs, *_ = case_inputs(case, device, torch.float64)
    numeric = torch.cat(numerical_jacobian(fn, inputs), dim=1)
    analytic = torch.cat(analytical_jacobian(fn, inputs), dim=1)
    abs_err, rel_err = errors(analytic, numeric)
    tolerance = 1e-5 * max(1.0, numeric.abs().max().item())
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    verdict = torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=False)
    return Row(
        case.name,
        device,
        "float64",
        case.layout,
        "gradcheck (x, w, b)",
        abs_err,
        rel_err,
        tolerance,
        bool(verdict) and abs_err <= tolerance,
    )


def forward_rows(case: Case, device: str) -> list[Row]:
    _, _, x, w, b, _ = case_inputs(case, device, torch.float32)
    y = instancenorm.instance_norm(x, w, b, eps=EPS)
    w64, b64 = (None if t is None else t.double() for t in (w, b))
    y_ref = reference.instance_norm(x.double(), w64, b64, eps=EPS)
    # float32 stats round a large mean by |mean| * 6e-8, which 1/std amplifies; nothing else may add error.
    tolerance = 2e-5 + 4 * abs(case.offset) * 6e-8 / case.scale
    rows = [
        Row(
            case.name,
            device,
            "float32",
            case.layout,
            "forward vs float64 reference",
            *errors(y, y_ref),
            tolerance,
            False,
        )
    ]
    # torch's own op has no per-sample affine, and refuses H*W = 1 ("Expected more than 1 spatial element").
    if case.affine != "sample" and x[0, 0].numel() > 1:
        y_torch = F.instance_norm(x, weight=w, bias=b, eps=EPS)
        rows.append(
            Row(
                case.name,
                device,
                "float32",
                case.layout,
                "forward vs torch F.instance_norm",
                *errors(y, y_torch),
                tolerance,
                False,
            )
        )
    for row in rows:
        row.passed = row.max_abs_err <= row.tolerance
    return rows


def backward_row(case: Case, device: str) -> Row:
    fn, _, x, w, b, dy = case_inputs(case, device, torch.float32)
    leaves = [t.clone().requires_grad_() for t in (x, w, b) if t is not None]
    ours = torch.autograd.grad(fn(*leaves), leaves, dy)
    ref_leaves = [t.double().requires_grad_() for t in (x, w, b) if t is not None]
    ref_fn = partial(reference.instance_norm, eps=EPS)
    theirs = torch.autograd.grad(ref_fn(*ref_leaves), ref_leaves, dy.double())
    abs_err = max(errors(a, e)[0] for a, e in zip(ours, theirs, strict=True))
    scale = max(e.abs().max().item() for e in theirs)
    tolerance = (1e-4 + 4 * abs(case.offset) * 6e-8 / case.scale) * max(1.0, scale)
    return Row(
        case.name,
        device,
        "float32",
        case.layout,
        "backward (dx, dw, db) vs reference",
        abs_err,
        abs_err / max(scale, 1e-30),
        tolerance,
        abs_err <= tolerance,
    )


def naive_derivative_row(device: str) -> Row:
    """Shows the per-element formula is wrong: it passes only if that formula disagrees with the numbers."""
    case = CHECK_CASES[0]
    fn, inputs, x, w, b, _ = case_inputs(case, device, torch.float64)
    numeric = numerical_jacobian(fn, inputs)[0]
    _, _, inv_std = reference.forward(x, w, b, EPS)
    eye = torch.eye(x.numel(), dtype=x.dtype, device=x.device)
    # Row i of the naive Jacobian: naive_backward applied to the unit gradient e_i.
    naive = torch.stack([reference.naive_backward(e.reshape(x.shape), inv_std, w).reshape(-1) for e in eye])
    abs_err, rel_err = errors(naive, numeric)
    tolerance = 1e-5 * max(1.0, numeric.abs().max().item())
    return Row(
        case.name,
        device,
        "float64",
        case.layout,
        "naive dx = w*inv_std*dy is WRONG",
        abs_err,
        rel_err,
        tolerance,
        abs_err > 100 * tolerance,
    )


def devices_to_check(device: str) -> list[str]:
    if device not in ("cpu", "cuda", "all"):
        raise DeviceError(f"--device must be cpu, cuda or all, not {device!r}")
    usable = instancenorm.usable_devices()
    if device == "cuda" and "cuda" not in usable:
        reason = "no GPU here" if "cuda" in instancenorm.compiled_devices else "instancenorm was built without CUDA"
        raise DeviceError(f"cannot check CUDA kernels: {reason}")
    return [d for d in ("cpu", "cuda") if d in usable and device in (d, "all")]


def run_checks(device: str = "all") -> list[Row]:
    rows = []
    for dev in devices_to_check(device):
        for case in CHECK_CASES:
            rows.append(gradcheck_row(case, dev))
            rows.extend(forward_rows(case, dev))
            rows.append(backward_row(case, dev))
        rows.append(naive_derivative_row(dev))
    return rows


def format_table(rows: list[Row]) -> str:
    header = ("case", "device", "dtype", "layout", "check", "max abs err", "max rel err", "result")
    lines = [
        (
            r.case,
            r.device,
            r.dtype,
            r.layout,
            r.check,
            f"{r.max_abs_err:.2e}",
            f"{r.max_rel_err:.2e}",
            "pass" if r.passed else "FAIL",
        )
        for r in rows
    ]
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*line) for line in lines]
    passed = sum(r.passed for r in rows)
    out.append(f"\ncheck-grad: {passed} of {len(rows)} checks pass" + ("" if passed == len(rows) else " - FAILED"))
    return "\n".join(out)


def print_report(device: str = "all", json_output: bool = False) -> bool:
    """Run every check, print the table (or JSON) and say whether all passed. Raises DeviceError for a device that
    cannot be checked, before any check runs."""
    rows = run_checks(device)
    ok = all(r.passed for r in rows)
    if json_output:
        print(json.dumps({"ok": ok, "rows": [asdict(r) for r in rows]}, indent=2))
    else:
        print(format_table(rows))
    return ok
