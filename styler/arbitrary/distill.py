"""Distilling the small encoder (network.SmallEncoder) from VGG16: the route to speed for `--style-image`.

VGG16 up to relu4_1 is three quarters of an arbitrary-style model's arithmetic. The small encoder has VGG16's
layout at a fraction of its channels (half by default: about a quarter of the arithmetic; a quarter of the channels
was too few for a painting it had not seen) and a 1x1 head back to VGG16's channels at each layer AdaIN reads,
trained here to reproduce VGG16's features there (after Wang et al. 2020, "Collaborative Distillation"): on crops
of photos and of paintings, since it must encode both. The loss per layer is the mean
squared distance of the features plus that of their per-channel means and standard deviations (AdaIN's whole use
of a painting), each relative to VGG16's own mean square there, so every layer counts alike whatever its scale.

The decoder is then fine-tuned on the small encoder's features (`train-arbitrary --encoder FILE`); the losses keep
measuring with VGG16, so the pictures are judged as before. The encoder file (and the arbitrary model that carries
it) holds weights derived from VGG16's ImageNet weights (CC BY 4.0, Simonyan & Zisserman 2015).

Resumable and checkpointed like the decoder's training (training.run drives both).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from styler.arbitrary.model_file import encoder_dict, save_encoder
from styler.arbitrary.network import Encoder, SmallEncoder
from styler.arbitrary.training import Images, ResumableTraining, RunConfig, mean_std
from styler.errors import StylerError
from styler.model.model_files import ENCODER_CHECKPOINT_FORMAT


@dataclass(kw_only=True)
class EncoderConfig(RunConfig):
    """One distillation run; photos / paintings are the file lists the command found. No previews: the encoder has no
    picture of its own (preview_every is training.run's)."""

    width: float = 0.5  # a quarter lost an unseen painting's style (docs/arbitrary.md)
    steps: int = 2000
    image_size: int = 160
    lr: float = 1e-3
    lr_end: float = 1e-5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.width <= 1:
            raise StylerError(f"--width {self.width}: must be more than 0 and at most 1")


@dataclass
class DistillationLosses:
    features: Tensor
    statistics: Tensor
    total: Tensor

    def values(self) -> dict[str, float]:
        return {name: float(getattr(self, name).detach()) for name in ("features", "statistics", "total")}


def distillation_loss(student: dict[str, Tensor], teacher: dict[str, Tensor]) -> DistillationLosses:
    """Per layer, relative to the teacher's mean square there: features, and per-channel means and stds."""
    features = statistics = torch.zeros((), device=next(iter(teacher.values())).device)
    for layer, target in teacher.items():
        target = target.float()
        ours = student[layer].float()
        scale = target.square().mean().clamp_min(1e-12)
        features = features + F.mse_loss(ours, target) / scale
        (our_mean, our_std), (mean, std) = mean_std(ours), mean_std(target)
        statistics = statistics + (F.mse_loss(our_mean, mean) + F.mse_loss(our_std, std)) / scale
    return DistillationLosses(features, statistics, features + statistics)


class EncoderDistillation(ResumableTraining):
    """VGG16 (the teacher), the small encoder, its optimizer, the crops and the position of a run."""

    def __init__(self, config: EncoderConfig, vgg_weights: dict[str, Tensor] | None, resume: dict | None = None):
        self.config = config
        self.device = torch.device(config.device)
        torch.manual_seed(config.seed)
        self.teacher = Encoder(vgg_weights).to(self.device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.encoder = SmallEncoder(config.width).to(self.device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.start(self.encoder, resume, "encoder")
        self.images = Images(config)
        if resume is None:
            start_from_vgg16(self.encoder, self.teacher, self._prepared(torch.cat(self.images.batch(self.generator))))

    def losses(self, photos: Tensor, styles: Tensor) -> DistillationLosses:
        """On the photo crops and the style crops alike: the encoder must encode both."""
        images = self._prepared(torch.cat([photos, styles]))
        with torch.no_grad(), self.autocast():
            teacher = self.teacher(images, SmallEncoder.LAYERS)
        with self.autocast():
            student = self.encoder(images, SmallEncoder.LAYERS)
        return distillation_loss(student, teacher)

    def preview_grid(self) -> None:
        return None

    def record(self) -> dict[str, Any]:
        recipe = asdict(self.config)
        for name in ("photos", "out", "checkpoint_dir", "notes", "preview_every"):
            recipe.pop(name)
        recipe["paintings"] = [Path(p).name for p in self.config.paintings]
        recipe["photo_count"] = len(self.config.photos)
        recipe["loss"] = (
            f"features + per-channel mean/std, relative to VGG16's mean square, at {', '.join(SmallEncoder.LAYERS)}"
        )
        recipe.update(steps_done=self.step, seconds=round(self.seconds, 1), **self.config.notes)
        return recipe

    def write_model(self) -> None:
        save_encoder(Path(self.config.out), self.encoder, self.record())

    def checkpoint(self) -> dict[str, Any]:
        return {
            "format": ENCODER_CHECKPOINT_FORMAT,
            "config": {**asdict(self.config), "painting_sizes": list(self.config.painting_sizes)},
            "model": encoder_dict(self.encoder, self.record()),
            "encoder": self.encoder.state_dict(),
            **self.position(),
        }


@torch.no_grad()
def start_from_vgg16(encoder: SmallEncoder, teacher: Encoder, images: Tensor) -> None:
    """A start near VGG16 instead of random weights: each convolution keeps VGG16's filters of largest norm (reading
    the channels kept before it), and each head is the least-squares map from those narrow features to VGG16's on
    `images`. Measured: the feature loss after 150 steps 1.24 from here, 2.1 after 300 from a random start."""
    kept = torch.arange(3)
    for small, full in zip(encoder.layers, teacher.vgg.layers, strict=False):
        if isinstance(small, torch.nn.Conv2d) and isinstance(full, torch.nn.Conv2d):
            weight, bias = full.weight[:, kept], full.bias
            assert bias is not None and small.bias is not None
            chosen = weight.flatten(1).norm(dim=1).argsort(descending=True)[: small.out_channels].sort().values
            small.weight.copy_(weight[chosen])
            small.bias.copy_(bias[chosen])
            kept = chosen
    targets = teacher(images, SmallEncoder.LAYERS)
    narrow = encoder.trunk(images, SmallEncoder.LAYERS)
    for layer, features in narrow.items():
        inputs = features.float().permute(0, 2, 3, 1).flatten(0, 2)
        inputs = torch.cat([inputs, inputs.new_ones(len(inputs), 1)], dim=1)
        wanted = targets[layer].float().permute(0, 2, 3, 1).flatten(0, 2)
        solution = torch.linalg.lstsq(inputs, wanted).solution  # (narrow channels + 1, VGG16's)
        head = encoder.head(layer)
        assert head.bias is not None
        head.weight.copy_(solution[:-1].T[:, :, None, None])
        head.bias.copy_(solution[-1])
