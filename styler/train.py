"""`styler train`: fit a transformer network to one or more styles with perceptual losses, resumably.

One run = a TrainConfig (the command's options) + a Training (network, optimizer, loss, data, position). The loop
checkpoints atomically every N steps (model, optimizer, step, RNG state, config, the style images and the loss
network's calibration), so `--resume CHECKPOINT` alone continues a run and reproduces an uninterrupted one bit for
bit on the CPU. Several styles train one conditional-instance-norm network (Dumoulin et al. 2017), one style per
step in turn. Under torchrun every process trains on its shard of each global batch with DistributedDataParallel
(gloo on CPU, NCCL on CUDA) and only rank 0 writes files.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_distributed
from PIL import Image
from torch import Tensor, nn
from tqdm import tqdm

from styler import checkpoints
from styler.checkpoints import Checkpoint, checkpoint_files
from styler.data import PhotoFolder, ResumableSampler, Skipped, load_square, make_loader, scan
from styler.devices import cpu_has_bfloat16, pick_device
from styler.errors import StylerError
from styler.files import OutputExists, file_identity
from styler.images import Photo, read_photo, tensor_to_image, to_uint8_tensor, write_photo
from styler.losses import (
    DistillationLoss,
    FeatureDistillationLoss,
    FeatureNetwork,
    LossTerms,
    PerceptualLoss,
    RandomFeatureNetwork,
    VGG16Features,
    load_vgg16_weights,
)
from styler.memory import keep_freed_memory
from styler.model_files import resolve_model, save_model
from styler.network import TransformerNet, architecture, checkpoint_architecture
from styler.train_config import RECIPE_FIELDS, TrainConfig, flag, teacher_model

PREVIEW_PHOTOS = 4
# Preview photos stay out of training (so previews show unseen photos) once that costs at most 5 % of the data.
HOLD_OUT_FACTOR = 20
RANDOM_LOSS_SEED = 0  # the random-feature loss network is the same in every run, whatever --seed says
EXIT_INTERRUPTED = 130


# ----------------------------------------------------------------------------------------------- processes


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


# ----------------------------------------------------------------------------------------------- checkpoints


def resolve_config(given: dict) -> tuple[TrainConfig, Checkpoint | None]:
    """The run's config from the options given (and from the checkpoint named by `resume`), plus that checkpoint."""
    given = dict(given)
    resume = given.pop("resume", None)
    known = {field.name for field in fields(TrainConfig)}
    unknown = set(given) - known
    if unknown:
        raise TypeError(f"unknown training options: {sorted(unknown)}")
    for name in ("styles", "teachers"):
        if name in given:
            given[name] = tuple(given[name])
    if "teachers" in given and "loss_net" not in given:
        given["loss_net"] = "teacher"
    if resume is None:
        return TrainConfig(**given).checked(), None
    checkpoint = checkpoints.read(resume)
    # Fields added since a checkpoint was written take the value that reproduces its run.
    written_before: dict[str, Any] = {
        "style_ramp": 0,
        "content_steps": 0,
        "style_size": None,
        "teachers": (),
        "color_weight": 0.0,
    }
    saved = TrainConfig(
        **(written_before | {name: value for name, value in checkpoint.config.items() if name in known})
    )
    saved.styles, saved.teachers = tuple(saved.styles), tuple(saved.teachers)
    if "styles" in given:  # compare like with like: the saved styles are absolute paths
        given["styles"] = replace(saved, styles=given["styles"]).checked().styles
    for name in RECIPE_FIELDS:
        if name in given and given[name] != getattr(saved, name):
            raise StylerError(
                f"{flag(name)} {given[name]!r} differs from the checkpoint's {getattr(saved, name)!r}; "
                "a resumed run keeps what it learns (start a new run to change it)"
            )
    # --overwrite is a decision about this command's --out, not part of the run a checkpoint records.
    return replace(saved, **({"overwrite": False} | given)).checked(), checkpoint


# ----------------------------------------------------------------------------------------------- the run


def load_style_image(path: str, style_size: int | None) -> Tensor:
    """(3, H, W) uint8, scaled so its long side is `style_size` (when given)."""
    image = read_photo(Path(path)).rgb
    if style_size is not None:
        scale = style_size / max(image.size)
        image = image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.LANCZOS
        )
    if min(image.size) < RandomFeatureNetwork.min_size:
        raise StylerError(
            f"--style {path}: {image.width}x{image.height} is too small "
            f"(at least {RandomFeatureNetwork.min_size} pixels a side)"
        )
    return to_uint8_tensor(image)


def pick_preview_photos(paths: list[Path], size: int) -> tuple[list[Path], Tensor]:
    """Up to PREVIEW_PHOTOS evenly spread photos that decode, and their (P, 3, size, size) uint8 crops."""
    chosen, crops = [], []
    count = min(PREVIEW_PHOTOS, len(paths))
    for slot in range(count):
        for path in paths[slot * len(paths) // count :]:
            if path in chosen:
                continue
            try:
                crops.append(load_square(path, size))
            except StylerError:
                continue
            chosen.append(path)
            break
    if not chosen:
        raise StylerError("no training photo could be decoded")
    return chosen, torch.stack(crops)


class StepClock:
    """Training time over every part of a (resumed) run, and a smoothed time per step for the progress bar."""

    def __init__(self, seconds_before: float) -> None:
        self.before = seconds_before
        self.started = self.last = time.perf_counter()
        self.step_seconds: float | None = None

    def total(self) -> float:
        return self.before + time.perf_counter() - self.started

    def tick(self) -> float:
        """A step ended: update the smoothed step time, return the total."""
        now = time.perf_counter()
        lap, self.last = now - self.last, now
        self.step_seconds = lap if self.step_seconds is None else 0.9 * self.step_seconds + 0.1 * lap
        return self.before + now - self.started


class StopRequest:
    """The first Ctrl-C (or SIGTERM) asks the loop to save a checkpoint after this step; a second one quits at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, announce: bool) -> None:
        self.requested = False
        self.announce = announce
        self.previous: dict[signal.Signals, Any] = {}  # the handlers this one replaced

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        if self.announce:
            tqdm.write(
                "styler: stopping after this step to save a checkpoint (Ctrl-C again quits without one)",
                file=sys.stderr,
            )

    def __enter__(self) -> StopRequest:
        try:
            self.previous = {number: signal.signal(number, self._handle) for number in self.SIGNALS}
        except ValueError:  # not the main thread: signals stay with whoever owns them
            self.previous = {}
        return self

    def __exit__(self, *exc_info) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)


@dataclass
class TrainingPhotos:
    """The photos a run trains on, those it could not read, and the few it holds out to preview progress on."""

    paths: list[Path]
    skipped: list[Skipped]
    preview_paths: list[Path]
    preview_crops: Tensor  # (P, 3, size, size) uint8
    held_out: bool  # the preview photos are left out of training (see HOLD_OUT_FACTOR)


def check_outputs(config: TrainConfig, resuming: bool) -> None:
    """Before hours of training, not after them: --out must be new (or --overwrite) and its folder writable, and
    --checkpoint-dir writable and free of another run's checkpoints."""
    assert config.out is not None and config.checkpoint_dir is not None  # a checked() config names both
    out, checkpoint_dir = Path(config.out), Path(config.checkpoint_dir)
    if out.is_dir():
        raise StylerError(f"--out {out}: is a folder; name the model file")
    if out.exists() and not config.overwrite:
        raise StylerError(f"--out {out}: exists (pass --overwrite to replace it)")
    _check_can_create(out.parent, "--out")
    _create_folder(out.parent, "--out")  # so the model, and a --resume hint's rerun, can be written there
    _check_can_create(checkpoint_dir, "--checkpoint-dir")
    if not resuming and checkpoint_files(checkpoint_dir):
        # Keeping "the newest K" would otherwise weigh this run's checkpoints against another run's.
        raise StylerError(
            f"--checkpoint-dir {checkpoint_dir}: holds another run's checkpoints; --resume one of them, "
            "or choose another --checkpoint-dir"
        )


def read_hold_out(path: Path) -> set[str]:
    """The photo file names listed in a --hold-out file: one per line, blank lines and # comments ignored."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise StylerError(f"--hold-out {path}: cannot be read ({error.__class__.__name__})") from None
    return {name for line in lines if (name := line.split("#", 1)[0].strip())}


def find_photos(config: TrainConfig) -> TrainingPhotos:
    assert config.data is not None and config.out is not None  # a checked() config names both
    photos, skipped = scan(Path(config.data))
    _refuse_out_that_is_an_input(Path(config.out), config, photos)
    if config.hold_out:
        held_names = read_hold_out(Path(config.hold_out))
        photos = [path for path in photos if path.name not in held_names]
    preview_paths, preview_crops = pick_preview_photos(photos, config.image_size)
    held_out = len(photos) >= HOLD_OUT_FACTOR * len(preview_paths)
    if held_out:
        photos = [path for path in photos if path not in preview_paths]
    if len(photos) < config.batch_size:
        raise StylerError(
            f"--data {config.data}: {len(photos)} readable photos, fewer than --batch-size {config.batch_size}"
        )
    return TrainingPhotos(photos, skipped, preview_paths, preview_crops, held_out)


def build_loss(
    config: TrainConfig, style_images: list[Tensor], preview_crops: Tensor, checkpoint: Checkpoint | None
) -> tuple[nn.Module, Path | None]:
    """The loss of this run's config, and the VGG16 weights file it read (None when it reads none)."""
    vgg_source = None
    network: FeatureNetwork
    if config.loss_net == "vgg16":
        weights, vgg_source = load_vgg16_weights(Path(config.vgg_weights) if config.vgg_weights else None)
        network = VGG16Features(weights)
    elif config.loss_net == "random":
        network = random_network = RandomFeatureNetwork(RANDOM_LOSS_SEED)
        if checkpoint is not None:
            random_network.load_state_dict(checkpoint.loss_network)
        else:  # "over the content and style images": the fixed preview photos stand for the content
            random_network.calibrate([image.unsqueeze(0).float() for image in [*style_images, *preview_crops]])
    teachers: list[nn.Module] = [teacher_model(teacher).build() for teacher in config.teachers]
    loss: nn.Module
    if config.loss_net == "teacher":
        loss = DistillationLoss(teachers, config.loss_weights())
    elif teachers:
        loss = FeatureDistillationLoss(network, teachers, config.loss_weights())
    else:
        loss = PerceptualLoss(network, [image.unsqueeze(0).float() for image in style_images], config.loss_weights())
    return loss, vgg_source


def build_network(config: TrainConfig, checkpoint: Checkpoint | None) -> TransformerNet:
    """The network, initialised (or from --init); a resumed run's is restored from its checkpoint afterwards."""
    torch.manual_seed(config.seed)
    if checkpoint is None:
        arch = architecture(config.arch, config.num_styles)
    else:
        arch = checkpoint_architecture(config.arch, config.num_styles, checkpoint.architecture)
    network = TransformerNet(arch)
    with torch.no_grad():
        # Start from mid-grey rather than black: a black output sits far outside the photos the random features
        # are calibrated on, so the first style losses are huge and the first hundreds of steps would go into
        # learning the 0..255 range instead of the style.
        bias = network.deconv3.conv2d.bias
        assert bias is not None  # nn.Conv2d's default bias=True
        bias.fill_(127.5)
    if config.init and checkpoint is None:
        start_from(network, config.init)
    return network


class Training:
    """Everything a run needs, built (and checked) before the first step."""

    def __init__(
        self, config: TrainConfig, checkpoint: Checkpoint | None, processes: Processes, device: torch.device
    ) -> None:
        self.config, self.processes, self.device = config, processes, device
        assert config.out is not None and config.checkpoint_dir is not None  # a checked() config names both
        self.out, self.checkpoint_dir = Path(config.out), Path(config.checkpoint_dir)
        if config.amp and device.type == "cpu" and not cpu_has_bfloat16():
            raise StylerError(
                "--amp on the CPU needs bfloat16 instructions (AMX or AVX-512 BF16); this CPU would run it "
                "several times slower than float32"
            )
        if config.batch_size % processes.world_size:
            raise StylerError(
                f"--batch-size {config.batch_size} does not split evenly over {processes.world_size} processes"
            )
        self.local_batch = config.batch_size // processes.world_size
        _check_memory(config, device, config.batch_size if device.type == "cpu" else self.local_batch)
        check_outputs(config, resuming=checkpoint is not None)
        if checkpoint is None:
            self.style_images = [load_style_image(style, config.style_size) for style in config.styles]
        else:
            self.style_images = list(checkpoint.style_images)
        self.photos = find_photos(config)
        self.loss, self.vgg_source = build_loss(config, self.style_images, self.photos.preview_crops, checkpoint)
        self.network = build_network(config, checkpoint)
        layout = torch.channels_last if config.channels_last else torch.contiguous_format
        # torch accepts to(device, memory_format=...); its type stubs lack that overload.
        self.loss = self.loss.to(device, memory_format=layout)  # type: ignore[call-overload]
        self.network = self.network.to(device, memory_format=layout)  # type: ignore[call-overload]
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=config.lr)
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.amp and device.type == "cuda")
        self.step, self.seconds = 0, 0.0
        if checkpoint is not None:
            self._restore(checkpoint)
        self.trained: nn.Module = self.network  # wrapped for DistributedDataParallel below
        if processes.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.trained = DistributedDataParallel(
                self.network, device_ids=[device.index] if device.type == "cuda" else None
            )
        dataset = PhotoFolder(self.photos.paths, config.image_size)
        self.sampler = ResumableSampler(dataset, processes.world_size, processes.rank, config.seed)
        self.steps_per_epoch = len(self.sampler) // self.local_batch
        self.total_steps = config.max_steps or config.epochs * self.steps_per_epoch
        self.loader = make_loader(dataset, self.local_batch, self.sampler, config.workers, device.type == "cuda")

    def _restore(self, checkpoint: Checkpoint) -> None:
        try:
            self.network.load_state_dict(checkpoint.model)
            self.optimizer.load_state_dict(checkpoint.optimizer)
            self.scaler.load_state_dict(checkpoint.scaler)
            self.step, self.seconds = checkpoint.step, float(checkpoint.seconds)
            torch.set_rng_state(checkpoint.rng["torch"])
            if self.device.type == "cuda" and checkpoint.rng.get("cuda"):
                torch.cuda.set_rng_state_all(checkpoint.rng["cuda"])
        except (KeyError, RuntimeError, ValueError) as error:
            raise StylerError(
                f"--resume: the checkpoint does not fit this run ({' '.join(str(error).split())[:160]})"
            ) from None

    # --------------------------------------------------------------------------------------- one step

    def style_for(self, step: int) -> tuple[int, Tensor | None]:
        """Styles take turns, one per step, the same in every process; None for a single-style network."""
        index = step % self.config.num_styles
        if self.config.num_styles == 1:
            return index, None
        return index, torch.full((self.local_batch,), index, dtype=torch.long, device=self.device)

    def losses(self, photos: Tensor, step: int) -> LossTerms:
        content = photos.to(self.device, torch.float32, non_blocking=True)
        if self.config.channels_last:
            content = content.contiguous(memory_format=torch.channels_last)
        index, style = self.style_for(step)
        with self.autocast():
            return self.loss(self.trained(content, style), content, index, self.style_scale(step))

    def autocast(self) -> AbstractContextManager:
        """--amp: float16 on CUDA (with the gradient scaler), bfloat16 on the CPU (same exponent range as float32,
        no scaling needed); the Gram matrices stay float32 either way (losses.gram_matrix)."""
        if not self.config.amp:
            return nullcontext()
        return torch.autocast(self.device.type, torch.float16 if self.device.type == "cuda" else torch.bfloat16)

    def style_scale(self, step: int) -> float:
        """Content first: the style weight is 0 for the first content_steps, then grows to full over style_ramp
        steps, so the network first learns to keep the photo; at full weight from the start it paints a flat relief
        (docs/training.md)."""
        step -= self.config.content_steps or 0
        ramp = self.config.style_ramp
        if step < 0:
            return 0.0
        return 1.0 if not ramp else min(1.0, step / ramp)

    def update(self, terms: LossTerms) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms.total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    # --------------------------------------------------------------------------------------- the loop

    def batches(self) -> Iterator[tuple[Tensor, list[Skipped]]]:
        """The loader's batches from this step on, epoch after epoch, up to the last step."""
        while self.step < self.total_steps:
            epoch, batch = divmod(self.step, self.steps_per_epoch)
            self.sampler.start(epoch, batch * self.local_batch)
            for item in self.loader:
                yield item
                if self.step >= self.total_steps:
                    return

    @torch.no_grad()
    def preview_grid(self) -> Tensor:
        """(1, 3, H, W): one row per preview photo, the photo then the network's result in each style."""
        photos = self.photos.preview_crops.to(self.device, torch.float32)
        columns = [photos]
        for index in range(self.config.num_styles):
            style = None if self.config.num_styles == 1 else torch.full((len(photos),), index, device=self.device)
            columns.append(self.network(photos, style).clamp(0, 255))
        rows = torch.cat(columns, dim=3)  # each photo's row: input | style 1 | style 2 ...
        return torch.cat(list(rows), dim=1).unsqueeze(0)

    def save_checkpoint(self) -> Path:
        """Write this step's checkpoint and keep the newest keep_checkpoints (rank 0 only writes)."""
        if not self.processes.is_main:
            return checkpoints.file_for(self.checkpoint_dir, self.step)
        checkpoint = Checkpoint(
            config=asdict(self.config),
            style_names=self.config.style_names,
            step=self.step,
            epoch=self.step // self.steps_per_epoch,
            seconds=self.seconds,
            model=self.network.state_dict(),
            optimizer=self.optimizer.state_dict(),
            scaler=self.scaler.state_dict(),
            loss_network=self.loss.get_submodule("network").state_dict() if self.config.loss_net == "random" else {},
            style_images=self.style_images,
            rng={
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
            },
            architecture=self.network.arch.to_dict(),
        )
        return checkpoints.write(self.checkpoint_dir, checkpoint, self.config.keep_checkpoints)


class TrainingRun:
    """A Training taken to its last step: the loop, its progress bar and signals, the periodic checkpoints and
    previews, the model file at the end, and what the user is told on the way (rank 0 alone writes and talks)."""

    def __init__(self, training: Training) -> None:
        self.training = training
        self.config, self.main = training.config, training.processes.is_main
        self.saved_step: int | None = None
        self.previewed_step: int | None = None
        self.reported: set[str] = {entry.path for entry in training.photos.skipped}

    def run(self) -> int:
        """Train to the last step; returns the exit code (0 done, 130 stopped by a signal after a checkpoint)."""
        training = self.training
        if self.main:
            self._announce()
        clock = StepClock(training.seconds)
        with StopRequest(announce=self.main) as stop, self._progress_bar() as bar:
            for photos, skipped in training.batches():
                self._report_skipped(skipped)
                terms = training.losses(photos, training.step)
                values = terms.as_floats()
                flags = [not math.isfinite(values["total"]), stop.requested]
                bad_loss, stopping = training.processes.any(flags, training.device)
                if bad_loss or stopping:
                    training.seconds = clock.total()
                    if bad_loss:
                        raise StylerError(self._diverged_message(values))
                    return self._stop()
                training.update(terms)
                training.step += 1
                training.seconds = clock.tick()
                assert clock.step_seconds is not None  # tick() sets it
                bar.update()
                bar.set_postfix_str(self._progress_text(values, clock.step_seconds), refresh=False)
                self._periodic_outputs()
        self._finish()
        return 0

    def _progress_bar(self) -> tqdm:
        return tqdm(
            total=self.training.total_steps,
            initial=self.training.step,
            unit="step",
            desc="train",
            file=sys.stderr,
            disable=not self.main,
            dynamic_ncols=True,
            mininterval=0.5,
        )

    def _progress_text(self, values: dict[str, float], step_seconds: float) -> str:
        epochs = self.training.step / self.training.steps_per_epoch
        terms = ", ".join(f"{name} {value:.4g}" for name, value in values.items())
        return f"epoch {epochs:.2f}, {self.config.batch_size / step_seconds:.2f} img/s, {terms}"

    def _periodic_outputs(self) -> None:
        step, config = self.training.step, self.config
        if config.preview_every and step % config.preview_every == 0 and self.main:
            self.write_preview()
        if config.checkpoint_every and step % config.checkpoint_every == 0:
            self.save_checkpoint()

    def _stop(self) -> int:
        """A signal asked to stop: checkpoint this step, so that --resume goes on from it."""
        path = self.save_checkpoint()
        if self.main:
            tqdm.write(f"styler: stopped at step {self.training.step}; resume with --resume {path}", file=sys.stderr)
        return EXIT_INTERRUPTED

    def _finish(self) -> None:
        # 0 for --checkpoint-every / --preview-every means none, the final one included (Ctrl-C still saves one).
        if self.saved_step != self.training.step and self.config.checkpoint_every:
            self.save_checkpoint()
        if self.main:
            if self.previewed_step != self.training.step and self.config.preview_every:
                self.write_preview()
            self.write_model()

    # --------------------------------------------------------------------------------------- messages

    def _announce(self) -> None:
        training, config, photos = self.training, self.config, self.training.photos
        skipped = f", {len(photos.skipped)} unreadable skipped (first: {photos.skipped[0]})" if photos.skipped else ""
        held = f" ({len(photos.preview_paths)} more held out for previews)" if photos.held_out else ""
        world = training.processes.world_size
        processes = f" in {world} processes" if world > 1 else ""
        start = f" from step {training.step}" if training.step else ""
        print(
            f"styler: training {config.arch} on {', '.join(config.style_names)} with {len(photos.paths)} photos from "
            f"{config.data}{skipped}{held}; {training.total_steps} steps of {config.batch_size} at "
            f"{config.image_size} px{start}, {config.loss_net} loss, {training.device.type}{processes}; "
            f"checkpoints and previews in {training.checkpoint_dir}",
            file=sys.stderr,
        )

    def _report_skipped(self, skipped: list[Skipped]) -> None:
        known = self.training.photos.skipped
        for entry in skipped:
            if entry.path not in self.reported:
                self.reported.add(entry.path)
                known.append(entry)
                if self.main:
                    tqdm.write(f"styler: warning: skipped {entry} ({len(known)} unreadable so far)", file=sys.stderr)

    def _diverged_message(self, values: dict[str, float]) -> str:
        terms = ", ".join(f"{name} {value:.4g}" for name, value in values.items())
        kept = checkpoint_files(self.training.checkpoint_dir)
        last = (
            f"the last good checkpoint is {kept[-1]} (--resume it with a lower --lr)"
            if kept
            else "no checkpoint was written yet (try a lower --lr)"
        )
        return f"the loss became non-finite at step {self.training.step + 1} ({terms}); stopped, {last}"

    # --------------------------------------------------------------------------------------- outputs

    def save_checkpoint(self) -> Path:
        self.saved_step = self.training.step
        return self.training.save_checkpoint()

    def write_preview(self) -> Path:
        """previews/step-NNNNNNN.png: one row per preview photo, the photo then its result in each style."""
        path = self.training.checkpoint_dir / "previews" / f"step-{self.training.step:07d}.png"
        self.previewed_step = self.training.step
        path.parent.mkdir(parents=True, exist_ok=True)
        write_photo(path, Photo(tensor_to_image(self.training.preview_grid()), None, None))
        return path

    def write_model(self) -> None:
        training, out = self.training, self.training.out
        try:
            record = model_record(training)
            save_model(out, training.network, self.config.style_names, record, overwrite=self.config.overwrite)
        except OutputExists:  # another program wrote --out during the run: kept, and the weights are not lost
            kept = checkpoint_files(training.checkpoint_dir)
            saved = f"; the trained weights are in {kept[-1]}: --resume it with another --out" if kept else ""
            raise StylerError(f"--out {out}: appeared during the run and is kept{saved}") from None
        except OSError as error:  # a full disk, a folder made read-only during the run: the checkpoint is kept
            kept = checkpoint_files(training.checkpoint_dir)
            saved = f"; the trained weights are in {kept[-1]}: --resume it to write the model" if kept else ""
            raise StylerError(f"--out {out}: cannot write the model ({error.strerror or error}){saved}") from None
        per_step = training.seconds / max(1, training.step)
        skipped = f"; {len(training.photos.skipped)} unreadable files skipped" if training.photos.skipped else ""
        print(
            f"styler: wrote {out} after {training.step} steps in {training.seconds:.0f} s "
            f"({per_step:.2f} s/step, {self.config.batch_size / per_step:.2f} images/s){skipped}",
            file=sys.stderr,
        )


def painting_files(config: TrainConfig) -> list[str]:
    """The painting behind each style: its file, or for a distilled style the painting its teacher learnt."""
    if not config.teachers:
        return [Path(style).name for style in config.styles]
    images = []
    for teacher in config.teachers:
        styles = teacher_model(teacher).training.get("styles")
        if isinstance(styles, list) and len(styles) == 1 and isinstance(styles[0], dict):
            images.append(str(styles[0].get("image")))
        else:
            images.append(Path(teacher).name)
    return images


def model_record(training: Training) -> dict:
    """How a model was trained, as its file's `training` entry (`styler models --json` shows it)."""
    config = training.config
    names = zip(config.style_names, painting_files(config), strict=True)
    return {
        "styles": [{"name": name, "image": image} for name, image in names],
        "image_size": config.image_size,
        "style_size": config.style_size,
        "loss_network": config.loss_net,
        "vgg_weights": training.vgg_source.name if training.vgg_source else None,
        "content_weight": config.content_weight,
        "style_weight": config.style_weight,
        "tv_weight": config.tv_weight,
        "color_weight": config.color_weight,
        "content_steps": config.content_steps,
        "style_ramp": config.style_ramp,
        "lr": config.lr,
        "batch_size": config.batch_size,
        "steps": training.step,
        "epochs": round(training.step / training.steps_per_epoch, 3),
        "seconds": round(training.seconds, 1),
        "seed": config.seed,
        "arch": config.arch,
        "data": config.data,
        "photos": len(training.photos.paths),
        "processes": training.processes.world_size,
        "device": training.device.type,
        "amp": config.amp,
        "init": Path(config.init).name if config.init else None,
        "teachers": [Path(teacher).name for teacher in config.teachers],
    }


def start_from(network: TransformerNet, path: Path | str) -> None:
    """Copy a model file's weights into `network` (--init): fine-tuning a style, or starting every style from a
    network trained to reconstruct photos, which keeps the content that a short run from scratch does not learn.

    The architectures must match except in the number of styles: a single-style model's normalization parameters
    start every style of a multi-style network.
    """
    try:
        model = resolve_model(str(path))  # a shipped model's name, as --model takes, or a file
    except StylerError as error:
        raise StylerError(f"--init {path}: {error}") from None
    wanted, given = network.arch, model.arch
    if replace(given, num_styles=wanted.num_styles) != wanted or given.num_styles not in (1, wanted.num_styles):
        raise StylerError(
            f"--init {path}: a {given.to_dict()} network cannot start a {wanted.to_dict()} one "
            "(same width, blocks and stem; one style or as many as trained)"
        )
    own = network.state_dict()
    weights = {
        key: value.expand_as(own[key]) if value.shape != own[key].shape else value
        for key, value in model.state_dict.items()
    }
    network.load_state_dict(weights)


def _check_can_create(folder: Path, flag: str) -> None:
    """Fail before training, not after hours of it: `folder` must exist or be creatable, and be writable."""
    existing = next((parent for parent in [folder, *folder.parents] if parent.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK):
        raise StylerError(f"{flag} {folder}: cannot create or write this folder")


def _create_folder(folder: Path, flag: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StylerError(f"{flag} {folder}: cannot create this folder ({error.strerror or error})") from None


def _refuse_out_that_is_an_input(out: Path, config: TrainConfig, photos: list[Path]) -> None:
    """--out never replaces what the run reads, under any name (symlink, hard link), --overwrite or not."""
    target = file_identity(out)
    if target is None:
        return
    inputs = [*config.styles, *photos, *(config.teachers or ()), config.init, config.vgg_weights]
    if any(file_identity(Path(path)) == target for path in inputs if path):
        raise StylerError(f"--out {out}: refusing to overwrite an input of this run; name a new model file")


# Lower bounds of the memory a training step needs per pixel of each crop: the tensors autograd keeps for the backward
# pass (measured with saved_tensors_hooks on 128 px crops), in the transformer network and in the loss network on its
# output. Optimizer state, the content's features and allocator slack come on top, so a run refused by these bounds
# could never fit, and one that would fit is never refused.
NETWORK_BYTES_PER_PIXEL = {"johnson": 3300, "lite": 250}
LOSS_BYTES_PER_PIXEL = {"vgg16": 3200, "random": 2400}  # distillation's teachers keep nothing for backward


def _check_memory(config: TrainConfig, device: torch.device, batch: int) -> None:
    """Refuse an --image-size whose activations cannot fit, instead of being killed by the OOM killer mid-run.
    `batch`: the crops on this device at once (all processes' on the CPU, which they share)."""
    per_pixel = NETWORK_BYTES_PER_PIXEL.get(config.arch, 0) + LOSS_BYTES_PER_PIXEL.get(config.loss_net, 0)
    needed = per_pixel * config.image_size**2 * batch
    available = _available_memory(device)
    if available is not None and needed > available:
        raise StylerError(
            f"--image-size {config.image_size} with --batch-size {config.batch_size} needs more than "
            f"{needed / 2**30:.1f} GiB for activations; {available / 2**30:.1f} GiB is available on {device.type}: "
            "lower --image-size (256 is the usual) or --batch-size"
        )


def _available_memory(device: torch.device) -> int | None:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None  # not Linux: no estimate, no refusal


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
