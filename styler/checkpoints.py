"""Training checkpoints: what a `step-NNNNNNN.ckpt` file holds, and the one place that reads and writes it.

A checkpoint is everything a run needs to go on exactly where it stopped: its config, position and time, the
network, optimizer and gradient scaler states, the random-feature loss network's calibration, the style images and
the RNG states. `--resume CHECKPOINT` needs nothing else, and `stylize -m CHECKPOINT` reads its network as a model.
Files are read with weights_only loading (tensors and plain data, never code) and written atomically.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from styler import __version__
from styler.errors import StylerError
from styler.files import foreign_file_kind, load_failure, write_atomically

FORMAT = "styler-checkpoint"
VERSION = 1
FILE_NAME = re.compile(r"^step-(\d+)\.ckpt$")


@dataclass
class Checkpoint:
    """The contents of one checkpoint file; the field order is the file's key order."""

    config: dict[str, Any]  # TrainConfig's fields
    style_names: list[str]
    step: int
    epoch: int
    seconds: float  # training time so far, over every resumed part of the run
    model: dict[str, Any]  # the transformer network's state_dict
    optimizer: dict[str, Any]
    scaler: dict[str, Any]
    loss_network: dict[str, Any]  # the random-feature network's calibration; empty for the other loss networks
    style_images: list[Any]  # (3, H, W) uint8 tensors, as the run read them
    rng: dict[str, Any]  # {"torch": CPU RNG state, "cuda": one state per GPU, or []}
    # The network's Architecture as a dict; None in checkpoints written before they stored it (see network.py).
    architecture: dict[str, Any] | None = None
    styler_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        # Not asdict(): it would deep-copy every tensor of the model and optimizer states.
        values = {field.name: getattr(self, field.name) for field in fields(self)}
        return {"format": FORMAT, "version": VERSION, "styler_version": values.pop("styler_version"), **values}

    @classmethod
    def from_dict(cls, contents: Any, path: Path, flag: str = "--resume") -> Checkpoint:
        """The checkpoint in `contents` (a file's dict), or one StylerError line saying what is wrong with it."""
        where = f"{flag} {path}" if flag else str(path)
        if not (isinstance(contents, dict) and contents.get("format") == FORMAT):
            raise StylerError(f"{where}: not a styler training checkpoint")
        if contents.get("version") != VERSION:
            raise StylerError(f"{where}: checkpoint version {contents.get('version')!r}; this styler reads {VERSION}")
        values = {field.name: contents[field.name] for field in fields(cls) if field.name in contents}
        config = values.get("config")
        if isinstance(config, dict) and isinstance(config.get("styles"), (list, tuple)):
            # Written before checkpoints named their styles: styles were then always images, named after their files.
            values.setdefault("style_names", [Path(style).stem for style in config["styles"]])
        values.setdefault("epoch", 0)  # informative only
        optional = ("architecture", "styler_version")
        missing = [field.name for field in fields(cls) if field.name not in values and field.name not in optional]
        if missing:
            raise StylerError(f"{where}: a training checkpoint that lacks {', '.join(missing)}")
        kinds: dict[str, type | tuple[type, ...]] = {
            "config": dict,
            "model": dict,
            "optimizer": dict,
            "scaler": dict,
            "loss_network": dict,
            "rng": dict,
        }
        kinds |= {"style_images": (list, tuple), "style_names": (list, tuple), "step": int, "seconds": (int, float)}
        wrong = [name for name, kind in kinds.items() if not isinstance(values[name], kind)]
        if not isinstance(values.get("architecture"), (dict, type(None))):
            wrong.append("architecture")
        if wrong:
            raise StylerError(f"{where}: a damaged training checkpoint ({', '.join(wrong)} of the wrong type)")
        values["style_images"], values["style_names"] = list(values["style_images"]), list(values["style_names"])
        return cls(**values)


def file_for(directory: Path, step: int) -> Path:
    return directory / f"step-{step:07d}.ckpt"


def checkpoint_files(directory: Path) -> list[Path]:
    """A run's checkpoints in `directory`, oldest first."""
    if not directory.is_dir():
        return []
    found = [(int(match.group(1)), path) for path in directory.iterdir() if (match := FILE_NAME.match(path.name))]
    return [path for _, path in sorted(found)]


def load(path: Path) -> Any:
    """A checkpoint file's raw contents, loaded without running pickled code (torch.load's own errors escape)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def read(path: Path, flag: str = "--resume") -> Checkpoint:
    """A checkpoint written by `write`; any problem is one StylerError line naming `flag`."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise StylerError(f"{flag} {path}: is a folder; expected a checkpoint file (step-NNNNNNN.ckpt in it?)")
    if not path.is_file():
        raise StylerError(f"{flag} {path}: no such checkpoint file")
    try:
        contents = load(path)
    except Exception as error:  # torch.load raises many types for damaged or foreign files
        kind = foreign_file_kind(path)
        reason = f"{kind}; expected a step-NNNNNNN.ckpt written by `styler train`" if kind else load_failure(error)
        raise StylerError(f"{flag} {path}: not a readable checkpoint ({reason[:160]})") from None
    return Checkpoint.from_dict(contents, path, flag)


def write(directory: Path, checkpoint: Checkpoint, keep: int) -> Path:
    """Write step-NNNNNNN.ckpt into `directory` atomically, then keep only the newest `keep` checkpoints there."""
    import torch

    path = file_for(directory, checkpoint.step)
    directory.mkdir(parents=True, exist_ok=True)
    contents = checkpoint.to_dict()
    try:
        write_atomically(path, lambda file: torch.save(contents, file))
    except OSError as error:
        raise StylerError(f"{path}: cannot write the checkpoint ({error.strerror or error})") from None
    for old in checkpoint_files(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path
