"""End to end: styler's transformer network on its instance-norm kernels vs the same network on torch's.

Baseline: the pytorch/examples fast_neural_style configuration (torch.nn.InstanceNorm2d, NCHW). Compared: the
styler network in NCHW and in channels_last. Measured: stylizing one image (inference mode) at 256, 512 and 1024
px; the network's forward+backward for a batch of 4 at 256 px; and a full training step with a VGG16 loss
network (random weights: the time is the same) and Adam.
"""

from __future__ import annotations

import copy

import torch
import torchvision
from torch import nn

import instancenorm
from benchmarks.timing import median_ms
from styler.network import TransformerNet


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
        "examples (torch IN, NCHW)": (with_torch_instance_norm(ours), torch.contiguous_format),
        "styler NCHW": (ours, torch.contiguous_format),
        "styler channels_last": (copy.deepcopy(ours).to(memory_format=torch.channels_last), torch.channels_last),
    }


def vgg_features() -> nn.Module:
    return torchvision.models.vgg16(weights=None).features[:23].eval().requires_grad_(False)


def run(device: str, quick: bool) -> list[dict]:
    configs = configurations()
    rows = []

    def record(task: str, times: dict[str, float]) -> None:
        baseline = times["examples (torch IN, NCHW)"]
        for config, ms in times.items():
            rows.append({"task": task, "config": config, "device": device, "ms": round(ms, 2),
                         "speedup": round(baseline / ms, 3)})

    for size in (256, 512) if quick else (256, 512, 1024):
        times = {}
        for name, (net, memory_format) in configs.items():
            net = net.to(device)
            x = (torch.rand(1, 3, size, size, device=device) * 255).contiguous(memory_format=memory_format)
            with torch.inference_mode():
                times[name] = median_ms(lambda: net(x), device, warmup=2, repeats=5 if size > 512 else 10)
        record(f"stylize {size}x{size}", times)

    vgg = vgg_features().to(device)
    for task in ("network fwd+bwd, batch 4 at 256", "training step, batch 4 at 256 (VGG16 loss, Adam)"):
        times = {}
        for name, (net, memory_format) in configs.items():
            net = copy.deepcopy(net).train().to(device)
            x = (torch.rand(4, 3, 256, 256, device=device) * 255).contiguous(memory_format=memory_format)
            optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
            loss_net = vgg.to(memory_format=memory_format)

            def step():
                optimizer.zero_grad(set_to_none=True)
                y = net(x)
                loss = loss_net(y).square().mean() if "training" in task else y.square().mean()
                loss.backward()
                if "training" in task:
                    optimizer.step()

            times[name] = median_ms(step, device, warmup=1, repeats=3 if "training" in task else 5)
        record(task, times)
    return rows
