"""Plain helpers shared by several test modules (fixtures live in conftest.py): the repository's root, tiny
photo-like images, a tiny training run's arguments, and what the shared odd-images folder holds."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

REPOSITORY = Path(__file__).resolve().parent.parent

# From ../shared/data/odd-images: the header check rejects the first group, decoding the second; the rest are
# readable in odd ways (EXIF rotation, CMYK, greyscale, a PNG named .jpg).
REJECTED_BY_HEADER = [
    "broken.png",
    "empty.jpg",
    "text_not_image.jpg",
    "png_decompression_dos.png",
    "bmp_badbitcount.bmp",
]
DAMAGED_DATA = ["truncated_jpeg.jpg", "truncated_image.png"]
READABLE_ODDITIES = ["hopper_orientation_6.jpg", "pil_sample_cmyk.jpg", "hopper_gray.jpg", "png_data_named.jpg"]


def smooth_image(path: Path, width: int, height: int, seed: int) -> Path:
    """Random colour blobs (a photo-like image, unlike pixel noise) saved as `path`."""
    coarse = np.random.default_rng(seed).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC).save(path)
    return path


def stripes(path: Path, colours: tuple[tuple[int, int, int], ...] = ((230, 180, 20), (20, 40, 160))) -> Path:
    pixels = np.zeros((80, 96, 3), dtype=np.uint8)
    for index in range(0, 96, 6):
        pixels[:, index : index + 3] = colours[(index // 6) % len(colours)]
    Image.fromarray(pixels).save(path)
    return path


def tiny_run(photos: Path, style: Path, work: Path, *extra: str | Path) -> list[str | Path]:
    """Arguments for a run of a few 50 ms steps; `extra` adds to or overrides them."""
    return [
        "train",
        "--style",
        style,
        "--data",
        photos,
        "--out",
        work / "model.pth",
        "--checkpoint-dir",
        work / "checkpoints",
        "--loss-net",
        "random",
        "--arch",
        "lite",
        "--image-size",
        "64",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--max-steps",
        "3",
        "--preview-every",
        "0",
        *extra,
    ]


def claimed_size_png(path: Path, width: int, height: int) -> Path:
    """A PNG of a few bytes whose header claims width x height: a decompression bomb to any decoder that trusts it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path
