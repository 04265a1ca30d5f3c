"""Timing, memory and settings helpers shared by the benchmark scripts."""

from __future__ import annotations

import contextlib
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


def median_ms(
    fn: Callable[[], object], device: str = "cpu", warmup: int = 3, repeats: int = 15, min_seconds: float = 0.3
) -> float:
    """Median wall time of fn in milliseconds, after warm-up; repeats more while under min_seconds in total."""
    if SETTINGS["quick"]:  # a smoke run: the numbers only need to exist
        warmup, repeats, min_seconds = min(warmup, 1), min(repeats, 3), 0.0
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


def medians_in_turns_ms(
    fns: dict[str, Callable[[], object]], device: str = "cpu", turns: int = 3, **loop
) -> dict[str, float]:
    """The sides of a comparison measured in turns: `turns` times, each fn in turn (a, b, c, then b, c, a, ...) runs
    median_ms(fn, **loop); each fn's result is the median over its turns.

    A burst of load on a shared machine then slows every side alike, where measuring one side after the other would
    put it all on one side. Each turn is still a loop of its own, so a kernel runs back to back with itself, as in
    the hot loop of a single measurement (alternating single calls measured kernels whose data the other side had
    just pushed out of cache: ours 20-35 % slower, torch's up to 40 % faster)."""
    if SETTINGS["quick"]:
        turns = 1
    names = list(fns)
    results: dict[str, list[float]] = {name: [] for name in names}
    for turn in range(turns):
        for name in names[turn % len(names) :] + names[: turn % len(names)]:
            results[name].append(median_ms(fns[name], device, **loop))
    return {name: statistics.median(ms) for name, ms in results.items()}


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
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


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
