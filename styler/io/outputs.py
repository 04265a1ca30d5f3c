"""Where outputs go: the one planner `stylize`, `video`, `grid` and `train` name their outputs with, refusing before
any work, one line each, an output that would overwrite an input, another output of the same run or an existing
file (without --overwrite), or that lands in a folder no file can be created in.

Writability is proven by creating and removing a probe file, not by os.access: permission bits do not tell a
read-only file system, a full quota or an ACL.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

from styler.errors import StylerError
from styler.io.files import file_identity, open_new, os_error_text, temporary_name

# A trailing separator makes --output a folder: "/" everywhere, "\" only where it is one (Windows). Elsewhere a
# backslash is an ordinary character of a file name, and "out\" names a file.
FOLDER_ENDINGS = tuple({"/", os.sep, os.altsep or "/"})


def names_folder(output: str | Path) -> bool:
    """Whether --output names a folder: an existing one, or a name ending in a path separator."""
    text = str(output)  # a string keeps the trailing separator that Path() drops
    return Path(text).is_dir() or text.endswith(FOLDER_ENDINGS)


def output_name(source: Path, tag: str, suffix: str, folder: Path | None = None) -> Path:
    """<stem>-<tag><suffix>, in `folder` or beside the source."""
    return (folder or source.parent) / f"{source.stem}-{tag}{suffix}"


def write_problem(folder: Path) -> str | None:
    """Why no file can be created in `folder`, or in the nearest existing folder above it that would hold it; found
    by creating and removing a hidden probe file. None when outputs can be written there."""
    existing = next((parent for parent in [folder, *folder.parents] if parent.exists()), None)
    if existing is None or not existing.is_dir():
        return f"{existing} is not a folder" if existing else "no such folder"
    probe = temporary_name(existing / "styler-probe")
    try:
        os.close(open_new(probe))
    except OSError as error:
        return os_error_text(error)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return None


def ready_folder(folder: Path, label: str = "") -> None:
    """Create `folder` and prove that files can be created in it, before any work; StylerError (prefixed with the
    option's `label`) if not."""
    where = f"{label} {folder}" if label else str(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StylerError(f"{where}: cannot create the output folder ({os_error_text(error)})") from None
    problem = write_problem(folder)
    if problem:
        raise StylerError(f"{where}: cannot write outputs in this folder ({problem})")


class OutputPlan:
    """The outputs of one run, claimed one by one: `refusal` says why an output cannot be written, or claims it."""

    def __init__(self, inputs: Iterable[Path | str], overwrite: bool) -> None:
        # The same file under any name (symlink, hard link, case-insensitive file system) is the same input.
        self.inputs = {file_identity(Path(path)) for path in inputs} - {None}
        self.overwrite = overwrite
        self.claimed: dict[Path, Path | None] = {}  # resolved output -> the input writing it
        self.folder_problems: dict[Path, str | None] = {}

    def refusal(self, output: Path, source: Path | None = None, label: str = "") -> str | None:
        """None, and `output` claimed for `source`, when it may be written; else the one-line reason, prefixed with
        the option's `label`. Its folder is created when missing (a folder named by the user, or -r's subfolders)."""
        where = f"{label} {output}" if label else str(output)
        try:
            target = output.resolve()
            if file_identity(output) in self.inputs:
                return f"{where}: refusing to overwrite an input"
            if target in self.claimed:  # e.g. photo.gif and photo.psd, both written as photo-starry.png
                first, name = self.claimed[target], source.name if source else output.name
                return f"{where}: {first} already writes this output; stylize {name} with -o"
            if output.exists() and not self.overwrite:
                return f"{where}: exists (pass --overwrite to replace it)"
            folder = output.parent
            if folder not in self.folder_problems:
                folder.mkdir(parents=True, exist_ok=True)
                self.folder_problems[folder] = write_problem(folder)
            if self.folder_problems[folder]:
                return f"{where}: cannot write ({self.folder_problems[folder]})"
        except OSError as error:  # e.g. a name over the file system's limit: this output fails, the others go on
            return f"{where}: cannot write ({os_error_text(error)})"
        self.claimed[target] = source
        return None

    def check(self, output: Path, source: Path | None = None, label: str = "") -> Path:
        """`output`, claimed; StylerError when refused (for commands that stop at the first refusal)."""
        problem = self.refusal(output, source, label)
        if problem:
            raise StylerError(problem)
        return output
