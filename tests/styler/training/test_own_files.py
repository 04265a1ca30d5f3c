"""train leaves its checkpoint folder out of the photo search (issue 26 #16): with --data . it (preview grids, PNGs)
lies inside the training photos, and a resume would train on them. (--out stays in the search, so that a photo
named as --out is refused as an input: test_train's test_out_never_replaces_an_input_even_with_overwrite.)"""

from __future__ import annotations

from helpers import smooth_image

from styler.training.config import TrainConfig
from styler.training.data import find_photos


def test_checkpoints_and_previews_inside_data_are_not_training_photos(tmp_path):
    for index in range(3):
        smooth_image(tmp_path / f"photo{index}.jpg", 80, 60, seed=index)
    checkpoints = tmp_path / "checkpoints" / "wave"
    smooth_image(checkpoints / "preview-000100.jpg", 80, 60, seed=7)
    config = TrainConfig(
        data=str(tmp_path),
        out=str(tmp_path / "wave.pth"),
        checkpoint_dir=str(checkpoints),
        batch_size=1,
        image_size=64,
    )
    found = find_photos(config)
    assert {path.name for path in found.paths + found.preview_paths} == {"photo0.jpg", "photo1.jpg", "photo2.jpg"}
