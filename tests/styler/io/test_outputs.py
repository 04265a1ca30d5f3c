"""The one output planner that stylize, video, grid and train share: what names a folder, and what is refused."""

from __future__ import annotations

import os

import pytest

from styler.errors import StylerError
from styler.io.outputs import OutputPlan, names_folder, output_name, ready_folder, write_problem


def test_a_trailing_separator_of_this_system_names_a_folder(tmp_path):
    assert names_folder(tmp_path)  # an existing folder, however written
    assert names_folder(f"{tmp_path / 'new'}/") and not names_folder(tmp_path / "new")
    # A backslash is a separator only where the system says so (Windows); elsewhere it is part of a file name.
    assert names_folder(f"{tmp_path / 'new'}\\") == (os.sep == "\\" or os.altsep == "\\")


@pytest.mark.parametrize("command", ["stylize", "video"])
def test_stylize_and_video_read_a_trailing_backslash_alike(run_cli, tiny_model, tmp_path, command):
    """Once, `video` took "out\\" for a folder on every system and `stylize` only on Windows."""
    source = tmp_path / ("photo.png" if command == "stylize" else "clip.mp4")
    source.write_bytes(b"")
    result = run_cli(command, source, "-m", tiny_model, "-o", f"{tmp_path / 'out'}\\")
    assert result.exit_code == 2 and not (tmp_path / "out").exists()
    assert ("cannot write" if command == "stylize" else "choose a video file name") in result.stderr


def test_the_plan_refuses_inputs_twice_claimed_and_existing_outputs(tmp_path):
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"x")
    link = tmp_path / "link.png"
    link.symlink_to(photo)
    plan = OutputPlan([photo], overwrite=False)
    assert plan.refusal(link) == f"{link}: refusing to overwrite an input"
    output = output_name(photo, "starry", ".png", tmp_path / "out")
    assert output == tmp_path / "out" / "photo-starry.png"
    assert plan.refusal(output, photo) is None and output.parent.is_dir()  # its folder made
    assert plan.refusal(output, tmp_path / "photo.gif") == (
        f"{output}: {photo} already writes this output; stylize photo.gif with -o"
    )
    output.write_bytes(b"y")
    assert OutputPlan([], overwrite=False).refusal(output, label="--out") == (
        f"--out {output}: exists (pass --overwrite to replace it)"
    )
    assert OutputPlan([], overwrite=True).refusal(output) is None


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root writes anywhere")
def test_a_read_only_folder_is_refused_before_any_work(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert write_problem(folder / "below") is not None
        with pytest.raises(StylerError, match="cannot write outputs in this folder"):
            ready_folder(folder)
        assert "cannot write" in (OutputPlan([], False).refusal(folder / "a.png") or "")
    finally:
        folder.chmod(0o700)


def test_a_missing_folder_is_judged_by_the_folder_that_would_hold_it(tmp_path):
    assert write_problem(tmp_path / "a" / "b") is None and not (tmp_path / "a").exists()
    file = tmp_path / "file"
    file.write_bytes(b"")
    assert write_problem(file / "below") == f"{file} is not a folder"
