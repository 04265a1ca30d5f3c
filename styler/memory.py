"""Memory: keep freed memory in the process, tell how much is available, recognise running out of it.

Keeping freed memory: big tensors are then recycled instead of page-faulted in anew.

glibc serves every allocation above its mmap threshold (at most 32 MiB by default) with a fresh mmap, and each
page of that memory faults on first touch: filling an activation-sized tensor that way costs several times what
filling recycled memory does (docs/benchmarks.md, the default-malloc rows). Raising the threshold, the trim
threshold and the top pad through mallopt() makes malloc keep and reuse it, the in-process equivalent of setting
MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ / MALLOC_TOP_PAD_.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_INT_MAX = 2**31 - 1


def keep_freed_memory() -> bool:
    """Apply the settings; False where the C library has no mallopt (not glibc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    settings = {_M_MMAP_THRESHOLD: 1 << 30, _M_TRIM_THRESHOLD: _INT_MAX, _M_TOP_PAD: 1 << 30}
    return all(mallopt(option, value) == 1 for option, value in settings.items())


def is_out_of_memory(error: BaseException) -> bool:
    """Whether an error raised while stylizing means "not enough memory": CUDA raises torch.OutOfMemoryError, the
    CPU allocator a plain RuntimeError "... can't allocate memory"."""
    import torch

    return isinstance(error, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(error, RuntimeError) and "allocate" in str(error)
    )


def available_memory(device: torch.device) -> int | None:
    """Bytes that can still be allocated on `device`: the GPU's free memory, or the CPU's MemAvailable (Linux); None
    where it cannot be told."""
    if device.type == "cuda":
        import torch

        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None  # not Linux: no estimate, no refusal


# --max-memory: a number of bytes with an optional binary unit (4G and 4GiB are both 4 * 2**30).
UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
DEFAULT_MEMORY_SHARE = 0.75  # of MemAvailable when stylize starts: room for the page cache and other processes


def parse_bytes(text: str) -> int | None:
    """'4G', '2500M', '4GiB', '1.5g' or a plain number of bytes; None when `text` is none of these."""
    cleaned = text.strip().upper().removesuffix("B").removesuffix("I")
    number, unit = cleaned.rstrip("KMGT"), cleaned[len(cleaned.rstrip("KMGT")) :]
    if unit not in UNITS:
        return None
    try:
        value = float(number) * UNITS[unit]
    except ValueError:
        return None
    return int(value) if 1 <= value < float("inf") else None


def default_memory_budget() -> int | None:
    """What a stylize run may use when --max-memory is not given: a share of the memory available now (None where
    that cannot be told: then every photo is stylized whole)."""
    import torch

    available = available_memory(torch.device("cpu"))
    return None if available is None else int(available * DEFAULT_MEMORY_SHARE)
