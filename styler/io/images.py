"""Reading photos into plain RGB (+ alpha) and writing results atomically, keeping what a user would expect kept.

Reading: the first frame of the file, EXIF orientation applied, every Pillow mode turned into 8-bit RGB (16-bit
and float greyscale scaled, not clipped), transparency split off as an 8-bit alpha channel, an RGB ICC profile kept.
Decompression bombs are refused above a pixel limit; truncated or unreadable files raise StylerError.

Writing: format from the extension; alpha is kept where the format has it (PNG, WebP, TIFF) and composited onto
white for JPEG and BMP; the ICC profile is embedded again; the file appears complete or not at all.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from styler import __version__
from styler.errors import StylerError
from styler.io.files import one_line, os_error_text, write_atomically

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own default: 0.25 GiB of 24-bit pixels
READABLE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".pbm", ".pnm"}
    | {".psd", ".ico", ".avif", ".jp2", ".mpo", ".tga", ".dib"}
)
WRITERS: dict[str, tuple[str, dict]] = {
    ".jpg": ("JPEG", {"quality": 92}),
    ".jpeg": ("JPEG", {"quality": 92}),
    ".png": ("PNG", {"compress_level": 6}),
    ".webp": ("WEBP", {"quality": 90}),
    ".tif": ("TIFF", {"compression": "tiff_lzw"}),
    ".tiff": ("TIFF", {"compression": "tiff_lzw"}),
    ".bmp": ("BMP", {}),
}
FORMATS_WITH_ALPHA = frozenset({"PNG", "WEBP", "TIFF"})
HIGH_BIT_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


@dataclass
class Photo:
    rgb: Image.Image  # mode "RGB", orientation applied
    alpha: Image.Image | None  # mode "L", same size, when the input had transparency
    icc_profile: bytes | None  # kept only when it describes RGB
    exif: bytes | None = None  # the input's EXIF (date, camera...) without its orientation, which is applied
    from_styler: bool = False  # the file carries the mark styler writes into its outputs

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.size

    def resized(self, size: tuple[int, int]) -> Photo:
        if size == self.size:
            return self

        def resize(image: Image.Image) -> Image.Image:
            return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)

        return Photo(resize(self.rgb), resize(self.alpha) if self.alpha else None, self.icc_profile, self.exif)


def check_readable_file(path: Path) -> None:
    """StylerError unless `path` is a regular file: a FIFO would block the first read forever, a folder or a device
    would give a decoder's puzzling message."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise StylerError(f"{path}: no such file") from None
    except OSError as error:
        raise StylerError(f"{path}: cannot read ({os_error_text(error)})") from None
    if stat.S_ISDIR(mode):
        raise StylerError(f"{path}: is a folder; expected an image file")
    if not stat.S_ISREG(mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a device or socket"
        raise StylerError(f"{path}: is {kind}, not a regular file; expected an image file")


# What a decompression-bomb refusal advises: the way past the limit depends on the command (only stylize has it).
RAISE_THE_LIMIT = "raise the limit with --max-pixels if the file is trusted"


def read_photo(
    path: Path,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    data: bytes | None = None,
    bomb_advice: str = RAISE_THE_LIMIT,
    memory: int | None = None,
) -> Photo:
    """Decode an image file completely, or raise StylerError with the reason in one line. data: the file's bytes
    (standard input), `path` then only names it in messages; bomb_advice: what a refusal over `max_pixels` says to
    do; memory: the bytes available, which decoding must fit in (checked from the header, before decoding); None:
    not checked."""
    if data is None:
        check_readable_file(path)
    try:
        with warnings.catch_warnings():
            # Pillow warns between 1x and 2x its limit and raises above; one exact limit is easier to explain.
            warnings.simplefilter("ignore")  # metadata oddities (bad EXIF, MPO headers) do not spoil the pixels
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _pixel_limit(max_pixels), Image.open(path if data is None else io.BytesIO(data)) as image:
                check_decoded_size(path, image.size, memory)
                image.load()
                icc_profile = image.info.get("icc_profile")
                # exif_transpose copies even an upright image: 0.4 GB more at 100 MP, so only a turned one is copied.
                turned = image.getexif().get(ORIENTATION_TAG, 1) in range(2, 9)
                oriented = ImageOps.exif_transpose(image) if turned else image
                exif, from_styler = _exif_and_mark(image)  # after turning: it removes the orientation tag
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise StylerError(
            f"{path}: refused as a possible decompression bomb (more than {max_pixels:,} pixels; {bomb_advice})"
        ) from None
    except FileNotFoundError:
        raise StylerError(f"{path}: no such file") from None
    except PermissionError as error:
        raise StylerError(f"{path}: cannot read ({os_error_text(error)})") from None
    except MemoryError:
        raise StylerError(f"{path}: not enough memory to decode it") from None
    except UnidentifiedImageError:
        raise StylerError(f"{path}: not an image file, or a format Pillow cannot read") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        # Pillow's decoders signal damaged data with these; "image file is truncated" is the common one.
        raise StylerError(f"{path}: damaged or unsupported image ({one_line(error)})") from None
    width, height = oriented.size
    if width < 1 or height < 1:
        raise StylerError(f"{path}: image has zero size ({width}x{height})")
    rgb, alpha = _split_alpha(oriented)
    return Photo(rgb, alpha, icc_profile if _is_rgb_profile(icc_profile) else None, exif, from_styler)


# Pillow keeps most modes (RGB among them) in 4 bytes a pixel, and the photo is then converted to RGB once more.
DECODING_BYTES_PER_PIXEL = 8


def check_decoded_size(path: Path, size: tuple[int, int], available: int | None) -> None:
    """StylerError when decoding an image of `size` (read from its header) would need more than `available` bytes:
    a small file can claim 100000x100000 pixels, and a raised --max-pixels lets it through to a MemoryError or the
    kernel's OOM killer."""
    needed = size[0] * size[1] * DECODING_BYTES_PER_PIXEL
    if available is not None and needed > available:
        raise StylerError(
            f"{path}: {size[0]}x{size[1]} needs about {needed / 2**30:.1f} GiB to decode, more than the "
            f"{available / 2**30:.1f} GiB of memory available"
        )


SOFTWARE_TAG, ORIENTATION_TAG = 0x0131, 0x0112
# A TIFF's own layout (sizes, strips, compression...) read as EXIF; none of it describes the output, and XMP (700)
# may hold an orientation of its own.
TIFF_STRUCTURE_TAGS = frozenset(
    {254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 277, 278, 279, 280, 281, 282, 283, 284, 290, 291, 296, 317}
    | {318, 319, 320, 321, 322, 323, 324, 325, 338, 339, 340, 341, 347, 513, 514, 529, 530, 531, 532, 700, 34675}
)
MARK = f"styler {__version__}"  # the EXIF Software of every output: re-runs over a folder skip these files
# What Pillow's EXIF parser and writer raise for damaged or odd metadata.
EXIF_ERRORS = (ValueError, TypeError, KeyError, IndexError, OSError, SyntaxError, UnicodeError, struct.error)
MAX_EXIF_BYTES = 65_000  # a JPEG APP1 segment holds at most 65,533 bytes


def _exif_and_mark(image: Image.Image) -> tuple[bytes | None, bool]:
    """The EXIF to carry into the output, orientation removed (the pixels are turned upright), and whether the
    file is styler's own output. Metadata Pillow cannot parse is dropped, never an error."""
    try:
        exif = image.getexif()
        software = str(exif.get(SOFTWARE_TAG, "") or image.info.get("Software", ""))
        for tag in (ORIENTATION_TAG, SOFTWARE_TAG, *TIFF_STRUCTURE_TAGS):
            exif.pop(tag, None)
        data = exif.tobytes() if len(exif) else None
    except EXIF_ERRORS:  # damaged EXIF comes in many shapes; the pixels are what matter
        return None, False
    return (data if data and len(data) <= MAX_EXIF_BYTES else None), software.startswith("styler")


@contextmanager
def _pixel_limit(max_pixels: int) -> Iterator[None]:
    """Temporarily set Pillow's decompression-bomb limit (a module global Pillow reads while opening)."""
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, max_pixels
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _split_alpha(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """8-bit RGB plus an alpha channel when the image has transparency (an alpha band or a tRNS colour key)."""
    if image.mode in HIGH_BIT_DEPTH_MODES:
        values = np.asarray(image)
        grey = Image.fromarray(_to_8bit(values), "L").convert("RGB")
        key = image.info.get("transparency")
        alpha = Image.fromarray(np.where(values == key, 0, 255).astype(np.uint8), "L") if key is not None else None
        return grey, alpha
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        return rgba.convert("RGB"), rgba.getchannel("A")
    return (image if image.mode == "RGB" else image.convert("RGB")), None  # convert() would copy an RGB image


def _to_8bit(values: np.ndarray) -> np.ndarray:
    """16-bit integers scale by 1/257; other wide or float data has no fixed range, so its own range is stretched."""
    if values.dtype == np.uint16 or (
        values.dtype.kind in "iu" and values.min() >= 0 and values.max() > 255 and values.max() <= 65535
    ):
        return (values.astype(np.float32) / 257.0).round().astype(np.uint8)
    low, high = float(values.min()), float(values.max())
    if values.dtype.kind == "f" and low >= 0.0 and high <= 1.0:
        return (values * 255.0).round().astype(np.uint8)
    if low >= 0.0 and high <= 255.0:
        return values.round().astype(np.uint8)
    span = high - low if high > low else 1.0
    return ((values.astype(np.float64) - low) * (255.0 / span)).round().astype(np.uint8)


def _is_rgb_profile(profile: bytes | None) -> bool:
    """ICC header bytes 16..19 name the colour space the profile describes; only an RGB one fits the output."""
    return profile is not None and len(profile) >= 20 and profile[16:20] == b"RGB "


EXIF_IFD_POINTERS = (0x8769, 0x8825, 0xA005)  # Exif, GPS, interoperability


def _output_exif(exif: bytes | None, flat: bool = False) -> bytes:
    """The input's EXIF (or none) with Software set to styler's mark. flat: without the sub-IFDs (date taken,
    exposure, GPS), which libtiff refuses to write as plain tags of a TIFF."""
    out = Image.Exif()
    if exif:
        try:
            out.load(exif)
            for tag in EXIF_IFD_POINTERS if flat else ():
                out.pop(tag, None)
        except EXIF_ERRORS:  # unparsable: only the mark
            out = Image.Exif()
    out[SOFTWARE_TAG] = MARK
    return out.tobytes()


def writer_for(path: Path) -> str:
    """The Pillow format for an output path, or StylerError naming the supported extensions."""
    suffix = path.suffix.lower()
    if suffix not in WRITERS:
        raise StylerError(
            f"{path}: cannot write {suffix or 'files without an extension'}; use one of {', '.join(WRITERS)}"
        )
    return WRITERS[suffix][0]


def write_photo(path: Path, photo: Photo, overwrite: bool = True) -> None:
    """Encode by extension and write atomically; alpha kept where the format allows, else composited onto white.

    overwrite=False: StylerError if `path` exists when the finished file is put in place (the check before the work
    is not enough: another run may write the same name meanwhile)."""
    writer_for(path)
    try:
        encoded = encode_photo(photo, path.suffix.lower())
        write_atomically(path, lambda file: file.write(encoded), overwrite=overwrite)
    except OSError as error:
        raise StylerError(f"{path}: cannot write ({os_error_text(error)})") from None


def encode_photo(photo: Photo, suffix: str) -> memoryview:
    """The file's bytes for an extension in WRITERS (also what `-o -` sends to standard output)."""
    image_format = WRITERS[suffix][0]
    options = dict(WRITERS[suffix][1])
    image = photo.rgb
    if photo.alpha is not None:
        if image_format in FORMATS_WITH_ALPHA:
            image = image.copy()
            image.putalpha(photo.alpha)
        else:
            image = Image.composite(image, Image.new("RGB", image.size, "white"), photo.alpha)
    if photo.icc_profile and image_format != "BMP":
        options["icc_profile"] = photo.icc_profile
    if image_format != "BMP":  # BMP has no metadata
        options["exif"] = _output_exif(photo.exif, flat=image_format == "TIFF")
    # Encoded in memory first: libtiff writing to a full disk raises RuntimeError ("tiff codec initialization
    # failed") and prints to stderr; writing the finished bytes ourselves gives one OSError with its errno.
    encoded = io.BytesIO()
    try:
        image.save(encoded, format=image_format, **options)
    except (ValueError, TypeError, KeyError, RuntimeError, struct.error):  # EXIF the encoder refuses: without it
        encoded = io.BytesIO()
        image.save(encoded, format=image_format, **{**options, "exif": _output_exif(None)})
    return encoded.getbuffer()  # getvalue() would copy it: 30-300 MB for a 100-megapixel photo


# ----------------------------------------------------------------------------------------------- tensors


def to_uint8_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB image as a (3, H, W) uint8 tensor."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image to (1, 3, H, W) float32 in 0..255; the HWC array makes it channels_last without a copy."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).unsqueeze(0).float()


def tensor_to_image(x: torch.Tensor) -> Image.Image:
    array = x[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


# BT.601 luma, the Y of JPEG's YCbCr: with Cb and Cr held fixed, a change of Y moves R, G and B by the same amount.
LUMA = (0.299, 0.587, 0.114)


def luma(images: torch.Tensor) -> torch.Tensor:
    """The BT.601 luma of (..., 3, H, W) RGB images, as (..., 1, H, W)."""
    return (images * images.new_tensor(LUMA).view(3, 1, 1)).sum(dim=-3, keepdim=True)
