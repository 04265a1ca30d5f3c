"""`styler distill-encoder`: train the small encoder from VGG16 (styler/arbitrary/distill.py).

Finds the photos (held-out ones left out), checks the paintings, loads VGG16 and runs the distillation to its
encoder file; `--resume` continues from a checkpoint with its recipe (a longer --steps extends it).
"""

from __future__ import annotations

from pathlib import Path

import torch

from styler.arbitrary.distill import EncoderConfig, EncoderDistillation
from styler.arbitrary.training import run
from styler.commands.train_arbitrary import check_paintings, find_photos, ready_to_run, training_device
from styler.devices import cpu_has_bfloat16
from styler.errors import StylerError
from styler.model.model_files import ENCODER_CHECKPOINT_FORMAT


def read_checkpoint(path: Path) -> dict:
    try:
        contents = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for damaged or foreign files
        raise StylerError(f"--resume {path}: not a readable checkpoint ({type(error).__name__})") from None
    if not isinstance(contents, dict) or contents.get("format") != ENCODER_CHECKPOINT_FORMAT:
        raise StylerError(f"--resume {path}: not a distill-encoder checkpoint")
    return contents


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
        checkpoint = read_checkpoint(resume)
        values = {**checkpoint["config"], "painting_sizes": tuple(checkpoint["config"]["painting_sizes"])}
        if "width" in settings and settings["width"] != values["width"]:
            raise StylerError("--width: a resumed run keeps its encoder; start a new run for another width")
        moved = {"out": str(out) if out else None, "checkpoint_dir": str(checkpoint_dir) if checkpoint_dir else None}
        values.update({key: value for key, value in {**settings, **moved}.items() if value is not None})
        config = EncoderConfig(**values)
    else:
        if data is None or out is None:
            raise StylerError("give --data PHOTOS and --out ENCODER (or --resume CHECKPOINT)")
        if out.exists() and not out.is_file():
            raise StylerError(f"--out {out}: not a file")
        checkpoint = None
        photos, _ = find_photos(data, hold_out, settings.get("image_size", EncoderConfig.image_size))
        config = EncoderConfig(
            photos=photos,
            paintings=check_paintings(paintings),
            out=str(out),
            checkpoint_dir=str(checkpoint_dir or Path("checkpoints") / out.stem),
            amp=cpu_has_bfloat16() if amp is None and target.type == "cpu" else bool(amp),
            device=target.type,
            vgg_weights=str(vgg_weights) if vgg_weights else None,
            **settings,
        )
    return run(EncoderDistillation(config, ready_to_run(config), checkpoint))
