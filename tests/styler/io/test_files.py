"""styler.io.files: the atomic write's order of operations."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from styler.io.files import write_atomically


@pytest.mark.parametrize("overwrite", [True, False])  # published with rename(), or with link()
def test_the_data_reaches_the_disk_before_the_file_gets_its_name(tmp_path, monkeypatch, overwrite):
    """After a power cut the name must not point at a file whose data was never written: fsync, then the name."""
    events = []
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        status = os.fstat(descriptor)
        events.append(("fsync", status.st_ino, status.st_size))
        real_fsync(descriptor)

    def naming(real):
        def call(source, destination, *args, **kwargs):
            events.append(("name", os.stat(source).st_ino, Path(destination).name))
            return real(source, destination, *args, **kwargs)

        return call

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", naming(os.replace))
    monkeypatch.setattr(os, "link", naming(os.link))
    write_atomically(tmp_path / "out.bin", lambda file: file.write(b"data"), overwrite=overwrite)
    synced, named = events
    assert synced[0] == "fsync" and synced[2] == 4  # the whole file, written
    assert named == ("name", synced[1], "out.bin")  # then that same file named
    assert (tmp_path / "out.bin").read_bytes() == b"data"
