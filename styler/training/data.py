"""What a run reads: training photos (found recursively in a folder, decoded robustly, cropped to squares,
shuffled per epoch), the few held out for previews, and the style images.

Unreadable files never stop a run. A header check when the folder is scanned drops files that are not images,
refused as decompression bombs or of zero size; files whose pixel data turns out damaged (a truncated JPEG) are
met while decoding, inside the DataLoader workers, and replaced by the next readable file in the list, so every
batch stays full and the same on every run. Both kinds are counted and reported.

Sharding uses torch's DistributedSampler (one shard per process under torchrun; one process is the 1-shard case),
so a single process and several with the same global batch see the same photos at the same step.
"""

from __future__ import annotations

import itertools
import os
import signal
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from styler.errors import StylerError, under_option
from styler.io.files import one_line
from styler.io.images import DEFAULT_MAX_PIXELS, read_photo, to_uint8_tensor
from styler.io.inputs import walk_images
from styler.training.config import MIN_IMAGE_SIZE, TrainConfig
from styler.training.random_features import RandomFeatureNetwork

PREVIEW_PHOTOS = 4
# Preview photos stay out of training (so previews show unseen photos) once that costs at most 5 % of the data.
HOLD_OUT_FACTOR = 20
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def find_images(folder: Path, exclude: tuple[Path, ...] = ()) -> list[Path]:
    """Image files (by extension) anywhere under `folder`, in a fixed (sorted) order; hidden folders skipped, and
    the files and folders in `exclude` (a run's own checkpoints and previews).

    Symbolic links are followed (io.inputs.walk_images, the walker `stylize -r` uses too)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        if folder.exists():
            raise StylerError(f"--data {folder}: is a file; expected a folder of training photos")
        raise StylerError(f"--data {folder}: no such folder")
    found = walk_images(folder, recursive=True, extensions=IMAGE_EXTENSIONS)
    own = [Path(os.path.realpath(path)) for path in exclude]
    found = [path for path in found if not any(Path(os.path.realpath(path)).is_relative_to(mine) for mine in own)]
    if not found:
        raise StylerError(f"--data {folder}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in it or below it")
    return found


def header_problem(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> str | None:
    """Why the file cannot be a training photo, judged from its header alone; None when it looks readable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's bomb warning and metadata quirks: the size is checked below
            with Image.open(path) as image:
                width, height = image.size
    except Image.DecompressionBombError:
        return "refused as a possible decompression bomb"
    except UnidentifiedImageError:
        return "not an image file, or a format Pillow cannot read"
    except Exception as error:  # Pillow signals unreadable headers with many types; each means "skip this file"
        return one_line(error, 160)
    if width < 1 or height < 1:
        return f"zero size ({width}x{height})"
    if width * height > max_pixels:
        return f"refused as a possible decompression bomb ({width}x{height} pixels)"
    return None


def scan(
    folder: Path, max_pixels: int = DEFAULT_MAX_PIXELS, exclude: tuple[Path, ...] = ()
) -> tuple[list[Path], list[Skipped]]:
    """The usable-looking photos under `folder` (less `exclude`) and the files skipped; StylerError when none is
    usable."""
    usable, skipped = [], []
    for path in find_images(folder, exclude):
        problem = header_problem(path, max_pixels)
        if problem is None:
            usable.append(path)
        else:
            skipped.append(Skipped(str(path), problem))
    if not usable:
        raise StylerError(f"--data {folder}: none of its {len(skipped)} image files is readable (first: {skipped[0]})")
    return usable, skipped


def load_square(path: Path, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> Tensor:
    """A photo as a (3, size, size) uint8 tensor: EXIF-oriented RGB, shorter side scaled to `size`, centre cropped.

    uint8 keeps the batches that DataLoader workers send through shared memory four times smaller than float32.
    """
    photo = read_photo(path, max_pixels)
    return to_uint8_tensor(ImageOps.fit(photo.rgb, (size, size), Image.Resampling.BILINEAR, centering=(0.5, 0.5)))


class PhotoFolder(Dataset):
    """Square crops of the photos in `paths`; item i is (photo, files skipped on the way to a readable one)."""

    def __init__(self, paths: list[Path], size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.paths, self.size, self.max_pixels = list(paths), size, max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, tuple[Skipped, ...]]:
        skipped: list[Skipped] = []
        for offset in range(len(self.paths)):
            path = self.paths[(index + offset) % len(self.paths)]
            try:
                return load_square(path, self.size, self.max_pixels), tuple(skipped)
            except StylerError as error:
                skipped.append(Skipped(str(path), str(error).removeprefix(f"{path}: ")))
        raise StylerError(f"none of the {len(self.paths)} training photos could be decoded (first: {skipped[0]})")


def collate(items: list[tuple[Tensor, tuple[Skipped, ...]]]) -> tuple[Tensor, list[Skipped]]:
    photos, skipped = zip(*items, strict=True)
    return torch.stack(photos), [entry for entries in skipped for entry in entries]


class ResumableSampler(DistributedSampler):
    """DistributedSampler (per-epoch shuffle from seed + epoch, one shard per process) that can start mid-epoch."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int) -> None:
        # drop_last: every shard has the same length, so every process takes the same number of steps.
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.skip = 0

    def start(self, epoch: int, skip: int) -> None:
        """The next iteration is `epoch`'s order without its first `skip` samples (already trained on)."""
        self.set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.skip, None)

    def __len__(self) -> int:
        return super().__len__() - self.skip


def _ignore_interrupts(worker_id: int) -> None:
    """Ctrl-C reaches the whole process group; workers keep serving so the main process can save a checkpoint."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_loader(
    dataset: PhotoFolder, batch_size: int, sampler: ResumableSampler, workers: int, pin_memory: bool = False
) -> DataLoader:
    """Batches of `batch_size` (this process's share) from `sampler`, decoded in `workers` processes."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        drop_last=True,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        worker_init_fn=_ignore_interrupts if workers > 0 else None,
    )


# ----------------------------------------------------------------------------------------------- a run's images


@dataclass
class TrainingPhotos:
    """The photos a run trains on, those it could not read, and the few it holds out to preview progress on."""

    paths: list[Path]
    skipped: list[Skipped]
    preview_paths: list[Path]
    preview_crops: Tensor  # (P, 3, size, size) uint8
    held_out: bool  # the preview photos are left out of training (see HOLD_OUT_FACTOR)


def read_hold_out(path: Path) -> set[str]:
    """The photo file names listed in a --hold-out file: one per line, blank lines and # comments ignored."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise StylerError(f"--hold-out {path}: cannot be read ({error.__class__.__name__})") from None
    return {name for line in lines if (name := line.split("#", 1)[0].strip())}


def find_photos(config: TrainConfig) -> TrainingPhotos:
    assert config.data is not None and config.out is not None  # a checked() config names both
    # The run's checkpoint folder may lie inside --data (--data . puts checkpoints/ there): after a resume it would
    # train on its own preview grids. --out stays in: a photo named as --out is refused as an input of the run.
    assert config.checkpoint_dir is not None
    photos, skipped = scan(Path(config.data), exclude=(Path(config.checkpoint_dir),))
    if config.hold_out:
        held_names = read_hold_out(Path(config.hold_out))
        photos = [path for path in photos if path.name not in held_names]
    preview_paths, preview_crops = pick_preview_photos(photos, config.image_size)
    held_out = len(photos) >= HOLD_OUT_FACTOR * len(preview_paths)
    if held_out:
        photos = [path for path in photos if path not in preview_paths]
    if len(photos) < config.batch_size:
        raise StylerError(
            f"--data {config.data}: {len(photos)} readable photos, fewer than --batch-size {config.batch_size}"
        )
    return TrainingPhotos(photos, skipped, preview_paths, preview_crops, held_out)


# A painting must have at least this many pixels a side as the file holds it (the smallest --image-size and
# --style-size): scaled up from fewer it is a blur, a 1x1 or 8x8 image a flat colour, with no strokes to learn.
MIN_STYLE_SIDE = MIN_IMAGE_SIZE
STYLE_BOMB_ADVICE = (
    "train has no --max-pixels: scale the painting down first, it is used at --style-size pixels long side anyway"
)


def load_style_image(path: str, style_size: int | None) -> Tensor:
    """(3, H, W) uint8, scaled so its long side is `style_size` (when given)."""
    try:
        image = read_photo(Path(path), bomb_advice=STYLE_BOMB_ADVICE).rgb
    except StylerError as error:
        raise under_option("--style", path, error) from None
    if min(image.size) < MIN_STYLE_SIDE:
        raise StylerError(
            f"--style {path}: {image.width}x{image.height} is too small a painting to learn strokes from "
            f"(at least {MIN_STYLE_SIDE} pixels a side)"
        )
    if style_size is not None:
        scale = style_size / max(image.size)
        scaled = max(1, round(image.width * scale)), max(1, round(image.height * scale))
        if min(scaled) < RandomFeatureNetwork.min_size:
            raise StylerError(
                f"--style {path}: {image.width}x{image.height} scaled to a long side of --style-size {style_size} is "
                f"{scaled[0]}x{scaled[1]}, under {RandomFeatureNetwork.min_size} pixels a side; crop it to a less "
                "elongated shape or raise --style-size"
            )
        image = image.resize(scaled, Image.Resampling.LANCZOS)
    return to_uint8_tensor(image)


def pick_preview_photos(paths: list[Path], size: int) -> tuple[list[Path], Tensor]:
    """Up to PREVIEW_PHOTOS evenly spread photos that decode, and their (P, 3, size, size) uint8 crops."""
    chosen, crops = [], []
    count = min(PREVIEW_PHOTOS, len(paths))
    for slot in range(count):
        for path in paths[slot * len(paths) // count :]:
            if path in chosen:
                continue
            try:
                crops.append(load_square(path, size))
            except StylerError:
                continue
            chosen.append(path)
            break
    if not chosen:
        raise StylerError("no training photo could be decoded")
    return chosen, torch.stack(crops)
