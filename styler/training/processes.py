"""Distributed training: this process's place in a torchrun job, its device, and agreeing across processes.

Under torchrun every process trains on its shard of each global batch with DistributedDataParallel (gloo on CPU,
NCCL on CUDA) and only rank 0 writes files; a plain run is the one-process case.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_distributed

from styler.devices import pick_device


@dataclass(frozen=True)
class Processes:
    """This process's place in a torchrun job; the defaults describe a plain single-process run."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls) -> Processes:
        """torchrun sets WORLD_SIZE, RANK and LOCAL_RANK (and MASTER_ADDR/PORT for the rendezvous)."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls()
        return cls(world_size, int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")))

    def start(self, device: torch.device) -> None:
        if self.world_size > 1 and not torch_distributed.is_initialized():
            torch_distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")

    def any(self, flags: list[bool], device: torch.device) -> list[bool]:
        """Each flag, true if it is true in any process: every process then takes the same branch."""
        if self.world_size == 1:
            return flags
        values = torch.tensor([float(flag) for flag in flags], device=device)
        torch_distributed.all_reduce(values, op=torch_distributed.ReduceOp.MAX)
        return [bool(value) for value in values.tolist()]


def choose_device(requested: str, processes: Processes) -> torch.device:
    device = pick_device(requested)
    if device.type == "cuda":
        device = torch.device("cuda", processes.local_rank)
        torch.cuda.set_device(device)
    return device
