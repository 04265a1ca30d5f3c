"""Kernel level: instancenorm vs torch.nn.functional.instance_norm, affine, on the transformer network's shapes.

Run through `python -m benchmarks kernels`, which runs this once per malloc setting and thread count.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

import instancenorm
from benchmarks.timing import copy_bandwidth_gbs, medians_in_turns_ms

# What the network produces for a batch of 4 at 256 px, plus one big plane and many small ones.
SHAPES = [(4, 32, 256, 256), (4, 64, 128, 128), (4, 128, 64, 64), (1, 32, 1024, 1024), (16, 128, 32, 32)]
QUICK_SHAPES = [(2, 32, 128, 128)]


def implementations():
    return {
        "native": lambda x, w, b: F.instance_norm(x, weight=w, bias=b),
        "ours": lambda x, w, b: instancenorm.instance_norm(x, w, b),
    }


def measure_case(shape, channels_last: bool, dtype: torch.dtype, device: str) -> list[dict]:
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=memory_format)
    w = torch.rand(shape[1], device=device, dtype=dtype) + 0.5
    b = torch.randn(shape[1], device=device, dtype=dtype)
    dy = torch.randn_like(x)
    calls: dict[str, dict[str, Callable[[], object]]] = {"forward": {}, "backward": {}, "forward+backward": {}}
    for name, fn in implementations().items():
        leaves = [t.clone().requires_grad_() for t in (x, w, b)]
        y = fn(*leaves)
        calls["forward"][name] = torch.no_grad()(lambda fn=fn: fn(x, w, b))
        calls["backward"][name] = lambda y=y, leaves=leaves: torch.autograd.grad(y, leaves, dy, retain_graph=True)
        calls["forward+backward"][name] = lambda fn=fn, leaves=leaves: torch.autograd.grad(fn(*leaves), leaves, dy)
    # native and ours in three turns of a loop of at least 0.1 s each (see timing.medians_in_turns_ms)
    times = {
        op: medians_in_turns_ms(fns, device, turns=3, warmup=2, repeats=5, min_seconds=0.1) for op, fns in calls.items()
    }
    # Forward moves the input once and the output once: bandwidth as a fraction of a plain copy of those bytes.
    copy_gbs = copy_bandwidth_gbs(x.numel(), device, dtype)
    forward_gbs = 2 * x.numel() * x.element_size() / (times["forward"]["ours"] * 1e-3) / 1e9
    rows = []
    for op, t in times.items():
        row = {
            "shape": list(shape),
            "layout": "channels_last" if channels_last else "nchw",
            "dtype": str(dtype).removeprefix("torch."),
            "device": device,
            "op": op,
            "native_ms": round(t["native"], 4),
            "ours_ms": round(t["ours"], 4),
            "speedup": round(t["native"] / t["ours"], 3),
        }
        if op == "forward":
            row |= {
                "ours_gbs": round(forward_gbs, 2),
                "copy_gbs": round(copy_gbs, 2),
                "fraction_of_copy": round(forward_gbs / copy_gbs, 3),
            }
        rows.append(row)
    return rows


def run(device: str, quick: bool) -> list[dict]:
    dtypes = [torch.float32] if device == "cpu" else [torch.float32, torch.float16, torch.bfloat16]
    rows = []
    for shape in QUICK_SHAPES if quick else SHAPES:
        for channels_last in (False, True):
            for dtype in dtypes:
                rows.extend(measure_case(shape, channels_last, dtype, device))
    return rows
