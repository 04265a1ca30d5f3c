"""End to end: styler's transformer network on its instance-norm kernels vs the same network on torch's.

Baseline: the pytorch/examples fast_neural_style configuration (torch.nn.InstanceNorm2d, NCHW). Compared: the
styler network in NCHW and in channels_last. Measured: stylizing one image (inference mode) at 256, 512 and 1024
px; the network's forward+backward for a batch of 4 at 256 px; and a full training step with a VGG16 loss
network (random weights: the time is the same) and Adam.

The configurations are timed in turns, call by call, so load from elsewhere on a shared machine slows them alike.
Each row has the median time and the peak memory of one call (`peak_mib`, see timing.peak_memory_mib). On the CPU
the peak is the growth of the resident set during the first call in a fresh process (forked from a server that has
imported torch, so it costs no import), under the same thread count and malloc setting as the timing.
"""

from __future__ import annotations

import concurrent.futures
import copy
import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchvision
from torch import nn

import instancenorm
from benchmarks.timing import SETTINGS, apply_settings, medians_in_turns_ms, peak_memory_mib
from styler.model.network import TransformerNet

BASELINE = "examples (torch IN, NCHW)"


@dataclass(frozen=True)
class Task:
    name: str
    kind: str  # "stylize" (inference), "fwd+bwd" (the network alone) or "train" (VGG16 loss + Adam step)
    batch: int
    size: int
    repeats: int


TASKS = [
    Task("stylize 256x256", "stylize", 1, 256, 10),
    Task("stylize 512x512", "stylize", 1, 512, 10),
    Task("stylize 1024x1024", "stylize", 1, 1024, 5),
    Task("network fwd+bwd, batch 4 at 256", "fwd+bwd", 4, 256, 5),
    Task("training step, batch 4 at 256 (VGG16 loss, Adam)", "train", 4, 256, 3),
]
QUICK_TASKS = [
    Task("stylize 128x128", "stylize", 1, 128, 3),
    Task("network fwd+bwd, batch 1 at 128", "fwd+bwd", 1, 128, 3),
    Task("training step, batch 1 at 128 (VGG16 loss, Adam)", "train", 1, 128, 3),
]


class TorchInstanceNorm(nn.InstanceNorm2d):
    """torch's own layer, accepting (and ignoring) the style argument of styler's network."""

    def forward(self, x, style=None):
        return super().forward(x)


def with_torch_instance_norm(net: nn.Module) -> nn.Module:
    baseline = copy.deepcopy(net)
    for parent in baseline.modules():
        for name, child in parent.named_children():
            if isinstance(child, instancenorm.InstanceNorm2d):
                replacement = TorchInstanceNorm(child.num_features, affine=True)
                replacement.load_state_dict(child.state_dict())
                setattr(parent, name, replacement)
    return baseline


def configurations() -> dict[str, tuple[nn.Module, torch.memory_format]]:
    torch.manual_seed(0)
    ours = TransformerNet().eval()
    return {
        BASELINE: (with_torch_instance_norm(ours), torch.contiguous_format),
        "styler NCHW": (ours, torch.contiguous_format),
        "styler channels_last": (copy.deepcopy(ours).to(memory_format=torch.channels_last), torch.channels_last),
    }


def vgg_features() -> nn.Module:
    return torchvision.models.vgg16(weights=None).features[:23].eval().requires_grad_(False)


def make_step(task: Task, net: nn.Module, memory_format: torch.memory_format, device: str) -> Callable[[], object]:
    """The call that is timed: its inputs, network copy, loss network and optimizer are made here, outside it."""
    x = (torch.rand(task.batch, 3, task.size, task.size, device=device) * 255).contiguous(memory_format=memory_format)
    if task.kind == "stylize":
        net = net.to(device)

        def stylize():
            with torch.inference_mode():
                return net(x)

        return stylize
    net = copy.deepcopy(net).train().to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_net = vgg_features().to(device, memory_format=memory_format) if task.kind == "train" else None

    def step():
        optimizer.zero_grad(set_to_none=True)
        y = net(x)
        loss = y.square().mean() if loss_net is None else loss_net(y).square().mean()
        loss.backward()
        if loss_net is not None:
            optimizer.step()

    return step


def _peak_in_child(task: Task, config: str, device: str, settings: dict) -> float | None:
    apply_settings(**settings)
    net, memory_format = configurations()[config]
    return peak_memory_mib(make_step(task, net, memory_format, device), device)


def measure_peaks(tasks: list[Task], configs: list[str], device: str) -> dict[tuple[str, str], float | None]:
    """Peak memory of each (task, config), each in a fresh process (CPU) or in this one (CUDA)."""
    if device == "cuda":
        all_configs = configurations()
        return {
            (t.name, c): peak_memory_mib(make_step(t, *all_configs[c], device), device) for t in tasks for c in configs
        }
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["benchmarks.end_to_end"])  # import torch once; each child is a cheap fork
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context, max_tasks_per_child=1) as pool:
        futures = {
            (t.name, c): pool.submit(_peak_in_child, t, c, device, dict(SETTINGS)) for t in tasks for c in configs
        }
        return {key: future.result() for key, future in futures.items()}


def run(device: str, quick: bool) -> list[dict]:
    configs = configurations()
    tasks = QUICK_TASKS if quick else TASKS
    peaks = measure_peaks(tasks, list(configs), device)
    rows = []
    for task in tasks:
        steps = {name: make_step(task, net, memory_format, device) for name, (net, memory_format) in configs.items()}
        for step in steps.values():  # warm-up
            for _ in range(1 if task.kind == "train" else 2):
                step()
        # Calls of 0.1-6 s: one call per turn, the configurations in turns (see timing.medians_in_turns_ms).
        times = medians_in_turns_ms(steps, device, turns=task.repeats, warmup=0, repeats=1, min_seconds=0.0)
        del steps  # the next task's networks, optimizers and loss networks replace these
        for name, ms in times.items():
            peak = peaks[task.name, name]
            rows.append(
                {
                    "task": task.name,
                    "config": name,
                    "device": device,
                    "ms": round(ms, 2),
                    "speedup": round(times[BASELINE] / ms, 3),
                    "peak_mib": None if peak is None else round(peak, 1),
                }
            )
    return rows
