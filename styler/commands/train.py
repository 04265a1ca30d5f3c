"""`styler train`: fit a transformer network to one or more styles with perceptual losses, resumably.

One run = a TrainConfig (the command's options, or a checkpoint's, training/resume.py) + a Training (network,
optimizer, loss, data, position, training/trainer.py) taken to its last step by training/loop.py, in each process
of a torchrun job (training/processes.py).
"""

from __future__ import annotations

import torch.distributed as torch_distributed

from styler.memory import keep_freed_memory
from styler.training.loop import TrainingRun
from styler.training.processes import Processes, choose_device
from styler.training.resume import resolve_config
from styler.training.trainer import Training


def main(**given) -> int:
    """`styler train` with the options the user gave (names as in TrainConfig, plus `resume`); returns the exit code."""
    config, checkpoint = resolve_config(given)
    keep_freed_memory()
    processes = Processes.from_environment()
    device = choose_device(config.device, processes)
    processes.start(device)
    try:
        return TrainingRun(Training(config, checkpoint, processes, device)).run()
    finally:
        if processes.world_size > 1 and torch_distributed.is_initialized():
            torch_distributed.destroy_process_group()
