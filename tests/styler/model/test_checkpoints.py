"""Training checkpoint files: what they hold, in which order, and how a damaged or older one is read."""

from __future__ import annotations

import pytest
import torch

from styler.errors import StylerError
from styler.model import checkpoints
from styler.model.architecture import FORMER_ARCHITECTURES, Architecture, architecture
from styler.model.checkpoints import Checkpoint


def checkpoint(step: int = 3) -> Checkpoint:
    return Checkpoint(
        config={"styles": ["/photos/styles/starry.jpg"], "arch": "lite"},
        style_names=["starry"],
        step=step,
        epoch=0,
        seconds=1.5,
        model={"conv.weight": torch.ones(2)},
        optimizer={"state": {}, "param_groups": []},
        scaler={},
        loss_network={},
        style_images=[torch.zeros(3, 4, 4, dtype=torch.uint8)],
        rng={"torch": torch.get_rng_state(), "cuda": []},
    )


def test_a_checkpoint_reads_back_as_written_with_the_keys_in_file_order(tmp_path):
    path = checkpoints.write(tmp_path, checkpoint(), keep=3)
    assert path.name == "step-0000003.ckpt"
    raw = torch.load(path, weights_only=True)
    assert list(raw) == [
        "format", "version", "styler_version", "config", "style_names", "step", "epoch", "seconds", "model",
        "optimizer", "scaler", "loss_network", "style_images", "rng", "architecture",
    ]  # fmt: skip
    read = checkpoints.read(path)
    assert read.step == 3 and read.style_names == ["starry"] and torch.equal(read.model["conv.weight"], torch.ones(2))


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    for step in (1, 2, 10, 11):
        checkpoints.write(tmp_path, checkpoint(step), keep=2)
    assert [path.name for path in checkpoints.checkpoint_files(tmp_path)] == ["step-0000010.ckpt", "step-0000011.ckpt"]


def test_a_checkpoint_from_before_style_names_names_its_styles_after_their_files(tmp_path):
    contents = checkpoint().to_dict() | {"version": 1}
    del contents["style_names"], contents["epoch"]
    torch.save(contents, tmp_path / "old.ckpt")
    assert checkpoints.read(tmp_path / "old.ckpt").style_names == ["starry"]


def test_version_2_is_written_and_a_version_1_file_is_migrated_to_what_it_meant():
    assert checkpoint().to_dict()["version"] == 2
    old = checkpoint().to_dict() | {
        "version": 1,
        "architecture": None,
        "config": {"styles": ["/a.jpg"], "arch": "lite"},
    }
    migrated = checkpoints.migrate(old)
    # Before checkpoints stored it, "lite" named the network whose stem had stride 2.
    assert migrated["version"] == 2 and migrated["architecture"] == {**FORMER_ARCHITECTURES["lite"].to_dict()}
    assert migrated["config"]["style_ramp"] == 0 and migrated["config"]["teachers"] == ()  # fields added later
    two_styles = {"config": {"styles": ["/a.jpg", "/b.jpg"], "arch": "johnson"}, "style_names": ["a", "b"]}
    assert checkpoints.migrate(old | two_styles)["architecture"] == architecture("johnson", 2).to_dict()
    stored = Architecture(width=0.5, residual_blocks=2).to_dict()
    assert checkpoints.migrate(old | {"architecture": stored})["architecture"] == stored  # kept when stored


def test_a_checkpoint_of_an_unknown_version_is_refused(tmp_path):
    torch.save(checkpoint().to_dict() | {"version": 3}, tmp_path / "new.ckpt")
    with pytest.raises(StylerError, match="checkpoint version 3; this styler reads versions 1 to 2"):
        checkpoints.read(tmp_path / "new.ckpt")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda c: c.pop("optimizer"), "lacks optimizer"),
        (lambda c: c.update(model=[1, 2]), "damaged training checkpoint (model of the wrong type)"),
        (lambda c: c.update(version=99), "checkpoint version 99"),
        (lambda c: c.update(format="styler-model"), "not a styler training checkpoint"),
    ],
)
def test_a_damaged_checkpoint_is_one_line_naming_the_flag(tmp_path, damage, message):
    contents = checkpoint().to_dict()
    damage(contents)
    torch.save(contents, tmp_path / "bad.ckpt")
    with pytest.raises(StylerError, match="^--resume .*bad.ckpt: ") as error:
        checkpoints.read(tmp_path / "bad.ckpt")
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda data: data[: len(data) // 2], "(a damaged or truncated torch file: failed reading zip archive: "),
        (lambda data: data[:100] + b"\x17" * 50 + data[150:], "(damaged data: unsupported operand 23)"),
    ],
)
def test_a_damaged_checkpoint_file_is_one_clean_line(tmp_path, damage, reason):
    """torch's own text goes on with advice ("This is an internal miniz error. If you are seeing..."): only its
    first sentence is kept, whole, and the file is named once."""
    checkpoints.write(tmp_path, checkpoint(), keep=1)
    path = checkpoints.file_for(tmp_path, 3)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(StylerError) as error:
        checkpoints.read(path)
    message = str(error.value)
    assert message.startswith(f"--resume {path}: not a readable checkpoint {reason}") and message.endswith(")")
    assert message.count(str(path)) == 1 and "\n" not in message and "miniz" not in message and len(message) < 250
