"""Reading every kind of image into RGB + alpha, and writing results atomically with alpha and ICC kept."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageCms

from styler.errors import StylerError
from styler.io.images import Photo, read_photo, write_photo

SRGB_PROFILE = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
LAB_PROFILE = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()


def pixels_of(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int64)


def save(tmp_path, name: str, image: Image.Image, **options):
    path = tmp_path / name
    image.save(path, **options)
    return path


# --------------------------------------------------------------------------------------------- modes


@pytest.mark.parametrize(
    "name, make, expected_grey",
    [
        ("grey.png", lambda: Image.new("L", (5, 3), 77), 77),
        ("bilevel.png", lambda: Image.new("1", (5, 3), 1), 255),
        ("sixteen.png", lambda: Image.new("I;16", (5, 3), 4660), 18),  # 4660 / 257: scaled, not clipped to 255
        ("sixteen-max.tif", lambda: Image.new("I;16", (5, 3), 65535), 255),
        ("unit-float.tif", lambda: Image.new("F", (5, 3), 0.5), 128),
        ("int32.tif", lambda: Image.new("I", (5, 3), 200), 200),
    ],
)
def test_grey_and_high_bit_depth_images_become_grey_rgb(tmp_path, name, make, expected_grey):
    photo = read_photo(save(tmp_path, name, make()))
    assert photo.rgb.mode == "RGB" and photo.size == (5, 3) and photo.alpha is None
    assert (pixels_of(photo.rgb) == expected_grey).all()


def test_float_images_outside_0_to_1_are_stretched_to_their_own_range(tmp_path):
    values = np.linspace(-3.0, 3.0, 12, dtype=np.float32).reshape(3, 4)
    photo = read_photo(save(tmp_path, "phase.tif", Image.fromarray(values, "F")))
    grey = pixels_of(photo.rgb)[..., 0]
    assert grey.min() == 0 and grey.max() == 255 and (np.diff(grey.ravel()) >= 0).all()


def test_palette_images_become_their_colours(tmp_path):
    image = Image.new("P", (4, 2), 1)
    image.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    photo = read_photo(save(tmp_path, "palette.png", image))
    assert (pixels_of(photo.rgb) == [10, 200, 30]).all() and photo.alpha is None


@pytest.mark.parametrize("name", ["cmyk.jpg", "cmyk.tif"])
def test_cmyk_images_become_rgb(tmp_path, name):
    photo = read_photo(save(tmp_path, name, Image.new("CMYK", (6, 4), (0, 255, 255, 0)), quality=100))
    red = pixels_of(photo.rgb)
    assert photo.rgb.mode == "RGB" and (red[..., 0] > 240).all() and (red[..., 1:] < 15).all()


def test_lab_images_become_rgb(tmp_path):
    white = Image.merge("LAB", [Image.new("L", (4, 4), value) for value in (255, 128, 128)])
    photo = read_photo(save(tmp_path, "lab.tif", white))
    assert (pixels_of(photo.rgb) > 245).all()


# -------------------------------------------------------------------------------------- transparency


def test_rgba_alpha_is_split_off_exactly(tmp_path, random_pixels):
    rgba = random_pixels(7, 5, 4)
    photo = read_photo(save(tmp_path, "rgba.png", Image.fromarray(rgba, "RGBA")))
    assert (pixels_of(photo.rgb) == rgba[..., :3]).all()
    assert (pixels_of(photo.alpha) == rgba[..., 3]).all()


def test_grey_with_alpha_keeps_both(tmp_path):
    la = Image.merge("LA", [Image.new("L", (3, 3), 90), Image.new("L", (3, 3), 40)])
    photo = read_photo(save(tmp_path, "la.png", la))
    assert (pixels_of(photo.rgb) == 90).all() and (pixels_of(photo.alpha) == 40).all()


@pytest.mark.parametrize(
    "name, make",
    [
        ("palette.png", lambda: _palette_with_transparent_index()),
        ("palette.gif", lambda: _palette_with_transparent_index()),
        ("colour-key.png", lambda: _with_key(Image.new("RGB", (4, 4), (1, 2, 3)), (1, 2, 3))),
        ("grey-key.png", lambda: _with_key(Image.new("L", (4, 4), 9), 9)),
        ("sixteen-key.png", lambda: _with_key(Image.new("I;16", (4, 4), 300), 300)),
    ],
)
def test_transparency_keys_become_an_alpha_channel(tmp_path, name, make):
    image, transparency = make()
    photo = read_photo(save(tmp_path, name, image, transparency=transparency))
    alpha = pixels_of(photo.alpha)
    assert alpha[0, 0] == 0 and alpha.max() in (0, 255)


def _palette_with_transparent_index():
    image = Image.new("P", (4, 4), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.putpixel((3, 3), 1)
    return image, 0


def _with_key(image: Image.Image, key):
    return image, key


# -------------------------------------------------------------------------------- orientation and ICC


@pytest.mark.parametrize(
    "orientation, transpose",
    [
        (3, Image.Transpose.ROTATE_180),
        (6, Image.Transpose.ROTATE_270),
        (8, Image.Transpose.ROTATE_90),
        (2, Image.Transpose.FLIP_LEFT_RIGHT),
    ],
)
def test_exif_orientation_is_applied(tmp_path, random_pixels, orientation, transpose):
    stored = Image.fromarray(random_pixels(6, 4, 3), "RGB")
    exif = Image.Exif()
    exif[0x0112] = orientation
    photo = read_photo(save(tmp_path, "rotated.png", stored, exif=exif))
    expected = stored.transpose(transpose)
    assert photo.size == expected.size
    assert (pixels_of(photo.rgb) == pixels_of(expected)).all()


def test_an_rgb_icc_profile_is_kept_and_other_profiles_dropped(tmp_path):
    rgb = Image.new("RGB", (3, 3), (20, 30, 40))
    assert read_photo(save(tmp_path, "srgb.png", rgb, icc_profile=SRGB_PROFILE)).icc_profile == SRGB_PROFILE
    assert read_photo(save(tmp_path, "lab-profile.png", rgb, icc_profile=LAB_PROFILE)).icc_profile is None
    assert read_photo(save(tmp_path, "none.png", rgb)).icc_profile is None


def test_animations_give_their_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    rgb = pixels_of(read_photo(path).rgb)
    assert (rgb[..., 0] > 200).all() and (rgb[..., 2] < 50).all()


# ------------------------------------------------------------------------------------------ bad input


def test_decompression_bombs_are_refused_below_and_above_twice_the_limit(tmp_path):
    path = save(tmp_path, "big.png", Image.new("RGB", (100, 100)))
    for limit in (6_000, 1_000):  # Pillow only warns between 1x and 2x its limit; styler refuses both
        with pytest.raises(StylerError, match="decompression bomb.*--max-pixels"):
            read_photo(path, max_pixels=limit)
    assert read_photo(path, max_pixels=10_000).size == (100, 100)
    assert Image.MAX_IMAGE_PIXELS != 1_000  # the limit is restored after reading


def test_truncated_images_are_refused(tmp_path, random_pixels):
    path = save(tmp_path, "whole.jpg", Image.fromarray(random_pixels(64, 64, 3), "RGB"))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(path.read_bytes()[:800])
    with pytest.raises(StylerError, match="damaged or unsupported image.*truncated"):
        read_photo(cut)


@pytest.mark.parametrize("contents", [b"", b"plain text, not pixels\n", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_files_that_are_not_images_are_refused(tmp_path, contents):
    (tmp_path / "fake.png").write_bytes(contents)
    with pytest.raises(StylerError, match="fake.png: not an image file"):
        read_photo(tmp_path / "fake.png")


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(StylerError, match="no such file"):
        read_photo(tmp_path / "absent.jpg")


# ---------------------------------------------------------------------------------------------- writing


def photo_with_alpha() -> Photo:
    rgb = Image.new("RGB", (4, 2), (10, 20, 30))
    alpha = Image.fromarray(np.array([[0, 255, 128, 255]] * 2, dtype=np.uint8), "L")
    return Photo(rgb, alpha, SRGB_PROFILE)


@pytest.mark.parametrize("name", ["out.png", "out.webp", "out.tif"])
def test_formats_with_alpha_keep_it(tmp_path, name):
    write_photo(tmp_path / name, photo_with_alpha())
    with Image.open(tmp_path / name) as written:
        assert written.mode == "RGBA"
        assert np.asarray(written.getchannel("A"))[0].tolist() == [0, 255, 128, 255]
        assert written.info.get("icc_profile") == SRGB_PROFILE


def test_jpeg_composites_alpha_onto_white(tmp_path):
    write_photo(tmp_path / "out.jpg", photo_with_alpha())
    with Image.open(tmp_path / "out.jpg") as written:
        assert written.mode == "RGB"
        transparent, opaque = written.getpixel((0, 0)), written.getpixel((1, 0))
    assert min(transparent) > 240 and max(opaque) < 50
    assert written.info.get("icc_profile") == SRGB_PROFILE


def test_unknown_output_extensions_are_refused(tmp_path):
    with pytest.raises(StylerError, match="cannot write .xyz; use one of"):
        write_photo(tmp_path / "out.xyz", photo_with_alpha())


def test_a_failed_encode_leaves_no_file(tmp_path, monkeypatch):
    def failing_save(self, file, *args, **kwargs):
        file.write(b"half an image")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(StylerError, match="out.png: cannot write.*No space left"):
        write_photo(tmp_path / "out.png", photo_with_alpha())
    assert list(tmp_path.iterdir()) == []
