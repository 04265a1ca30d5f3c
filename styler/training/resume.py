"""A run's config: the options given, or for `--resume` the checkpoint's recipe with the options a resumed run may
change (where files go, how long it runs, on what)."""

from __future__ import annotations

from dataclasses import fields, replace

from styler.errors import StylerError
from styler.model import checkpoints
from styler.model.checkpoints import Checkpoint
from styler.training.config import RECIPE_FIELDS, TrainConfig, flag


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
    checkpoint = checkpoints.read(resume)  # an older checkpoint's config is completed by checkpoints.migrate
    saved = TrainConfig(**{name: value for name, value in checkpoint.config.items() if name in known})
    saved.styles, saved.teachers = tuple(saved.styles), tuple(saved.teachers)
    if "styles" in given:  # compare like with like: the saved styles are absolute paths
        given["styles"] = replace(saved, styles=given["styles"]).checked().styles
    for name in RECIPE_FIELDS:
        if name in given and given[name] != getattr(saved, name):
            raise StylerError(
                f"{flag(name)} {given[name]!r} differs from the checkpoint's {getattr(saved, name)!r}; "
                "a resumed run keeps what it learns (start a new run to change it)"
            )
    if given.get("max_steps") is not None and given["max_steps"] <= checkpoint.step:
        # Nothing to train: the run would only write the checkpoint's network as --out, which is not what was asked.
        raise StylerError(
            f"--resume {resume}: already at step {checkpoint.step}; --max-steps {given['max_steps']} trains "
            "nothing (give more steps)"
        )
    # --overwrite is a decision about this command's --out, not part of the run a checkpoint records.
    return replace(saved, **({"overwrite": False} | given)).checked(), checkpoint
