"""A photo whose header claims more pixels than memory can hold is refused before decoding (issue 26 #2)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from styler.commands import stylize


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header says width x height (its data is a few bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )
    return path


def test_a_header_bigger_than_memory_is_one_line_and_the_batch_goes_on(
    run_cli, tiny_model, tmp_path, make_image, monkeypatch
):
    monkeypatch.setattr(stylize, "available_memory", lambda device: 8 * 2**30)
    bomb = png_claiming(tmp_path / "bomb.png", 100_000, 100_000)
    assert bomb.stat().st_size < 100
    good = make_image("good.png", 16, 16)
    result = run_cli("stylize", bomb, good, "-m", tiny_model, "--max-pixels", "20000000000")
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    reason = "100000x100000 needs about 74.5 GiB to decode, more than the 8.0 GiB of memory available"
    assert errors == [f"styler: error: {bomb}: {reason}"]
    assert (tmp_path / "good-tiny.png").exists() and not (tmp_path / "bomb-tiny.png").exists()
