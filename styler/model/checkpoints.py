"""Training checkpoints: what a `step-NNNNNNN.ckpt` file holds, and the one place that reads and writes it.

A checkpoint is everything a run needs to go on exactly where it stopped: its config, position and time, the
network, optimizer and gradient scaler states, the random-feature loss network's calibration, the style images and
the RNG states. `--resume CHECKPOINT` needs nothing else, and `stylize -m CHECKPOINT` reads its network as a model.
Files are read with weights_only loading (tensors and plain data, never code) and written atomically.

The format lives beside the model files rather than in training/ because a checkpoint is also a model: `stylize`,
`--init` and `--teacher` read its network through model_files. Older files are brought up to date in one place,
`migrate`, so the rest of styler sees only the current version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from styler import __version__
from styler.errors import StylerError
from styler.io.files import unloadable_reason, write_atomically
from styler.model.architecture import ARCHITECTURES, FORMER_ARCHITECTURES

FORMAT = "styler-checkpoint"
# 2: every checkpoint holds its architecture, its style names and the whole config; version 1 files may lack them
# and are read through `migrate`.
VERSION = 2
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
    # The network's Architecture as a dict; None only for a version-1 file whose config names no known architecture.
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
        if contents.get("version") == 1:
            contents = migrate(contents)
        if contents.get("version") != VERSION:
            raise StylerError(
                f"{where}: checkpoint version {contents.get('version')!r}; this styler reads versions 1 to {VERSION}"
            )
        values = {field.name: contents[field.name] for field in fields(cls) if field.name in contents}
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


# Config fields added after the first checkpoints were written, with the value that reproduces those runs.
CONFIG_ADDED_LATER: dict[str, Any] = {
    "style_ramp": 0,
    "content_steps": 0,
    "style_size": None,
    "teachers": (),
    "color_weight": 0.0,
    "hold_out": None,
}


def migrate(contents: dict[str, Any]) -> dict[str, Any]:
    """A version-1 checkpoint's contents as version 2: style names, epoch, config fields and architecture that older
    files lack are filled with what they meant when the file was written. Anything else is left for from_dict to
    check."""
    contents = dict(contents, version=VERSION)
    config = contents.get("config")
    if not isinstance(config, dict):
        return contents
    contents["config"] = config = CONFIG_ADDED_LATER | config
    if isinstance(config.get("styles"), (list, tuple)):
        # Before checkpoints named their styles, styles were always images, named after their files.
        contents.setdefault("style_names", [Path(style).stem for style in config["styles"]])
    contents.setdefault("epoch", 0)  # informative only
    name, names = config.get("arch"), contents.get("style_names")
    if contents.get("architecture") is None and name in ARCHITECTURES and isinstance(names, (list, tuple)):
        # Before checkpoints stored the architecture, its name said it, with the meaning the name had then.
        arch = FORMER_ARCHITECTURES.get(name, ARCHITECTURES[name])
        contents["architecture"] = arch.to_dict() | {"num_styles": len(names)}
    return contents


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
        reason = unloadable_reason(path, error, "a step-NNNNNNN.ckpt written by `styler train`")
        raise StylerError(f"{flag} {path}: not a readable checkpoint ({reason})") from None
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
