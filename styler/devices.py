"""The device a command runs on: --device auto, cpu or cuda, checked against this build and machine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

from styler.errors import StylerError

if TYPE_CHECKING:
    import torch

Device = Literal["auto", "cpu", "cuda"]  # the --device choices
DEVICES: tuple[str, ...] = get_args(Device)


def check_device(requested: str) -> None:
    if requested not in DEVICES:
        raise StylerError(f"--device {requested!r}: choose one of {', '.join(DEVICES)}")


def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AMX or AVX-512 BF16). Elsewhere bfloat16 is emulated and
    several times slower than float32 (measured 6x on an AVX2-only EPYC), so mixed precision is refused there."""
    import torch

    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def pick_device(requested: str) -> torch.device:
    import torch

    import instancenorm

    cuda_ready = "cuda" in instancenorm.compiled_devices and torch.cuda.is_available()
    if requested == "cuda" and not cuda_ready:
        why = (
            "no CUDA GPU is visible"
            if "cuda" in instancenorm.compiled_devices
            else "instancenorm was built without CUDA"
        )
        raise StylerError(f"--device cuda: {why}")
    return torch.device("cuda" if requested == "cuda" or (requested == "auto" and cuda_ready) else "cpu")
