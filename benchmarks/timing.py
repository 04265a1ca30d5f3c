"""Timing helpers shared by the benchmark scripts."""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable

import torch

def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def median_ms(fn: Callable[[], object], device: str = "cpu", warmup: int = 3, repeats: int = 15,
              min_seconds: float = 0.3) -> float:
    """Median wall time of fn in milliseconds, after warm-up; repeats more while under min_seconds in total."""
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start < min_seconds and len(times) < 200):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def copy_bandwidth_gbs(numel: int, device: str, dtype: torch.dtype = torch.float32) -> float:
    """Device copy bandwidth (read + write bytes per second) with copy_ into a preallocated tensor."""
    src = torch.randn(numel, device=device).to(dtype)
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), device)
    return 2 * src.numel() * src.element_size() / (ms * 1e-3) / 1e9


def machine_description(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        model = "unknown CPU"
    return f"{model}, {os.cpu_count()} cores"
