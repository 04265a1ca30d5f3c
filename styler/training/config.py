"""What a training run learns and how: `styler train`'s options, their defaults and their checks, in one place.

This module does not import torch, so the command line can state every default in its help without loading it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, get_args

from styler.devices import check_device
from styler.errors import StylerError, under_option
from styler.model.architecture import ARCHITECTURES, architecture
from styler.model.model_files import BASE_MODEL, StyleModel, resolve_model

LossNetwork = Literal["vgg16", "random", "teacher"]  # the --loss-net choices
LOSS_NETWORKS: tuple[str, ...] = get_args(LossNetwork)


@dataclass(frozen=True)
class LossWeights:
    content: float
    style: float
    tv: float
    color: float = 0.0  # the painting's palette: losses.ColorDistribution


# VGG16 (activations at torchvision's scale, see vgg16.py): content as pytorch/examples, a style weight that leaves
# faces readable after the content-first start, TV around a percent of the total. Random features: the losses are
# relative to their targets, so the weights are ratios. How these were chosen: docs/training.md.
DEFAULT_WEIGHTS = {
    "vgg16": LossWeights(content=1e5, style=1e9, tv=1e5, color=5e8),
    "random": LossWeights(content=1.0, style=1e3, tv=10.0),
    # Distillation: the content term is the mean squared pixel difference (0..1 scale) from the teacher's output.
    "teacher": LossWeights(content=1.0, style=0.0, tv=0.0),
}

# Distillation through VGG16 features (--teacher with --loss-net vgg16): the teacher's output is the target, so there
# is no painting's palette to pull towards, and a lite student at the painting runs' style weight 1e9 gave up the
# photo for a grey embossed relief (structure 0.51); 3e8 keeps it.
FEATURE_DISTILLATION_WEIGHTS = LossWeights(content=1e5, style=3e8, tv=1e5)


# Content first, with VGG16: a network must learn to keep the photo before the style weight rises, or the painting's
# texture covers the photo for good (docs/training.md). A run with --init or --teacher starts from a network that
# already keeps the photo: no content-only steps.
DEFAULT_CONTENT_STEPS = {"vgg16": 100}
# Smallest crop and style image side: the loss networks' deepest maps need room (VGG16's relu4_3 is at 1/8 of the
# input, the random features' 11x11 filters at 1/4 need 44 pixels).
MIN_IMAGE_SIZE = 64
DEFAULT_STYLE_RAMP = {"vgg16": 50}
# --init by default: the shipped base network (it reconstructs photos) for the johnson network with VGG16, which it
# fits; it replaces the content-only steps, so a new painting starts painting at once.
AUTO_INIT = "auto"
BASE_ARCH, BASE_LOSS_NET = "johnson", "vgg16"


@dataclass
class TrainConfig:
    """The `styler train` options; the defaults here are the command's defaults."""

    styles: tuple[str, ...] = ()
    data: str | None = None
    hold_out: str | None = None  # a file listing photo names in --data never trained on (validation photos)
    out: str | None = None
    epochs: int = 3
    batch_size: int = 4  # global: split across processes under torchrun
    image_size: int = 256
    lr: float = 1e-3
    content_weight: float | None = None  # None: DEFAULT_WEIGHTS for the loss network
    style_weight: float | None = None
    tv_weight: float | None = None
    color_weight: float | None = None
    checkpoint_dir: str | None = None
    # Long side of the style images: their strokes come out at this scale (None, in older checkpoints: own size).
    style_size: int | None = 256
    seed: int = 42
    max_steps: int | None = None
    device: str = "auto"
    channels_last: bool = True  # NHWC through both networks and our instance norm: 1.2x a float32 step on a CPU
    amp: bool = False
    workers: int = 2
    arch: str = "johnson"
    loss_net: str = "vgg16"
    vgg_weights: str | None = None
    preview_every: int = 100
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    # A model whose weights the network starts from: AUTO_INIT is the base model where it fits, "none" from scratch.
    init: str | None = AUTO_INIT
    teachers: tuple[str, ...] = ()  # distillation: trained models (names or files), one per style, instead of styles
    # Content first: steps with the content loss alone, then steps over which the style weight rises linearly from
    # 0 to its value; None: DEFAULT_CONTENT_STEPS (from scratch only) and DEFAULT_STYLE_RAMP.
    content_steps: int | None = None
    style_ramp: int | None = None
    overwrite: bool = False  # replace an existing --out (never an input); not kept for a resumed run

    def checked(self) -> TrainConfig:
        """This config with paths made absolute, defaults filled in and every value checked (StylerError)."""
        if self.teachers and self.styles:
            raise StylerError("give --style images or --teacher models, not both (teachers carry their styles)")
        if self.teachers and self.loss_net not in ("teacher", "vgg16"):
            raise StylerError(
                f"--teacher learns with pixels (--loss-net teacher) or VGG16 features (--loss-net vgg16), "
                f"not with --loss-net {self.loss_net}"
            )
        if self.vgg_weights and self.loss_net != "vgg16":
            raise StylerError(f"--vgg-weights is for --loss-net vgg16; this run uses --loss-net {self.loss_net}")
        if self.loss_net == "teacher" and not self.teachers:
            raise StylerError("--loss-net teacher needs --teacher MODEL (one per style)")
        if not self.styles and not self.teachers:
            raise StylerError("give at least one --style IMAGE (or --teacher MODEL, or --resume CHECKPOINT)")
        if self.data is None:
            raise StylerError("give --data FOLDER with the training photos (or --resume CHECKPOINT)")
        if self.arch not in ARCHITECTURES:
            raise StylerError(f"--arch {self.arch!r}: choose one of {', '.join(ARCHITECTURES)}")
        if self.loss_net not in LOSS_NETWORKS:
            raise StylerError(f"--loss-net {self.loss_net!r}: choose one of {', '.join(LOSS_NETWORKS)}")
        check_device(self.device)
        positive = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "max_steps": self.max_steps,
            "keep_checkpoints": self.keep_checkpoints,
        }
        at_least_zero = {
            "workers": self.workers,
            "preview_every": self.preview_every,
            "checkpoint_every": self.checkpoint_every,
        }
        for name, value in positive.items():
            if value is not None and value < 1:
                raise StylerError(f"{flag(name)} {value}: must be at least 1")
        # A teacher's output is already stylized: there is no photo to learn first. An --init network already
        # keeps the photo: it needs no content-only steps.
        default_ramp = 0 if self.teachers else DEFAULT_STYLE_RAMP.get(self.loss_net, 0)
        style_ramp = default_ramp if self.style_ramp is None else self.style_ramp
        init = self.init
        if init == AUTO_INIT:
            fits = self.arch == BASE_ARCH and self.loss_net == BASE_LOSS_NET and not self.teachers
            init = BASE_MODEL if fits else None
        elif init == "none":
            init = None
        default_content_steps = 0 if self.teachers or init else DEFAULT_CONTENT_STEPS.get(self.loss_net, 0)
        content_steps = default_content_steps if self.content_steps is None else self.content_steps
        at_least_zero["style_ramp"] = style_ramp
        at_least_zero["content_steps"] = content_steps
        for name, value in at_least_zero.items():
            if value < 0:
                raise StylerError(f"{flag(name)} {value}: must be 0 or more")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise StylerError(f"--lr {self.lr}: must be a positive number")
        weights = self.loss_weights()
        for name in ("content", "style", "tv", "color"):
            value = getattr(weights, name)
            if not (math.isfinite(value) and value >= 0):
                raise StylerError(f"--{name}-weight {value}: must be a non-negative number")
        smallest = MIN_IMAGE_SIZE
        multiple = architecture(self.arch).size_multiple
        if self.image_size < smallest or self.image_size % multiple:
            raise StylerError(
                f"--image-size {self.image_size}: must be at least {smallest} "
                f"and a multiple of {multiple} for --arch {self.arch}"
            )
        if self.style_size is not None and self.style_size < smallest:
            raise StylerError(f"--style-size {self.style_size}: must be at least {smallest}")
        styles = tuple(str(Path(style).expanduser().resolve()) for style in self.styles)
        teachers = tuple(_teacher_reference(teacher) for teacher in self.teachers)
        names = replace(self, styles=styles, teachers=teachers).style_names
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise StylerError(
                f"{'--teacher' if teachers else '--style'}: several styles are named {duplicates[0]!r}; "
                "styles are named after their files (or their teacher's style)"
            )
        out = Path(self.out or f"{'+'.join(names)}.pth").expanduser().resolve()
        checkpoint_dir = Path(self.checkpoint_dir or Path("checkpoints") / out.stem).expanduser().resolve()
        return replace(
            self,
            styles=styles,
            teachers=teachers,
            style_ramp=style_ramp,
            content_steps=content_steps,
            data=str(Path(self.data).expanduser().resolve()),
            hold_out=str(Path(self.hold_out).expanduser().resolve()) if self.hold_out else None,
            out=str(out),
            checkpoint_dir=str(checkpoint_dir),
            vgg_weights=str(Path(self.vgg_weights).expanduser().resolve()) if self.vgg_weights else None,
            init=model_reference(init) if init else None,
            content_weight=weights.content,
            style_weight=weights.style,
            tv_weight=weights.tv,
            color_weight=weights.color,
        )

    def loss_weights(self) -> LossWeights:
        teacher_features = self.teachers and self.loss_net == "vgg16"
        default = FEATURE_DISTILLATION_WEIGHTS if teacher_features else DEFAULT_WEIGHTS[self.loss_net]
        return LossWeights(
            content=default.content if self.content_weight is None else self.content_weight,
            style=default.style if self.style_weight is None else self.style_weight,
            tv=default.tv if self.tv_weight is None else self.tv_weight,
            color=default.color if self.color_weight is None else self.color_weight,
        )

    @property
    def num_styles(self) -> int:
        return len(self.teachers or self.styles)

    @property
    def style_names(self) -> list[str]:
        if self.teachers:
            return [teacher_model(teacher).styles[0] for teacher in self.teachers]
        return [Path(style).stem for style in self.styles]


def model_reference(name_or_path: str) -> str:
    """--init: a file as an absolute path (the run may resume from elsewhere), a shipped model's name as it is."""
    path = Path(name_or_path).expanduser()
    return str(path.resolve()) if path.exists() else name_or_path


def _teacher_reference(teacher: str) -> str:
    """A shipped model's name as it is, a file as an absolute path; either must load as a one-style model."""
    reference = model_reference(teacher)
    model = teacher_model(reference)
    if model.arch.num_styles != 1:
        raise StylerError(f"--teacher {teacher}: holds {model.arch.num_styles} styles; give one-style models")
    return reference


@functools.cache
def teacher_model(reference: str) -> StyleModel:
    try:
        return resolve_model(reference)
    except StylerError as error:
        raise under_option("--teacher", reference, error) from None


# What a checkpoint fixes: a resumed run may change where files go, how long it runs and how, not what it learns.
RECIPE_FIELDS = (
    "styles",
    "batch_size",
    "image_size",
    "lr",
    "content_weight",
    "style_weight",
    "tv_weight",
    "color_weight",
    "style_size",
    "seed",
    "arch",
    "loss_net",
    "content_steps",
    "style_ramp",
    "teachers",
    "hold_out",
)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _number(value: float) -> str:
    """1e5, 3e8, 1000, 0.001: how the help writes a default."""
    mantissa, exponent = f"{value:e}".split("e")
    if abs(int(exponent)) < 4:
        return f"{value:g}"
    return f"{float(mantissa):g}e{int(exponent)}"


def default_text(name: str) -> str:
    """What --<name> defaults to, in words, for the command's help: defaults are defined here and stated from here."""
    if name.endswith("_weight"):
        term = name.removesuffix("_weight")
        return ", ".join(f"{_number(getattr(DEFAULT_WEIGHTS[net], term))} with {net}" for net in ("vgg16", "random"))
    if name == "style_ramp":
        return ", ".join(f"{DEFAULT_STYLE_RAMP.get(net, 0)} with {net}" for net in ("vgg16", "random"))
    if name == "content_steps":
        stated = ", ".join(f"{DEFAULT_CONTENT_STEPS.get(net, 0)} with {net}" for net in ("vgg16", "random"))
        return f"{stated}; 0 with --teacher or --init, which is base by default with johnson"
    if name == "init":
        return f"{BASE_MODEL}, a shipped network that reconstructs photos, for --arch {BASE_ARCH} with {BASE_LOSS_NET}"
    value = getattr(TrainConfig(), name)
    if isinstance(value, bool):
        return "on" if value else "off"
    return _number(value) if isinstance(value, float) else str(value)
