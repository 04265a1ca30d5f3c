"""`styler grid`: photos by models on one sheet, captions on top, refusing what stylize refuses."""

from __future__ import annotations

import numpy as np
from helpers import claimed_size_png  # tests/helpers.py (pytest puts tests/ on sys.path)
from PIL import Image

from styler.commands.grid import CAPTION_HEIGHT, GAP


def test_sheet_has_a_row_per_photo_and_a_column_per_style(run_cli, make_image, tiny_model, tiny_multi_style_model):
    wide, tall = make_image("wide.png", 90, 40), make_image("tall.jpg", 30, 70)
    sheet_path = wide.parent / "sheet.png"
    result = run_cli(
        "grid", wide, tall, "-m", tiny_model, "-m", tiny_multi_style_model, "-o", sheet_path, "--cell", "64"
    )
    assert result.exit_code == 0, result.stderr
    sheet = np.asarray(Image.open(sheet_path).convert("RGB"))
    columns = 1 + 1 + 3 + 1  # photo, tiny, three styles of multi, their blend
    # Rows as tall as their tallest photo scaled into 64x64: 64x28 (wide), then 27x64 (tall).
    assert sheet.shape == (CAPTION_HEIGHT + GAP + (28 + GAP) + (64 + GAP), GAP + columns * (64 + GAP), 3)
    left, top = GAP, CAPTION_HEIGHT + GAP
    photo_cell = sheet[top : top + 28, left : left + 64]
    expected = np.asarray(Image.open(wide).convert("RGB").resize((64, 28), Image.Resampling.LANCZOS, reducing_gap=3.0))
    assert np.abs(photo_cell.astype(int) - expected).max() <= 1
    tall_cell = sheet[top + 28 + GAP : top + 28 + GAP + 64, left : left + 64]
    assert (tall_cell[:, :18] == 255).all() and (tall_cell[:, 18 + 27 :] == 255).all()  # centred, white beside
    # Each style column differs from the others: the styles were really applied, not the same cell repeated.
    cells = [sheet[top : top + 28, GAP + c * (64 + GAP) : GAP + c * (64 + GAP) + 64] for c in range(columns)]
    for a in range(columns):
        for b in range(a + 1, columns):
            assert not np.array_equal(cells[a], cells[b]), (a, b)


def test_refuses_to_overwrite_and_bad_cells(run_cli, make_image, tiny_model):
    photo = make_image("a.png", 20, 20)
    sheet = photo.parent / "sheet.jpg"
    sheet.write_bytes(b"keep me")
    refused = run_cli("grid", photo, "-m", tiny_model, "-o", sheet)
    assert refused.exit_code == 2 and "exists" in refused.stderr and sheet.read_bytes() == b"keep me"
    tiny_cell = run_cli("grid", photo, "-m", tiny_model, "-o", photo.parent / "new.jpg", "--cell", "4")
    assert tiny_cell.exit_code == 2 and "--cell 4" in tiny_cell.stderr
    assert not (photo.parent / "new.jpg").exists()
    unreadable = photo.parent / "broken.jpg"
    unreadable.write_bytes(b"not an image")
    bad = run_cli("grid", photo, unreadable, "-m", tiny_model, "-o", photo.parent / "new.jpg")
    assert bad.exit_code == 2 and "broken.jpg" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert not (photo.parent / "new.jpg").exists()


def test_the_sheet_never_replaces_an_input_photo(run_cli, make_image, tiny_model):
    """`grid a.jpg -o a.jpg --overwrite` is refused: the sheet would replace the photo."""
    source = make_image("a.jpg", 32, 24)
    before = source.read_bytes()
    result = run_cli("grid", source, "-m", tiny_model, "-o", source, "--overwrite", "--cell", "16")
    assert result.exit_code == 2 and "refusing to overwrite an input" in result.stderr
    assert source.read_bytes() == before


def test_an_oversized_photo_gets_advice_that_grid_can_follow(run_cli, tiny_model, tmp_path):
    photo = claimed_size_png(tmp_path / "huge.png", 20_000, 20_000)
    result = run_cli("grid", photo, "-m", tiny_model, "-o", tmp_path / "sheet.png")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert (
        "decompression bomb" in result.stderr and "stylize it alone with `styler stylize --max-pixels`" in result.stderr
    )
    assert "raise the limit with --max-pixels" not in result.stderr and not (tmp_path / "sheet.png").exists()
