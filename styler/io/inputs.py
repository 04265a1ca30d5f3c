"""The photos a command was given: files, folders (optionally recursive) and glob patterns, as jobs with one input
each, every file once whatever name it was given under."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from styler.io.files import file_identity
from styler.io.images import READABLE_EXTENSIONS

STDIO = Path("-")  # "-" as input: standard input; as --output: standard output, as PNG (./- names a file "-")


@dataclass
class Job:
    input: Path
    output: Path | None = None
    error: str | None = None  # set when the job is refused before any work (bad input, output exists...)
    listed: bool = False  # found in a folder or by a pattern, not named: styler's own outputs are skipped
    subfolder: Path = Path()  # where under the folder given it was found (-r): its output goes there under -d

    @property
    def to_stdout(self) -> bool:
        return self.output == STDIO


def expand_inputs(arguments: list[str], recursive: bool = False, not_images: list[Path] | None = None) -> list[Job]:
    """Files as given, folders as their images (sorted; with `recursive` also those in subfolders, hidden ones
    left out), glob patterns as their matches; a file given twice (under any name) is stylized once. The other
    files found in folders are appended to `not_images`."""
    jobs: list[Job] = []
    for argument in arguments:
        path = Path(argument).expanduser()
        if argument == "-":
            jobs.append(Job(STDIO))
        elif path.is_dir():
            images = folder_images(path, recursive, not_images)
            jobs += [Job(p, listed=True, subfolder=p.parent.relative_to(path)) for p in images] or [
                Job(path, error=f"{path}: folder holds no images")
            ]
        elif path.exists() or not glob.has_magic(argument):
            jobs.append(Job(path))
        else:
            matches = sorted(Path(match) for match in glob.glob(str(path), recursive=True) if Path(match).is_file())
            jobs += [Job(p, listed=True) for p in matches] or [Job(path, error=f"{argument}: no files match")]
    seen: set[tuple[int, int]] = set()
    unique = []
    for job in jobs:
        identity = file_identity(job.input)
        if identity is None or identity not in seen:
            unique.append(job)
        if identity is not None:
            seen.add(identity)
    return unique


def folder_images(folder: Path, recursive: bool, not_images: list[Path] | None = None) -> list[Path]:
    """The image files (by extension) in `folder`, and with `recursive` in its subfolders, sorted; the other files
    go to `not_images`."""
    return walk_images(folder, recursive, READABLE_EXTENSIONS, not_images)


def walk_images(
    folder: Path, recursive: bool, extensions: frozenset[str], others: list[Path] | None = None
) -> list[Path]:
    """The files in `folder` (with `recursive`, also in its subfolders, hidden ones left out) whose extension is in
    `extensions`, sorted; the other files go to `others`. The one folder walker, for photos to stylize and to train on.

    Symbolic links are followed, to files and to folders, each real folder searched once (a link loop ends); only
    regular files count (a FIFO named .jpg would block the first read forever).
    """
    found, searched = [], set()
    for root, directories, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in searched or not recursive and Path(root) != folder:
            directories[:] = []
            continue
        searched.add(real)
        directories[:] = sorted(d for d in directories if not d.startswith(".")) if recursive else []
        found += [Path(root) / name for name in files if os.path.isfile(os.path.join(root, name))]
    if others is not None:
        others += [path for path in found if path.suffix.lower() not in extensions]
    return sorted(path for path in found if path.suffix.lower() in extensions)
