"""The statistics' dtype, for the fake implementations (ops.py) and the test oracle (reference.py) alike, so that
neither imports the other. The compiled kernels state the same rule in csrc/instance_norm.cpp (stats_dtype)."""

from __future__ import annotations

import torch


def stats_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of mean / inv_std for an input dtype: float64 stays, everything else accumulates in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32
