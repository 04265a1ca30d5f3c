"""A Training taken to its last step: the loop, its progress bar and signals, the periodic checkpoints and
previews, the model file at the end, and what the user is told on the way.

The loop checkpoints atomically every N steps, so `--resume CHECKPOINT` alone continues a run and reproduces an
uninterrupted one bit for bit on the CPU. The first Ctrl-C (or SIGTERM) saves a checkpoint and stops.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from styler.errors import StylerError
from styler.io.files import OutputExists
from styler.io.images import Photo, tensor_to_image, write_photo
from styler.model.checkpoints import checkpoint_files
from styler.model.model_files import save_model
from styler.training.config import TrainConfig, teacher_model
from styler.training.data import Skipped
from styler.training.trainer import Training

EXIT_INTERRUPTED = 130


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
