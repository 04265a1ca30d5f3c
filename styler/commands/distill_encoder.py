"""`styler distill-encoder`: train the small encoder from VGG16 (styler/arbitrary/distill.py).

Finds the photos (held-out ones left out), checks the paintings, loads VGG16 and runs the distillation to its
encoder file; `--resume` continues from a checkpoint with its recipe (a longer --steps extends it).
"""

from __future__ import annotations

from pathlib import Path

from styler.arbitrary.distill import EncoderConfig, EncoderDistillation
from styler.arbitrary.training import read_checkpoint, run
from styler.commands.train_arbitrary import (
    find_photos,
    moved_to,
    new_run,
    ready_to_run,
    run_settings,
    training_device,
)
from styler.errors import StylerError
from styler.model.model_files import ENCODER_CHECKPOINT_FORMAT


def main(
    data: Path | None,
    out: Path | None,
    paintings: list[Path],
    hold_out: Path | None = None,
    checkpoint_dir: Path | None = None,
    resume: Path | None = None,
    amp: bool | None = None,
    device: str = "auto",
    vgg_weights: Path | None = None,
    **settings,
) -> int:
    """Build the run from the options (or the checkpoint) and train; returns the exit code."""
    target = training_device(device, amp)
    settings = {key: value for key, value in settings.items() if value is not None}
    if resume is not None:
        checkpoint = read_checkpoint(resume, ENCODER_CHECKPOINT_FORMAT, "a distill-encoder checkpoint")
        values = {**checkpoint["config"], "painting_sizes": tuple(checkpoint["config"]["painting_sizes"])}
        if "width" in settings and settings["width"] != values["width"]:
            raise StylerError("--width: a resumed run keeps its encoder; start a new run for another width")
        moved = moved_to(out, checkpoint_dir)
        values.update({key: value for key, value in {**settings, **moved}.items() if value is not None})
        config = EncoderConfig(**values)
    else:
        data, out = new_run(data, out, "ENCODER")
        checkpoint = None
        photos, _ = find_photos(data, hold_out, settings.get("image_size", EncoderConfig.image_size))
        config = EncoderConfig(
            photos=photos, **run_settings(paintings, out, checkpoint_dir, amp, target, vgg_weights), **settings
        )
    return run(EncoderDistillation(config, ready_to_run(config), checkpoint))
