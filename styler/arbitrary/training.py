"""Training the decoder (Huang & Belongie 2017): photos as content, paintings and photos as styles.

Each step encodes a batch of photo crops and a batch of style crops, gives the photos' features the styles'
statistics (AdaIN on our kernels, the target t), decodes t and encodes the result again. The loss is AdaIN's:
content, the mean squared distance of the result's features from t (not from the photo: the decoder must invert
the transferred features), plus style, the distance of the result's per-channel means and standard deviations from
the style crop's at STYLE_LAYERS. Where paintings are few, photos stand in for them: the decoder learns to invert
any statistics, not to paint one painting, and the paintings it is used with need not be among them.

Resumable: a checkpoint every N steps holds the decoder, the optimizer, the step and every random state, so
`--resume` continues where the run stopped. Previews (photo | style | result) of held-out pairs beside them.
"""

from __future__ import annotations

import math
import random
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from tqdm import tqdm

from styler.arbitrary.adain import adain_layers, style_statistics
from styler.arbitrary.model_file import (
    CHECKPOINT_FORMAT,
    SMALL_NETWORK,
    ArbitraryModel,
    arbitrary_model_from,
    model_dict,
    read_small_encoder,
    save_arbitrary_model,
    small_encoder_from,
)
from styler.arbitrary.network import CONTENT_LAYER, LEVEL_LAYERS, STYLE_LAYERS, Decoder, Encoder, SmallEncoder
from styler.errors import StylerError
from styler.io.files import write_atomically
from styler.io.images import Photo, read_photo, tensor_to_image, to_uint8_tensor, write_photo
from styler.model.checkpoints import checkpoint_files, file_for
from styler.model.model_files import is_arbitrary, read_model_contents, resolve_model_file

EXIT_INTERRUPTED = 130


@dataclass(kw_only=True)
class RunConfig:
    """What a decoder's training (ArbitraryConfig) and an encoder's distillation (distill.EncoderConfig) both take:
    the files the command found, the crops, the learning rate's schedule, checkpoints and the device. Each run
    type states its own defaults for steps, image_size, lr and lr_end."""

    photos: list[str]
    paintings: list[str]
    out: str
    checkpoint_dir: str
    steps: int
    batch_size: int = 4  # photo crops per step, and as many style crops (paintings, or photos standing in)
    image_size: int  # square crops of photos and styles
    photo_size: int = 300  # photos' short side before the random crop
    painting_sizes: tuple[int, int] = (256, 768)  # paintings' long side is drawn from this range before a crop
    painting_share: float = 0.5  # of the style crops, how many come from paintings (when any are given)
    # Of the painting crops, how many get their colour channels permuted: two paintings then span six palettes,
    # so the networks meet colour statistics beyond the few paintings they train with.
    palette_shuffle: float = 0.5
    lr: float
    lr_end: float  # cosine decay to this over the run
    checkpoint_every: int = 100
    preview_every: int = 100
    keep_checkpoints: int = 3
    seed: int = 42
    amp: bool = False  # bfloat16 autocast (only where the CPU has bfloat16 instructions, or on CUDA)
    device: str = "cpu"
    vgg_weights: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)  # free-form provenance for the model file

    def __post_init__(self) -> None:
        """Values no run can use, as the option that gave them (one line, exit 2)."""
        at_least = {"steps": 1, "batch_size": 1, "checkpoint_every": 1, "preview_every": 1, "keep_checkpoints": 1}
        at_least["image_size"] = 32  # the encoder pools three times and the decoder pads: 4x4 features at least
        for name, low in at_least.items():
            if getattr(self, name) < low:
                raise StylerError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be at least {low}")
        if not self.lr > 0:
            raise StylerError(f"--lr {self.lr}: must be more than 0")


@dataclass(kw_only=True)
class ArbitraryConfig(RunConfig):
    """One decoder training run. photos / paintings / previews are file lists the command found."""

    previews: list[str]  # held-out photos for the preview sheet (never trained on)
    steps: int = 1500
    image_size: int = 256
    lr: float = 5e-4
    lr_end: float = 5e-5
    content_weight: float = 1.0
    style_weight: float = 10.0
    decoder_width: float = 0.5
    decoder_skips: tuple[str, ...] = ("relu2_1", "relu3_1")  # see network.py; () reads relu4_1 alone
    # The content loss at every layer the decoder reads (each AdaIN target inverted), not at relu4_1 alone: with
    # relu4_1 alone a skip decoder kept the style's statistics and lost the photo's outlines (structure 0.29 against
    # the peer's 0.57 on the training paintings; its features' error was 0.9 of the target's own size).
    content_at_skips: bool = True
    init: str | None = None  # an arbitrary model file whose decoder weights start the run (skips it lacks: zero)
    # A small encoder (distill.py) the decoder reads instead of VGG16, carried in the model file; the losses still
    # measure with VGG16. None: VGG16 encodes too.
    encoder: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.decoder_width > 0:
            raise StylerError(f"--decoder-width {self.decoder_width}: must be more than 0")
        if not self.style_weight >= 0:
            raise StylerError(f"--style-weight {self.style_weight}: must be 0 or more")


def _square_crop(image: Tensor, size: int, generator: torch.Generator) -> Tensor:
    height, width = image.shape[-2:]
    top = int(torch.randint(0, height - size + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - size + 1, (1,), generator=generator))
    crop = image[..., top : top + size, left : left + size]
    return crop.flip(-1) if torch.rand((), generator=generator) < 0.5 else crop


def _resized(image: Image.Image, short_side: int | None = None, long_side: int | None = None) -> Image.Image:
    side = min(image.size) if short_side is not None else max(image.size)
    factor = (short_side or long_side or side) / side
    size = max(1, round(image.width * factor)), max(1, round(image.height * factor))
    return image.resize(size, Image.Resampling.LANCZOS if factor < 1 else Image.Resampling.BICUBIC)


class Images:
    """The photos (short side photo_size) and paintings (full size, rescaled per crop), decoded once into memory."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.photos = [
            to_uint8_tensor(_resized(read_photo(Path(p)).rgb, short_side=config.photo_size)) for p in config.photos
        ]
        self.paintings = [read_photo(Path(p)).rgb for p in config.paintings]
        if len(self.photos) < 2:
            raise StylerError("training an arbitrary-style decoder needs at least two photos")

    def photo_crop(self, generator: torch.Generator) -> Tensor:
        index = int(torch.randint(0, len(self.photos), (1,), generator=generator))
        return _square_crop(self.photos[index], self.config.image_size, generator)

    def style_crop(self, generator: torch.Generator) -> Tensor:
        """A painting at a random scale (its strokes at many sizes), or a photo standing in for one."""
        if self.paintings and torch.rand((), generator=generator) < self.config.painting_share:
            index = int(torch.randint(0, len(self.paintings), (1,), generator=generator))
            low, high = self.config.painting_sizes
            long_side = int(torch.randint(low, high + 1, (1,), generator=generator))
            painting = self.paintings[index]
            scaled = _resized(painting, long_side=long_side)
            if min(scaled.size) < self.config.image_size:
                scaled = _resized(painting, short_side=self.config.image_size)
            crop = _square_crop(to_uint8_tensor(scaled), self.config.image_size, generator)
            if torch.rand((), generator=generator) < self.config.palette_shuffle:
                crop = crop[torch.randperm(3, generator=generator)]
            return crop
        return self.photo_crop(generator)

    def batch(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        size = self.config.batch_size
        photos = torch.stack([self.photo_crop(generator) for _ in range(size)])
        styles = torch.stack([self.style_crop(generator) for _ in range(size)])
        return photos.float(), styles.float()


def mean_std(features: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std, differentiable (the loss trains through the result's statistics)."""
    var, mean = torch.var_mean(features.float(), dim=(2, 3), unbiased=False)
    return mean, (var + eps).sqrt()


@dataclass
class Losses:
    content: Tensor
    style: Tensor
    total: Tensor

    def values(self) -> dict[str, float]:
        return {name: float(getattr(self, name).detach()) for name in ("content", "style", "total")}


class ResumableTraining:
    """What the decoder's training and the encoder's distillation share: the optimizer over the trained network, the
    crops' generator, the step and time, the learning rate's cosine, autocast, one step, and their checkpointed
    state, restored bit for bit on resuming. Subclasses set config, device and images and define losses()."""

    config: Any
    device: torch.device
    images: Images

    def start(self, trained: nn.Module, resume: dict | None, key: str) -> None:
        """The optimizer over `trained`, and on resuming the checkpoint's `key` weights and every position."""
        self.optimizer = torch.optim.Adam(trained.parameters(), lr=self.config.lr)
        self.generator = torch.Generator().manual_seed(self.config.seed)
        self.step, self.seconds = 0, 0.0
        if resume is not None:
            trained.load_state_dict(resume[key])
            self.optimizer.load_state_dict(resume["optimizer"])
            self.generator.set_state(resume["generator"])
            torch.set_rng_state(resume["torch_rng"])
            self.step, self.seconds = int(resume["step"]), float(resume["seconds"])

    def position(self) -> dict[str, Any]:
        """The checkpoint's entries that `start` restores, besides the trained weights."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "step": self.step,
            "seconds": self.seconds,
        }

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device.type, torch.bfloat16) if self.config.amp else nullcontext()

    def learning_rate(self, step: int) -> float:
        progress = min(1.0, step / max(1, self.config.steps))
        return self.config.lr_end + (self.config.lr - self.config.lr_end) * 0.5 * (1 + math.cos(math.pi * progress))

    def _prepared(self, images: Tensor) -> Tensor:
        return images.to(self.device).contiguous(memory_format=torch.channels_last)

    def losses(self, photos: Tensor, styles: Tensor) -> Any:
        raise NotImplementedError

    def train_step(self) -> Any:
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(self.step)
        terms = self.losses(*self.images.batch(self.generator))
        self.optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        self.optimizer.step()
        self.step += 1
        return terms


class DecoderTraining(ResumableTraining):
    """The encoder, the decoder, its optimizer, the data and the position of a run."""

    def __init__(self, config: ArbitraryConfig, encoder_weights: dict[str, Tensor] | None, resume: dict | None = None):
        self.config = config
        self.device = torch.device(config.device)
        torch.manual_seed(config.seed)
        # VGG16 measures the losses; the decoder reads the small encoder's features where the run has one.
        self.vgg = Encoder(encoder_weights).to(self.device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.small_encoder = _small_encoder(config, resume)
        self.encoder: Encoder | SmallEncoder = self.vgg if self.small_encoder is None else self.small_encoder
        self.encoder.to(self.device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.decoder = Decoder(config.decoder_width, config.decoder_skips).to(
            self.device, memory_format=torch.channels_last
        )  # type: ignore[call-overload]
        if self.small_encoder is not None and not set(self.decoder.inputs) <= set(SmallEncoder.LAYERS):
            raise StylerError(
                f"--skip: the small encoder has no {sorted(set(self.decoder.inputs) - set(SmallEncoder.LAYERS))[0]}"
            )
        self.start(self.decoder, resume, "decoder")
        if resume is None and config.init is not None:
            warm_start(self.decoder, config.init)
        self.images = Images(config)
        self.previews = self._preview_pairs()

    def decode(self, photos: Tensor, styles: Tensor) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """The photos decoded with the styles' statistics at every layer the decoder reads: (result, the AdaIN
        targets by layer, the styles' features at STYLE_LAYERS). Gradients flow through the decoder only."""
        photos, styles = self._prepared(photos), self._prepared(styles)
        with torch.no_grad(), self.autocast():
            photo_features = self.encoder(photos, self.decoder.inputs)
            style_features = self.vgg(styles, STYLE_LAYERS)
            read = style_features if self.small_encoder is None else self.encoder(styles, self.decoder.inputs)
        statistics = {layer: style_statistics(read[layer].float()) for layer in self.decoder.inputs}
        targets = adain_layers({layer: value.float() for layer, value in photo_features.items()}, statistics)
        with self.autocast():
            result = self.decoder(targets)
        return result, targets, style_features

    def losses(self, photos: Tensor, styles: Tensor) -> Losses:
        result, targets, style_features = self.decode(photos, styles)
        with self.autocast():
            result_features = self.vgg(result, STYLE_LAYERS)
        content_layers = self.decoder.inputs if self.config.content_at_skips else (CONTENT_LAYER,)
        content = sum(F.mse_loss(result_features[layer].float(), targets[layer]) for layer in content_layers)
        assert isinstance(content, Tensor)
        style = result.new_zeros((), dtype=torch.float32)
        for layer in STYLE_LAYERS:
            result_mean, result_std = mean_std(result_features[layer])
            target_mean, target_std = mean_std(style_features[layer])
            style = style + F.mse_loss(result_mean, target_mean) + F.mse_loss(result_std, target_std)
        total = self.config.content_weight * content + self.config.style_weight * style
        return Losses(content, style, total)

    @torch.no_grad()
    def stylize(self, photos: Tensor, styles: Tensor) -> Tensor:
        return self.decode(photos, styles)[0].float().clamp(0, 255).cpu()

    def _preview_pairs(self) -> tuple[Tensor, Tensor]:
        """Held-out photos, each with a training painting or (without paintings) another held-out photo as style."""
        size = self.config.image_size
        photos = [to_uint8_tensor(_fit(read_photo(Path(p)).rgb, size)) for p in self.config.previews]
        if not photos:
            return torch.empty(0, 3, size, size), torch.empty(0, 3, size, size)
        sources = self.config.paintings or self.config.previews[1:] + self.config.previews[:1]
        styles = [
            to_uint8_tensor(_fit(read_photo(Path(sources[i % len(sources)])).rgb, size)) for i in range(len(photos))
        ]
        return torch.stack(photos).float(), torch.stack(styles).float()

    def preview_grid(self) -> Tensor | None:
        """(1, 3, H, W): rows of photo | style | result; None without held-out photos."""
        photos, styles = self.previews
        if not len(photos):
            return None
        results = self.stylize(photos, styles)
        rows = [torch.cat([p, s, r], dim=-1) for p, s, r in zip(photos, styles, results, strict=True)]
        return torch.cat(rows, dim=-2)[None]

    def record(self) -> dict[str, Any]:
        """The recipe, as the model file keeps it."""
        recipe = asdict(self.config)
        for name in ("photos", "previews", "out", "checkpoint_dir", "notes"):
            recipe.pop(name)
        recipe["paintings"] = [Path(p).name for p in self.config.paintings]
        recipe["photo_count"] = len(self.config.photos)
        content_layers = "every layer the decoder reads" if self.config.content_at_skips else "relu4_1"
        recipe["loss"] = f"AdaIN content ({content_layers} vs the AdaIN target) + style (mean/std at relu1_1..relu4_1)"
        recipe["decoder_skips"] = list(self.config.decoder_skips)
        recipe["encoder"] = "VGG16" if self.small_encoder is None else f"small (width {self.small_encoder.width})"
        recipe.update(steps_done=self.step, seconds=round(self.seconds, 1), **self.config.notes)
        return recipe

    def write_model(self) -> None:
        save_arbitrary_model(Path(self.config.out), self.decoder, self.record(), encoder=self.small_encoder)

    def checkpoint(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": {
                **asdict(self.config),
                "painting_sizes": list(self.config.painting_sizes),
                "decoder_skips": list(self.config.decoder_skips),
            },
            "model": model_dict(self.decoder, self.record(), half=False, encoder=self.small_encoder),
            "decoder": self.decoder.state_dict(),
            **self.position(),
        }


def _small_encoder(config: ArbitraryConfig, resume: dict | None) -> SmallEncoder | None:
    """The run's small encoder: a resumed run's own (in its checkpoint's model), else --encoder's file, else none."""
    if resume is not None:
        entry = resume["model"]["encoder"]
        return small_encoder_from(entry, None) if entry.get("network") == SMALL_NETWORK else None
    return read_small_encoder(Path(config.encoder)) if config.encoder else None


def _fit(image: Image.Image, size: int) -> Image.Image:
    from PIL import ImageOps

    return ImageOps.fit(image, (size, size), Image.Resampling.LANCZOS)


def init_model(init: str) -> ArbitraryModel:
    """--init's arbitrary-style model (a file, a checkpoint or a shipped name); one line for anything else."""
    path = resolve_model_file(init)
    contents = read_model_contents(path)
    if not is_arbitrary(contents):
        raise StylerError(f"--init {init}: not an arbitrary-style model (a train-arbitrary model file or checkpoint)")
    return arbitrary_model_from(contents, path)


def warm_start(decoder: Decoder, init: str) -> None:
    """The decoder weights of an arbitrary model (a file or shipped name): the same width, or a wider decoder's
    strongest channels (narrowed_from)."""
    model = init_model(init)
    if model.decoder_width < decoder.width:
        raise StylerError(f"--init {init}: a width-{model.decoder_width} decoder; this run's is {decoder.width}")
    state_dict = model.state_dict
    if model.decoder_width > decoder.width:
        extra = sorted(set(model.decoder_skips) - set(decoder.skips))
        if extra:
            raise StylerError(f"--init {init}: its decoder reads {extra[0]}, which this run's does not (--skip)")
        state_dict = narrowed_from(model.build(), decoder)
    missing, unexpected = decoder.load_state_dict(state_dict, strict=False)
    extra = [key for key in missing if not key.startswith("projections.")] + list(unexpected)
    if extra:
        raise StylerError(f"--init {init}: its decoder does not fit this run's (e.g. {extra[0]})")
    with torch.no_grad():  # the skips it lacks start switched off: the run starts from that model's pictures
        for key in missing:
            decoder.get_parameter(key).zero_()


@torch.no_grad()
def narrowed_from(wide: Decoder, narrow: Decoder) -> dict[str, Tensor]:
    """A state_dict for `narrow` from a wider decoder's strongest channels (a start for a cheaper decoder that
    draws the wide one's pictures roughly, to be fine-tuned): each convolution keeps the output channels whose
    filters and whose use by the next convolution weigh most (product of the two norms), reading the channels
    kept before it; a skip's projection keeps the channels it adds to."""
    state: dict[str, Tensor] = {}
    convolutions = [(index, layer) for index, layer in enumerate(wide.layers) if isinstance(layer, nn.Conv2d)]
    position_of = {index: position for position, (index, _) in enumerate(convolutions)}
    kept = torch.arange(convolutions[0][1].in_channels)
    level = wide.size_exponent
    for index, layer in enumerate(wide.layers):
        if isinstance(layer, nn.Upsample):
            level -= 1
            name = LEVEL_LAYERS[level]
            if name in wide.projections:
                projection = wide.projections[name]
                assert isinstance(projection, nn.Conv2d) and projection.bias is not None
                state[f"projections.{name}.weight"] = projection.weight[kept].clone()
                state[f"projections.{name}.bias"] = projection.bias[kept].clone()
            continue
        if not isinstance(layer, nn.Conv2d):
            continue
        weight, bias = layer.weight[:, kept], layer.bias
        assert bias is not None
        position = position_of[index]
        wanted = _conv_at(narrow, index).out_channels
        if position == len(convolutions) - 1:
            chosen = torch.arange(layer.out_channels)  # RGB
        else:
            reader = convolutions[position + 1][1].weight
            weight_of = weight.flatten(1).norm(dim=1) * reader.transpose(0, 1).flatten(1).norm(dim=1)
            chosen = weight_of.argsort(descending=True)[:wanted].sort().values
        state[f"layers.{index}.weight"] = weight[chosen].clone()
        state[f"layers.{index}.bias"] = bias[chosen].clone()
        kept = chosen
    return state


def _conv_at(decoder: Decoder, index: int) -> nn.Conv2d:
    layer = decoder.layers[index]
    assert isinstance(layer, nn.Conv2d)
    return layer


def read_checkpoint(
    path: Path, format: str = CHECKPOINT_FORMAT, kind: str = "an arbitrary-style training checkpoint"
) -> dict[str, Any]:
    """--resume's checkpoint of the given format; anything else is one line."""
    try:
        contents = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for damaged or foreign files
        raise StylerError(f"--resume {path}: not a readable checkpoint ({type(error).__name__})") from None
    if not isinstance(contents, dict) or contents.get("format") != format:
        raise StylerError(f"--resume {path}: not {kind}")
    return contents


def config_from_checkpoint(contents: dict[str, Any], **changes: Any) -> ArbitraryConfig:
    """The checkpoint's config with the changes given on resuming; a change of recipe (not of where the files go)
    is recorded in notes["resumed"] with its step, so the model file tells the run as it happened."""
    values = dict(contents["config"])
    values["painting_sizes"] = tuple(values["painting_sizes"])
    values["decoder_skips"] = tuple(values.get("decoder_skips", ()))  # checkpoints from before skips had none
    values.setdefault("content_at_skips", False)  # nor content beyond relu4_1
    given = {key: value for key, value in changes.items() if value is not None}
    changed = {
        key: value
        for key, value in given.items()
        if values.get(key) != value and key not in ("out", "checkpoint_dir", "checkpoint_every", "preview_every")
    }
    values.update(given)
    if changed:
        notes = dict(values.get("notes") or {})
        notes["resumed"] = [*notes.get("resumed", []), {"step": int(contents["step"]), **changed}]
        values["notes"] = notes
    return ArbitraryConfig(**values)


class _Stop:
    """The first Ctrl-C or SIGTERM asks for a checkpoint after this step."""

    def __init__(self) -> None:
        self.requested = False

    def __enter__(self) -> _Stop:
        self.previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc_info) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _save_checkpoint(training: TrainingRun) -> Path:
    directory = Path(training.config.checkpoint_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = file_for(directory, training.step)
    contents = training.checkpoint()
    write_atomically(path, lambda file: torch.save(contents, file))
    for old in checkpoint_files(directory)[: -training.config.keep_checkpoints]:
        old.unlink(missing_ok=True)
    return path


class TrainingRun(Protocol):
    """What `run` drives: the decoder's training here, the encoder's distillation (distill.py)."""

    config: Any  # steps, checkpoint_every, preview_every, keep_checkpoints, checkpoint_dir, out
    step: int
    seconds: float

    def train_step(self) -> Any: ...  # the step's loss terms, with .values()
    def checkpoint(self) -> dict[str, Any]: ...
    def preview_grid(self) -> Tensor | None: ...
    def write_model(self) -> None: ...


def _write_preview(training: TrainingRun) -> Path | None:
    grid = training.preview_grid()
    if grid is None:
        return None
    path = Path(training.config.checkpoint_dir) / f"preview-{training.step:07d}.jpg"
    write_photo(path, Photo(tensor_to_image(grid), None, None, None))
    return path


def _steps(training: TrainingRun) -> Iterator[Losses]:
    while training.step < training.config.steps:
        started = time.perf_counter()
        terms = training.train_step()
        training.seconds += time.perf_counter() - started
        yield terms


def run(training: TrainingRun) -> int:
    """Train to the last step with a progress bar, checkpoints and previews; write the model file. Exit code."""
    config = training.config
    with (
        _Stop() as stop,
        tqdm(total=config.steps, initial=training.step, unit="step", file=sys.stderr, dynamic_ncols=True) as bar,
    ):
        for terms in _steps(training):
            values = terms.values()
            if not all(math.isfinite(v) for v in values.values()):
                print(
                    f"styler: the loss diverged at step {training.step} ({values}); last checkpoint kept",
                    file=sys.stderr,
                )
                return 1
            bar.set_postfix_str(" ".join(f"{k} {v:.3g}" for k, v in values.items()), refresh=False)
            bar.update()
            if training.step % config.checkpoint_every == 0 or stop.requested:
                tqdm.write(f"checkpoint {_save_checkpoint(training)}", file=sys.stderr)
            if training.step % config.preview_every == 0:
                preview = _write_preview(training)
                if preview:
                    tqdm.write(f"preview {preview}", file=sys.stderr)
            if stop.requested:
                tqdm.write("stopped: continue with --resume on the last checkpoint", file=sys.stderr)
                return EXIT_INTERRUPTED
    if config.steps % config.checkpoint_every:  # the last step too, so that --resume --steps N can extend the run
        tqdm.write(f"checkpoint {_save_checkpoint(training)}", file=sys.stderr)
    training.write_model()
    print(f"styler: wrote {config.out} ({training.step} steps, {training.seconds / 60:.1f} min)", file=sys.stderr)
    return 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
