"""Training photos: recursive discovery, robust decoding (skipped and counted), crops, per-epoch shuffles, shards."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (  # tests/helpers.py (pytest puts tests/ on sys.path)
    DAMAGED_DATA,
    READABLE_ODDITIES,
    REJECTED_BY_HEADER,
)
from PIL import Image

from styler.errors import StylerError
from styler.training.data import (
    PhotoFolder,
    ResumableSampler,
    collate,
    find_images,
    header_problem,
    load_square,
    make_loader,
    scan,
)


def save_photo(path: Path, width: int = 40, height: int = 30, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def png_claiming_size(path: Path, width: int, height: int) -> Path:
    """A PNG whose header (with a valid CRC) declares width x height: a decompression bomb's calling card."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )
    return path


def test_find_images_is_recursive_sorted_and_by_extension(tmp_path):
    for name in ["b.jpg", "a/c.PNG", "a/deeper/d.webp", "e.bmp", "f.tif", "g.jpeg"]:
        save_photo(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not a photo")
    save_photo(tmp_path / "h.gif")  # not a training format
    save_photo(tmp_path / ".cache" / "hidden.jpg")
    found = [path.relative_to(tmp_path).as_posix() for path in find_images(tmp_path)]
    assert found == ["a/c.PNG", "a/deeper/d.webp", "b.jpg", "e.bmp", "f.tif", "g.jpeg"]


def test_missing_and_empty_folders_are_user_errors(tmp_path):
    with pytest.raises(StylerError, match="no such folder"):
        find_images(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StylerError, match="no images"):
        find_images(tmp_path / "empty")


def test_a_folder_of_unreadable_files_is_a_user_error(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "b.png").write_text("hello")
    with pytest.raises(StylerError, match="none of its 2 image files is readable"):
        scan(tmp_path)


def test_bombs_are_refused_from_the_header(tmp_path):
    assert "decompression bomb" in header_problem(png_claiming_size(tmp_path / "huge.png", 100_000, 100_000))
    small = save_photo(tmp_path / "small.png", 20, 20)
    assert header_problem(small) is None
    assert "decompression bomb" in header_problem(small, max_pixels=399)


def test_odd_images_are_skipped_and_counted(tmp_path, odd_images):
    for index in range(3):
        save_photo(tmp_path / f"photo{index}.jpg", seed=index)
    for name in REJECTED_BY_HEADER + DAMAGED_DATA + READABLE_ODDITIES:
        shutil.copy(odd_images / name, tmp_path / name)
    usable, skipped = scan(tmp_path)
    assert sorted(Path(entry.path).name for entry in skipped) == sorted(REJECTED_BY_HEADER)
    assert all(entry.reason for entry in skipped)
    dataset = PhotoFolder(usable, 32)
    decoded = [dataset[index] for index in range(len(dataset))]
    damaged = {Path(entry.path).name for _, entries in decoded for entry in entries}
    assert damaged == set(DAMAGED_DATA)
    assert all(photo.shape == (3, 32, 32) and photo.dtype == torch.uint8 for photo, _ in decoded)


def test_a_damaged_photo_is_replaced_by_the_next_readable_one(tmp_path):
    good = [save_photo(tmp_path / f"{name}.png", seed=seed) for seed, name in enumerate("abc")]
    damaged = tmp_path / "b2.png"
    damaged.write_bytes(good[1].read_bytes()[:-40])  # cut off inside the image data
    dataset = PhotoFolder([good[0], damaged, good[2]], 16)
    photo, skipped = dataset[1]
    assert torch.equal(photo, load_square(good[2], 16))
    assert [Path(entry.path).name for entry in skipped] == ["b2.png"]
    photos, reported = collate([dataset[0], dataset[1]])
    assert photos.shape == (2, 3, 16, 16) and len(reported) == 1


def test_crops_are_exif_oriented_rgb_and_centred(tmp_path):
    # 60x20 stored sideways, EXIF orientation 6 (rotate 90 clockwise to display): shown as 20 wide, 60 tall.
    pixels = np.zeros((20, 60, 3), dtype=np.uint8)
    pixels[:, :20] = (255, 0, 0)  # stored left third: red -> top once rotated clockwise
    pixels[:, 20:40] = (0, 255, 0)
    pixels[:, 40:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=100)
    crop = load_square(path, 20)
    assert crop.shape == (3, 20, 20)
    centre = crop[:, 10, 10].tolist()  # a portrait photo's centre square is the middle third: green
    assert centre[1] > 200 and centre[0] < 60 and centre[2] < 60
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((30, 30), 128, dtype=np.uint8), "L").save(grey)
    assert load_square(grey, 16).shape == (3, 16, 16)


def test_shuffle_depends_on_seed_and_epoch():
    dataset = list(range(20))
    sampler = ResumableSampler(dataset, num_replicas=1, rank=0, seed=5)
    sampler.start(epoch=0, skip=0)
    first = list(sampler)
    sampler.start(epoch=1, skip=0)
    second = list(sampler)
    again = ResumableSampler(dataset, num_replicas=1, rank=0, seed=5)
    again.start(epoch=0, skip=0)
    assert sorted(first) == dataset and first != dataset and first != second and list(again) == first


def test_resuming_mid_epoch_skips_what_was_trained():
    sampler = ResumableSampler(list(range(10)), num_replicas=1, rank=0, seed=0)
    sampler.start(epoch=3, skip=0)
    whole = list(sampler)
    sampler.start(epoch=3, skip=4)
    assert list(sampler) == whole[4:] and len(sampler) == 6


def test_shards_cover_the_same_global_batches_as_one_process(tmp_path):
    # Global batch 4 = two processes x 2: step s of both shards together is step s of the single process.
    paths = [save_photo(tmp_path / f"{index:02d}.png", 8, 8, seed=index) for index in range(11)]
    dataset = PhotoFolder(paths, 8)
    single = ResumableSampler(dataset, num_replicas=1, rank=0, seed=3)
    shards = [ResumableSampler(dataset, num_replicas=2, rank=rank, seed=3) for rank in range(2)]
    for sampler in [single, *shards]:
        sampler.start(epoch=1, skip=0)
    single_batches = [sorted(batch) for batch in torch.tensor(list(single))[: 4 * (11 // 4)].view(-1, 4).tolist()]
    # 5 photos per shard, 2 per batch: the loader drops the incomplete last batch (drop_last), as in training
    shard_batches = [torch.tensor(list(shard))[:4].view(-1, 2).tolist() for shard in shards]
    assert len(shard_batches[0]) == len(single_batches) == 2
    assert [sorted(a + b) for a, b in zip(*shard_batches, strict=True)] == single_batches


def test_loader_decodes_in_worker_processes(tmp_path):
    paths = [save_photo(tmp_path / f"{index}.jpg", seed=index) for index in range(4)]
    (tmp_path / "bad.jpg").write_bytes(paths[0].read_bytes()[:200])  # passes the header check, fails decoding
    dataset = PhotoFolder(sorted(tmp_path.glob("*.jpg")), 16)
    sampler = ResumableSampler(dataset, num_replicas=1, rank=0, seed=0)
    sampler.start(epoch=0, skip=0)
    batches = list(make_loader(dataset, 1, sampler, workers=1))
    assert len(batches) == 5 and all(photos.shape == (1, 3, 16, 16) for photos, _ in batches)
    assert [Path(entry.path).name for _, skipped in batches for entry in skipped] == ["bad.jpg"]
