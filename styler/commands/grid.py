"""`styler grid`: a contact sheet of photos (rows) by models (columns), to compare styles or training settings.

The first column is the photo itself; a multi-style model gets one column per style and one for an equal blend of
them, so the sheet shows what `--style a=0.5,b=0.5` does. Every cell is the photo scaled to fit a square cell and
stylized at that size (what a network trained on crops of that size sees); a row is as tall as its tallest photo.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from styler.devices import pick_device
from styler.errors import StylerError
from styler.io.files import shown_name
from styler.io.images import DEFAULT_MAX_PIXELS, Photo, read_photo, write_photo, writer_for
from styler.io.inputs import expand_inputs
from styler.io.outputs import OutputPlan
from styler.memory import keep_freed_memory
from styler.model.model_files import (
    ARBITRARY_KIND,
    is_arbitrary,
    model_from_contents,
    read_manifest,
    read_model_contents,
    resolve_model_file,
)
from styler.model.stylizer import ImageStylizer, Stylizer, choose_style, target_size

CAPTION_HEIGHT = 28
GAP = 6


@dataclass(frozen=True)
class GridOptions:
    """`styler grid`'s options, as the command line gives them (its defaults are stated there)."""

    output: Path
    models: tuple[str, ...]  # names or files; none: every shipped model
    cell: int
    device: str
    overwrite: bool
    style_images: tuple[Path, ...] = ()  # paintings for arbitrary-style models: one column each

    def __post_init__(self) -> None:
        if not 16 <= self.cell <= 2048:
            raise StylerError(f"--cell {self.cell}: pick a cell size between 16 and 2048 pixels")


@dataclass
class Column:
    caption: str
    stylizer: ImageStylizer | None  # None: the photo as it is


def arbitrary_columns(label: str, contents: dict, path: Path, paintings: tuple[Path, ...], device) -> list[Column]:
    """One column per painting for an arbitrary-style model, its encoder and decoder loaded once."""
    from styler.arbitrary.model_file import arbitrary_model_from
    from styler.arbitrary.stylizer import ArbitraryStylizer, Painting, weights_for

    if not paintings:
        raise StylerError(f"{label}: an arbitrary-style model; give the paintings with --style-image")
    model = arbitrary_model_from(contents, path)
    weights = weights_for(model)
    columns = []
    for painting in paintings:
        stylizer = ArbitraryStylizer(model, weights, device)
        stylizer.set_paintings([Painting(painting)])
        columns.append(Column(f"{label}: {painting.stem}", stylizer))
    return columns


def columns_for(model_names: list[str], device: torch.device, paintings: tuple[Path, ...] = ()) -> list[Column]:
    """One column per single-style model; per style plus an equal blend for a multi-style model; per painting for
    an arbitrary-style model."""
    columns = [Column("photo", None)]
    for name in model_names:
        label = Path(name).stem if name.endswith((".pth", ".ckpt")) else name
        path = resolve_model_file(name)
        contents = read_model_contents(path)
        if is_arbitrary(contents):
            columns += arbitrary_columns(label, contents, path, paintings, device)
            continue
        model = model_from_contents(contents, path)
        if len(model.styles) == 1:
            columns.append(Column(label, Stylizer(model, choose_style(None, model.styles), device)))
            continue
        specs = [*model.styles, ",".join(model.styles)]
        for spec in specs:
            caption = f"{label}: {'blend' if ',' in spec else spec}"
            columns.append(Column(caption, Stylizer(model, choose_style(spec, model.styles), device)))
    return columns


def render_cell(photo: Photo, column: Column, cell: int) -> Image.Image:
    scaled = photo.resized(target_size(photo.size, None, cell))
    return scaled.rgb if column.stylizer is None else column.stylizer(scaled).rgb


def assemble(cells: list[list[Image.Image]], captions: list[str], cell: int) -> Image.Image:
    """Captions over columns `cell` wide; each row as tall as its tallest image, images centred in their cells."""
    heights = [max(image.height for image in row) for row in cells]
    width = len(captions) * (cell + GAP) + GAP
    sheet = Image.new("RGB", (width, CAPTION_HEIGHT + GAP + sum(height + GAP for height in heights)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=16)
    for col, caption in enumerate(captions):
        left = GAP + col * (cell + GAP)
        draw.text((left + cell // 2, CAPTION_HEIGHT // 2 + GAP // 2), caption, fill="black", font=font, anchor="mm")
        top = CAPTION_HEIGHT + GAP
        for row, height in zip(cells, heights, strict=True):
            image = row[col]
            sheet.paste(image, (left + (cell - image.width) // 2, top + (height - image.height) // 2))
            top += height + GAP
    return sheet


def main(inputs: list[str], options: GridOptions) -> None:
    output, cell, overwrite = options.output, options.cell, options.overwrite
    writer_for(output)  # an unwritable extension fails before any work
    # By default every shipped model; the arbitrary-style ones only when there are paintings to give them.
    models = list(options.models) or [
        entry.name for entry in read_manifest() if entry.kind != ARBITRARY_KIND or options.style_images
    ]
    if not models:
        raise StylerError("no shipped models; name model files with --model")
    keep_freed_memory()
    jobs = expand_inputs(inputs)
    bad = [job.error for job in jobs if job.error]
    if bad:
        raise StylerError(bad[0])
    # --overwrite or not, the sheet never replaces a photo or a model it reads; a read-only folder is found now.
    OutputPlan([*(job.input for job in jobs), *models], overwrite).check(output)
    columns = columns_for(models, pick_device(options.device), options.style_images)
    advice = "shrink it first, or stylize it alone with `styler stylize --max-pixels`"
    photos = [read_photo(job.input, DEFAULT_MAX_PIXELS, bomb_advice=advice) for job in jobs]
    cells = [
        [render_cell(photo, column, cell) for column in columns]
        for photo in tqdm(photos, unit="photo", file=sys.stderr, disable=True if len(photos) < 2 else None)
    ]
    sheet_image = assemble(cells, [column.caption for column in columns], cell)
    write_photo(output, Photo(sheet_image, None, None), overwrite=overwrite)  # a sheet written meanwhile is kept
    print(shown_name(str(output)))
