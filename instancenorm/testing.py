"""Sample problems for the kernels, shared by the test suite and `styler check-grad`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Case:
    """One instance-norm problem: shape, memory layout, kind of affine parameters and value range."""

    name: str
    shape: tuple[int, ...]
    channels_last: bool = False
    affine: str = "channel"  # "none", "channel" (C,) or "sample" (N, C)
    offset: float = 0.0
    scale: float = 1.0
    constant_channel: bool = False  # channel 0 holds one value in every instance

    @property
    def layout(self) -> str:
        return "channels_last" if self.channels_last else "contiguous"

    def make(
        self, device: str, dtype: torch.dtype, seed: int = 0
    ) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor]:
        """(x, weight, bias, grad_output), drawn in float64 from a fixed seed, then cast and moved."""
        g = torch.Generator().manual_seed(seed)
        n, c = self.shape[:2]
        x = torch.randn(self.shape, generator=g, dtype=torch.float64) * self.scale + self.offset
        if self.constant_channel:
            x[:, 0] = self.offset + 0.25
        x = x.to(dtype)
        if self.channels_last:  # (N, *spatial, C) in memory, same logical shape
            x = x.permute(0, *range(2, x.dim()), 1).contiguous().permute(0, x.dim() - 1, *range(1, x.dim() - 1))
        param_shape = {"none": None, "channel": (c,), "sample": (n, c)}[self.affine]
        w = b = None
        if param_shape is not None:
            w = (torch.rand(param_shape, generator=g, dtype=torch.float64) * 1.5 + 0.5).to(dtype)
            b = torch.randn(param_shape, generator=g, dtype=torch.float64).to(dtype)
        dy = torch.randn(self.shape, generator=g, dtype=torch.float64).to(dtype)

        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return x.to(device), move(w), move(b), dy.to(device)


# The cases `styler check-grad` proves; small enough for numerical Jacobians.
CHECK_CASES = [
    Case("per-channel affine", (2, 3, 5, 4)),
    Case("per-channel affine", (2, 3, 5, 4), channels_last=True),
    Case("per-sample affine", (2, 3, 4, 5), affine="sample"),
    Case("per-sample affine", (2, 3, 4, 5), channels_last=True, affine="sample"),
    Case("no affine", (2, 3, 5, 4), affine="none"),
    Case("H*W = 1", (3, 4, 1, 1)),
    Case("large offset 1e4", (2, 3, 5, 4), offset=1e4),
    Case("constant channel", (2, 3, 5, 4), constant_channel=True),
    Case("3-D (N, C, L)", (2, 3, 17)),
    Case("3-D (N, C, L)", (2, 3, 17), channels_last=True),
]
