"""`styler train-arbitrary`: train the decoder of an arbitrary-style model (styler/arbitrary/training.py).

Finds the photos (held-out ones left out, a few more kept aside for the previews), checks the paintings, loads the
VGG16 encoder and runs the training to its model file; `--resume` continues from a checkpoint with its recipe.
"""

from __future__ import annotations

from pathlib import Path

from styler.arbitrary.model_file import read_small_encoder
from styler.arbitrary.network import LEVEL_LAYERS
from styler.arbitrary.training import (
    ArbitraryConfig,
    DecoderTraining,
    config_from_checkpoint,
    init_model,
    read_checkpoint,
    run,
)
from styler.devices import cpu_has_bfloat16, pick_device
from styler.errors import StylerError
from styler.io.images import read_photo
from styler.io.outputs import ready_folder
from styler.memory import keep_freed_memory
from styler.training.data import pick_preview_photos, read_hold_out, scan
from styler.vgg16 import load_vgg16_weights

MIN_PAINTING_SIDE = 64


def find_photos(data: Path, hold_out: Path | None, image_size: int) -> tuple[list[str], list[str]]:
    """The training photos and the preview photos (kept out of training), as strings for the recipe."""
    photos, _ = scan(data)
    if hold_out is not None:
        held = read_hold_out(hold_out)
        photos = [path for path in photos if path.name not in held]
    previews, _ = pick_preview_photos(photos, image_size)
    previews = previews[:3]
    photos = [path for path in photos if path not in previews]
    if len(photos) < 2:
        raise StylerError(f"--data {data}: {len(photos)} usable photos besides the previews; need at least 2")
    return [str(path) for path in photos], [str(path) for path in previews]


def check_paintings(paintings: list[Path]) -> list[str]:
    for painting in paintings:
        width, height = read_photo(painting).size
        if min(width, height) < MIN_PAINTING_SIDE:
            raise StylerError(f"--painting {painting}: {width}x{height} is too small (at least {MIN_PAINTING_SIDE} px)")
    return [str(path) for path in paintings]


def parse_skips(skips: list[str]) -> tuple[str, ...]:
    """--skip values: layers among LEVEL_LAYERS, or `none` alone."""
    if skips == ["none"]:
        return ()
    unknown = [layer for layer in skips if layer not in LEVEL_LAYERS]
    if unknown:
        raise StylerError(f"--skip {unknown[0]}: choose among {', '.join(LEVEL_LAYERS)}, or none")
    return tuple(layer for layer in LEVEL_LAYERS if layer in skips)  # one order, as the decoder keeps them


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
    if "decoder_skips" in settings:
        settings["decoder_skips"] = parse_skips(settings["decoder_skips"])
    if resume is not None:
        checkpoint = read_checkpoint(resume)
        moved = moved_to(out, checkpoint_dir)
        kept = config_from_checkpoint(checkpoint)
        kept_options = (("--skip", "decoder_skips"), ("--decoder-width", "decoder_width"), ("--init", "init"))
        for option, name in (*kept_options, ("--encoder", "encoder")):
            if name in settings and settings[name] != getattr(kept, name):
                raise StylerError(f"{option}: a resumed run keeps its decoder; start a new run with --init {resume}")
        config = config_from_checkpoint(checkpoint, **settings, **moved)
    else:
        data, out = new_run(data, out, "MODEL")
        checkpoint = None
        image_size = settings.get("image_size", ArbitraryConfig.image_size)
        photos, previews = find_photos(data, hold_out, image_size)
        config = ArbitraryConfig(
            photos=photos,
            previews=previews,
            **run_settings(paintings, out, checkpoint_dir, amp, target, vgg_weights),
            **settings,
        )
    if checkpoint is None:  # a wrong --init or --encoder is one line before any folder is made or VGG16 loaded
        if config.init is not None:
            init_model(config.init)
        if config.encoder is not None:
            read_small_encoder(Path(config.encoder))
    return run(DecoderTraining(config, ready_to_run(config), checkpoint))


def new_run(data: Path | None, out: Path | None, what: str) -> tuple[Path, Path]:
    """A new run's --data and --out, given and usable (train-arbitrary's and distill-encoder's)."""
    if data is None or out is None:
        raise StylerError(f"give --data PHOTOS and --out {what} (or --resume CHECKPOINT)")
    if out.exists() and not out.is_file():
        raise StylerError(f"--out {out}: not a file")
    return data, out


def run_settings(
    paintings: list[Path], out: Path, checkpoint_dir: Path | None, amp: bool | None, target, vgg_weights: Path | None
) -> dict:
    """A new run's config entries that both commands fill alike from their options."""
    return {
        "paintings": check_paintings(paintings),
        "out": str(out),
        "checkpoint_dir": str(checkpoint_dir or Path("checkpoints") / out.stem),
        "amp": cpu_has_bfloat16() if amp is None and target.type == "cpu" else bool(amp),
        "device": target.type,
        "vgg_weights": str(vgg_weights) if vgg_weights else None,
    }


def moved_to(out: Path | None, checkpoint_dir: Path | None) -> dict:
    """--out and --checkpoint-dir may move a resumed run (--steps extends it: the cosine schedule follows)."""
    return {"out": str(out) if out else None, "checkpoint_dir": str(checkpoint_dir) if checkpoint_dir else None}


def training_device(device: str, amp: bool | None):
    """--device, and --amp refused where bfloat16 would be slower (train-arbitrary's and distill-encoder's)."""
    keep_freed_memory()
    target = pick_device(device)
    if amp and target.type == "cpu" and not cpu_has_bfloat16():
        raise StylerError("--amp: this CPU has no bfloat16 instructions (AMX or AVX-512 BF16); it would be slower")
    return target


def ready_to_run(config) -> dict:
    """The folders proven writable before any step (a model file that could not be written at the end would lose
    the run), then VGG16's weights, their file noted in the recipe."""
    ready_folder(Path(config.out).parent, "--out")
    ready_folder(Path(config.checkpoint_dir), "--checkpoint-dir")
    weights, source = load_vgg16_weights(Path(config.vgg_weights) if config.vgg_weights else None)
    config.notes["vgg_weights"] = source.name
    return weights
