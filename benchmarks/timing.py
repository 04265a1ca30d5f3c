"""Timing, memory and settings helpers shared by the benchmark scripts."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import statistics
import time
from collections.abc import Callable

import torch

# The settings this process runs under (apply_settings): the memory measurements re-apply them in their children.
SETTINGS = {"threads": torch.get_num_threads(), "malloc": "default", "quick": False}


def apply_settings(threads: int, malloc: str, quick: bool = False) -> None:
    """Thread count, malloc behaviour ("default" or "kept", see styler/memory.py) and quick (few repeats)."""
    from styler.memory import keep_freed_memory

    if malloc == "kept" and not keep_freed_memory():
        raise SystemExit("mallopt is not available here: run with --malloc default")
    torch.set_num_threads(threads)
    SETTINGS.update(threads=threads, malloc=malloc, quick=quick)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def median_ms(fn: Callable[[], object], device: str = "cpu", warmup: int = 3, repeats: int = 15,
              min_seconds: float = 0.3) -> float:
    """Median wall time of fn in milliseconds, after warm-up; repeats more while under min_seconds in total."""
    return interleaved_medians_ms({"fn": fn}, device, warmup, repeats, min_seconds)["fn"]


def interleaved_medians_ms(fns: dict[str, Callable[[], object]], device: str = "cpu", warmup: int = 2,
                           repeats: int = 5, min_seconds: float = 0.0) -> dict[str, float]:
    """Median wall time of each fn in milliseconds, after warm-up, timed in turns: a, b, c, then b, c, a, ...;
    more rounds while under min_seconds in total (at most 200).

    A burst of load on a shared machine then slows every side of a comparison alike, where timing one side after
    the other would put it all on one side."""
    if SETTINGS["quick"]:  # a smoke run: the numbers only need to exist
        warmup, repeats, min_seconds = 1, min(repeats, 3), 0.0
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    start = time.perf_counter()
    rounds = 0
    while rounds < repeats or (time.perf_counter() - start < min_seconds * len(names) and rounds < 200):
        for name in names[rounds % len(names):] + names[: rounds % len(names)]:
            t0 = time.perf_counter()
            fns[name]()
            sync(device)
            times[name].append(time.perf_counter() - t0)
        rounds += 1
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def peak_memory_mib(fn: Callable[[], object], device: str = "cpu") -> float | None:
    """Peak memory while fn runs once, above what was in use just before, in MiB.

    CUDA: the caching allocator's peak of allocated bytes. CPU: the process's peak resident set (VmHWM, reset
    through /proc/self/clear_refs) over its resident set before the call, after malloc_trim has handed freed memory
    back: what the machine must have free. Call it on a fresh process's first call (see end_to_end.py), as later
    calls reuse what malloc kept. None where Linux's /proc interface is missing.
    """
    gc.collect()
    _malloc_trim()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current VmRSS (Linux >= 4.0)
        before = _status_kib("VmRSS")
    except (OSError, StopIteration):
        return None
    fn()
    return (_status_kib("VmHWM") - before) / 1024


def _malloc_trim() -> None:
    """Return freed heap memory to the system (glibc), so that reusing it shows in the resident set again."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


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
