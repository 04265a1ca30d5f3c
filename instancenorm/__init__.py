"""instancenorm: instance normalization with compiled CPU (C++) and CUDA kernels, autograd and nn modules.

    import instancenorm
    y = instancenorm.instance_norm(x, weight, bias)          # weight/bias (C,) or (N, C)
    instancenorm.instance_norm_(x, weight, bias)             # in place, for inference
    instancenorm.instance_norm(x, weight, bias, out=buffer)  # into a reused buffer, for inference
    layer = instancenorm.InstanceNorm2d(64, affine=True)      # drop-in for torch.nn.InstanceNorm2d
    mean, inv_std, var = instancenorm.instance_moments(x)     # the statistics alone, (N, C)
    y = instancenorm.normalize_with_stats(x, mean, inv_std, weight, bias)  # given statistics, (N, C) or (C,)

`instancenorm.compiled_devices` tells which device types have compiled kernels; `python -m instancenorm` prints it.
The plain-torch reference lives in `instancenorm.reference`; it is never used as a silent fallback.
"""

import torch

try:
    # Loading it registers the ops; compiled, so mypy sees no module there.
    from instancenorm import _C  # type: ignore[attr-defined]  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "instancenorm: the compiled kernels (instancenorm._C) are not available "
        f"({error}). Build them with `pip install --no-build-isolation -e .` from the repository root."
    ) from error

from instancenorm.modules import (
    ConditionalInstanceNorm2d,
    InstanceNorm1d,
    InstanceNorm2d,
    adaptive_instance_norm,
)
from instancenorm.ops import (
    instance_moments,
    instance_norm,
    instance_norm_,
    normalize_with_stats,
    normalize_with_stats_,
)

compiled_devices: tuple[str, ...] = tuple(
    device
    for device in ("cpu", "cuda")
    if torch._C._dispatch_has_kernel_for_dispatch_key("instancenorm::forward", device.upper())
)
"""Device types with compiled kernels in this build ("cpu", and "cuda" when built with CUDA)."""


def usable_devices() -> tuple[str, ...]:
    """Device types that have kernels and hardware here (CUDA needs a GPU as well as the compiled kernels)."""
    return tuple(d for d in compiled_devices if d == "cpu" or torch.cuda.is_available())


__all__ = [
    "ConditionalInstanceNorm2d",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "adaptive_instance_norm",
    "compiled_devices",
    "instance_moments",
    "instance_norm",
    "instance_norm_",
    "normalize_with_stats",
    "normalize_with_stats_",
    "usable_devices",
]
