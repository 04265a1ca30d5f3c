"""Stylizing a photo too large for memory, exactly: layer by layer, in row bands, with whole-image statistics.

Every instance norm normalizes with its input's statistics over the whole image, so no layer after the first norm
can run on a tile alone: tiled stylizers give each tile its own statistics, and their tiles disagree in colour. Here
the network runs one convolution at a time over the whole (mirror-padded) image, a band of full-width rows at a time:

- each band of a convolution's output reads the rows of its input it needs (the kernel's halo, with the reflection
  at the image's border, as inference.ConvRows works out), so the band's output equals the whole image's;
- the raw convolution output goes to a spill file (float32 by default, unlinked on creation: nothing is left behind
  by a crash, Ctrl-C or a full disk) while its per-channel moments are merged into whole-image ones (Chan et al.'s
  parallel update, in float64);
- the next pass reads that file band by band and normalizes with those statistics (inference.statistics_in_use, the
  seam video uses for its steady statistics), then ReLU or a residual sum, then its own convolution.

So each activation is computed once and written and read once (a residual block's input twice); recomputing the
layers before each norm instead would run the network's first layers once per norm after them (docs/benchmarks.md,
"Prints", has the measured costs of both). Memory holds the photo, the result and one band's tensors.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from tqdm import tqdm

import instancenorm
from styler.errors import StylerError
from styler.io.files import os_error_text
from styler.model.architecture import Architecture
from styler.model.inference import ConvRows, conv_band, normalize, statistics_in_use
from styler.model.network import ConvLayer, TransformerNet

GiB = 2**30
# Whole-process resident memory the whole-image path needs: a fixed part (the interpreter, torch, the model: 0.69 GiB
# measured on a tiny photo) and per pixel of the padded image: the photo and the result, the float input and output
# tensors, and the network's largest set of live activations with the allocator's slack over them. Fitted to
# /usr/bin/time's peaks (1 thread, docs/benchmarks.md, "Prints"): johnson 1.86 GiB at 6 MP and 7.92 at 25 MP, lite
# 1.32 and 3.07; it over-estimates by 2-35 %, so a photo near the limit goes out of core rather than over the budget.
PROCESS_BYTES = 750 * 2**20
WHOLE_IMAGE_FIXED_BYTES_PER_PIXEL = 40
WHOLE_IMAGE_ACTIVATION_FACTOR = 1.45
# The out-of-core path holds the photo and the result (PIL, 4 bytes a pixel each) and a band's tensors: its input read
# from the spill, the gathered padded copy, the output, a residual, the row buffers, and what the allocator keeps of
# the bands of other shapes before: BAND_TENSORS times the band's largest tensor, measured (lite at 100 MP with
# 93 MB bands peaked 0.8 GiB above the process and the photo), the band sized from the memory left, within bounds.
OUT_OF_CORE_BYTES_PER_PIXEL = 8
BAND_TENSORS = 10
MIN_BAND_BYTES, MAX_BAND_BYTES = 4 * 2**20, 128 * 2**20
SPILL_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def activation_bytes_per_pixel(arch: Architecture) -> float:
    """float32 bytes per input pixel of the largest set of activations the whole-image forward holds at once: a
    layer's input and output, or in a residual block its input, the first conv's output and the second's."""
    c1, c2, c3 = arch.channels
    area = [1 / arch.stem_stride**2, 1 / (4 * arch.stem_stride**2), 1 / (16 * arch.stem_stride**2)]
    live = [
        3 + c1 * area[0],  # conv1
        c1 * area[0] + c2 * area[1],  # conv2, deconv2
        c2 * area[1] + c3 * area[2],  # conv3, deconv1
        3 * c3 * area[2],  # a residual block
        c1 * area[0] + 3,  # deconv3
    ]
    return 4 * max(live)


def whole_image_bytes(arch: Architecture, pixels: int) -> int:
    """The whole-image path's peak resident memory for a photo of `pixels` (padded) pixels, whole process."""
    per_pixel = WHOLE_IMAGE_FIXED_BYTES_PER_PIXEL + WHOLE_IMAGE_ACTIVATION_FACTOR * activation_bytes_per_pixel(arch)
    return int(PROCESS_BYTES + pixels * per_pixel)


def band_bytes_within(max_memory: int, pixels: int, size: tuple[int, int]) -> int:
    """The largest band tensor the out-of-core path may use within `max_memory`, or StylerError when even the
    smallest bands do not fit beside the photo and its result."""
    left = max_memory - PROCESS_BYTES - OUT_OF_CORE_BYTES_PER_PIXEL * pixels
    band = min(MAX_BAND_BYTES, left // BAND_TENSORS)
    if band < MIN_BAND_BYTES:
        least = PROCESS_BYTES + OUT_OF_CORE_BYTES_PER_PIXEL * pixels + BAND_TENSORS * MIN_BAND_BYTES
        raise StylerError(
            f"{size[0]}x{size[1]} needs at least {least / GiB:.1f} GiB even out of core, more than --max-memory "
            f"{max_memory / GiB:.2g} GiB; raise --max-memory or shrink the photo with --max-size"
        )
    return band


# ----------------------------------------------------------------------------------------------- statistics


class RunningMoments:
    """Per-channel mean and variance of a layer's output over the whole image, merged band by band in float64 with
    Chan et al.'s parallel update, so a 100-megapixel sum neither loses precision nor cancels."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None  # sum of squared deviations from the mean

    def add(self, x: Tensor) -> None:
        """Merge in (1, C, h, w)."""
        mean, _, var = instancenorm.instance_moments(x.float())
        count = x.shape[-2] * x.shape[-1]
        mean, m2 = mean[0].double(), var[0].double() * count
        if self.mean is None or self.m2 is None:
            self.count, self.mean, self.m2 = count, mean, m2
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean += delta * (count / total)
        self.m2 += m2 + delta.square() * (self.count * count / total)
        self.count = total

    def mean_and_var(self) -> tuple[Tensor, Tensor]:
        assert self.mean is not None and self.m2 is not None, "no band was added"
        return self.mean, self.m2 / self.count


class WholeImageStatistics:
    """Each norm layer's statistics over the whole image (an inference.NormStatistics), filled pass by pass."""

    def __init__(self) -> None:
        self.moments: dict[Hashable, RunningMoments] = {}

    def of(self, layer: Hashable, x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
        mean, var = self.moments[layer].mean_and_var()
        inv_std = (var + eps).rsqrt()

        def per_instance(values: Tensor) -> Tensor:
            return values.to(x.device, torch.float32).expand(x.shape[0], -1)

        return per_instance(mean), per_instance(inv_std)


# ----------------------------------------------------------------------------------------------- row sources


class Rows(Protocol):
    """An activation (1, C, height, width) that can be read a band of rows at a time."""

    @property
    def channels(self) -> int: ...

    @property
    def height(self) -> int: ...

    @property
    def width(self) -> int: ...

    def rows(self, first: int, last: int) -> Tensor:
        """Rows first..last-1 as a (1, C, last-first, width) float32 channels_last tensor."""
        ...


class PhotoRows:
    """The photo, mirror-padded at the bottom and right to (height, width) as stylizer.mirror_pad_to does (one
    reflection: the padding is less than the photo's side), as float32 0..255, read from the decoded image."""

    channels = 3

    def __init__(self, image: Image.Image, height: int, width: int, device: torch.device) -> None:
        if height - image.height >= image.height or width - image.width >= image.width:
            raise ValueError(f"{image.size} is too small to mirror-pad once to {width}x{height}")
        self.image, self.height, self.width, self.device = image, height, width, device

    def rows(self, first: int, last: int) -> Tensor:
        index = torch.arange(first, last)
        index = torch.where(index >= self.image.height, 2 * (self.image.height - 1) - index, index)
        top, bottom = int(index.min()), int(index.max()) + 1
        pixels = torch.from_numpy(np.array(self.image.crop((0, top, self.image.width, bottom))))[index - top]
        x = pixels.permute(2, 0, 1)[None].to(self.device, torch.float32)
        if self.width > self.image.width:
            x = F.pad(x, (0, self.width - self.image.width, 0, 0), mode="reflect")
        return x.contiguous(memory_format=torch.channels_last)


class Spill:
    """An activation (1, C, height, width) kept in a temporary file as (height, width, C) rows.

    The file is created unlinked (tempfile.TemporaryFile: O_TMPFILE, or unlinked at once), so it has no name to
    clean up: closing it, or the process ending in any way, frees its space. Rows are read and written with
    pread/pwrite into band-sized buffers, so only page cache, never the process's memory, holds the rest."""

    def __init__(self, folder: Path | None, channels: int, height: int, width: int, dtype: torch.dtype) -> None:
        self.channels, self.height, self.width, self.dtype = channels, height, width, dtype
        self.row_bytes = width * channels * dtype.itemsize
        self.file = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 (open across passes; OutOfCore closes it)

    def write(self, first: int, x: Tensor) -> None:
        """Rows first.. of the file from x (1, C, h, width)."""
        data = x.detach().permute(0, 2, 3, 1).to("cpu", self.dtype).contiguous().numpy()
        view, offset = data.data.cast("B"), first * self.row_bytes
        while view:
            written = os.pwrite(self.file.fileno(), view, offset)
            view, offset = view[written:], offset + written

    def rows(self, first: int, last: int) -> Tensor:
        buffer = torch.empty((1, last - first, self.width, self.channels), dtype=self.dtype)
        view, offset = buffer.numpy().data.cast("B"), first * self.row_bytes
        while view:
            read = os.preadv(self.file.fileno(), [view], offset)
            if read == 0:
                raise OSError(errno.EIO, f"the spill file ended at row {offset // self.row_bytes}")
            view, offset = view[read:], offset + read
        return buffer.permute(0, 3, 1, 2).float()  # channels_last, as the network's tensors

    def close(self) -> None:
        self.file.close()


@dataclass
class Normalized:
    """A spilled convolution output as the next layer sees it: normalized with the whole image's statistics (when
    `norm` is set), then ReLU, then plus `residual`."""

    spill: Spill
    norm: nn.Module | None
    relu: bool
    statistics: WholeImageStatistics
    style: Tensor | None
    device: torch.device  # the network's
    residual: Rows | None = None

    @property
    def channels(self) -> int:
        return self.spill.channels

    @property
    def height(self) -> int:
        return self.spill.height

    @property
    def width(self) -> int:
        return self.spill.width

    def rows(self, first: int, last: int) -> Tensor:
        x = self.spill.rows(first, last).to(self.device)
        if self.norm is not None:
            with statistics_in_use(self.statistics):
                x = normalize(self.norm, x, self.style, self.relu)
        if self.residual is not None:
            x.add_(self.residual.rows(first, last))
        return x


# ----------------------------------------------------------------------------------------------- the passes


class OutOfCore:
    """One photo through a TransformerNet pass by pass; see the module's docstring."""

    def __init__(
        self,
        network: TransformerNet,
        style: Tensor | None,
        band_bytes: int,
        spill_folder: Path | None = None,
        band_rows: int | None = None,
        spill_dtype: torch.dtype = torch.float32,
    ) -> None:
        self.network, self.style, self.band_bytes, self.band_rows = network, style, band_bytes, band_rows
        self.spill_folder, self.spill_dtype = spill_folder, spill_dtype
        self.device = next(network.parameters()).device
        self.statistics = WholeImageStatistics()
        self.spills: list[Spill] = []
        passes = 3 + 3 * network.arch.residual_blocks + 3  # a residual block: two convolutions and its sum
        # On a terminal only (disable=None), as stylize's own bar: pipes and logs get clean lines.
        self.bar = tqdm(total=passes, unit="pass", file=sys.stderr, disable=None, leave=False, desc="out of core")

    @torch.inference_mode()
    def __call__(
        self,
        image: Image.Image,
        height: int,
        width: int,
        finish: Callable[[Tensor, int], Tensor],
        result: Image.Image | None = None,
    ) -> Image.Image:
        """The stylized image of `image` mirror-padded to (height, width), cropped back to image's size; finish(band,
        first row) turns a band of the network's output (cropped, clamped to 0..255) into the band's final pixels.
        result: an RGB image of image's size to write the result into (may be `image` itself: the last pass reads
        the photo only through finish, each band before it is written); None: a new one."""
        net = self.network
        try:
            self.check_free_space(self.peak_spill_bytes(height, width))
            x: Rows = self.through(net.conv1, PhotoRows(image, height, width, self.device), net.in1)
            x = self.through(net.conv2, x, net.in2)
            x = self.through(net.conv3, x, net.in3)
            for block in net.residual_blocks:
                y = self.through(block.conv1, x, block.in1, keep_source=True)
                y = self.through(block.conv2, y, block.in2, relu=False)
                x = self.add_in_place(y, x)
            x = self.through(net.deconv1, x, net.in4)
            x = self.through(net.deconv2, x, net.in5)
            return self.last(net.deconv3, x, result or Image.new("RGB", image.size), finish)
        except OSError as error:
            raise StylerError(f"cannot spill activations to disk ({os_error_text(error)})") from None
        finally:
            self.bar.close()
            for spill in self.spills:
                spill.close()

    def bands(self, layer: ConvLayer, source: Rows) -> tuple[ConvRows, int]:
        geometry = ConvRows(layer, source.height, source.width)
        if self.band_rows:
            return geometry, self.band_rows
        row = geometry.bytes_per_row(source.channels, layer.conv2d.out_channels, 4)
        return geometry, max(1, self.band_bytes // row)

    def convolve(self, layer: ConvLayer, source: Rows, keep: Callable[[int, Tensor], None]) -> None:
        """keep(first output row, band) for each band of layer's output over the whole image."""
        geometry, band = self.bands(layer, source)
        steps = -(-geometry.out_rows // band)
        for first, last in geometry.bands(band):
            rows = geometry.rows(first, last)
            top = int(rows.min())
            x = source.rows(top, int(rows.max()) + 1)
            keep(first, conv_band(layer, x, rows - top, geometry.cols))
            self.bar.update(1 / steps)
        self.bar.n = round(self.bar.n)  # whole passes, without the fractions' rounding

    def spill(self, channels: int, height: int, width: int) -> Spill:
        spill = Spill(self.spill_folder, channels, height, width, self.spill_dtype)
        self.spills.append(spill)
        return spill

    def normalized(self, spill: Spill, norm: nn.Module | None, relu: bool, residual: Rows | None = None) -> Normalized:
        return Normalized(spill, norm, relu, self.statistics, self.style, self.device, residual)

    def release(self, source: Rows) -> None:
        """Close the spill behind `source`, freeing its disk space: no pass reads it any more."""
        if isinstance(source, Normalized):
            source.spill.close()

    def through(
        self, layer: ConvLayer, source: Rows, norm: nn.Module, relu: bool = True, keep_source: bool = False
    ) -> Normalized:
        """layer over the whole of `source`, its output spilled and its statistics for `norm` gathered; source's
        spill is closed after, unless a residual sum still needs it (keep_source)."""
        geometry = ConvRows(layer, source.height, source.width)
        spill = self.spill(layer.conv2d.out_channels, geometry.out_rows, geometry.out_cols)
        moments = self.statistics.moments[norm] = RunningMoments()

        def keep(first: int, y: Tensor) -> None:
            spill.write(first, y)
            moments.add(y)

        self.convolve(layer, source, keep)
        if not keep_source:
            self.release(source)
        return self.normalized(spill, norm, relu)

    def add_in_place(self, y: Normalized, x: Rows) -> Normalized:
        """A residual block's output, norm(y) + x, written over y's spill: the next block's input as a plain spill,
        so that no chain of residual sums is read again behind it."""
        summed = self.normalized(y.spill, y.norm, relu=False, residual=x)
        band = self.band_rows or max(1, self.band_bytes // (y.spill.row_bytes * 4 // y.spill.dtype.itemsize))
        for first in range(0, y.height, band):
            last = min(y.height, first + band)
            y.spill.write(first, summed.rows(first, last))
        self.release(x)
        self.bar.update(1)
        return self.normalized(y.spill, None, relu=False)

    def last(
        self, layer: ConvLayer, source: Rows, result: Image.Image, finish: Callable[[Tensor, int], Tensor]
    ) -> Image.Image:
        """The last convolution, each band cropped to the photo, finished and pasted into the result."""
        width, height = result.size

        def paste(first: int, y: Tensor) -> None:
            if first >= height:
                return
            band = finish(y[:, :, : height - first, :width].float().clamp(0, 255), first)
            pixels = band[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
            result.paste(Image.fromarray(np.ascontiguousarray(pixels), "RGB"), (0, first))

        self.convolve(layer, source, paste)
        self.release(source)
        return result

    def peak_spill_bytes(self, height: int, width: int) -> int:
        """The most spill bytes on disk at once: a layer's input and output (at a residual sum, its two inputs)."""
        arch, itemsize = self.network.arch, self.spill_dtype.itemsize
        c1, c2, c3 = arch.channels
        full = height * width // arch.stem_stride**2
        sizes = [c1 * full, c2 * full // 4, c3 * full // 16]
        pairs = [sizes[0] + sizes[1], sizes[1] + sizes[2], 3 * sizes[2]]
        return itemsize * max(pairs)

    def check_free_space(self, needed: int) -> None:
        folder = self.spill_folder or Path(tempfile.gettempdir())
        free = shutil.disk_usage(folder).free
        if needed > free:
            raise StylerError(
                f"stylizing out of core needs about {needed / GiB:.1f} GiB of disk space in {folder} for its "
                f"temporary files, and {free / GiB:.1f} GiB is free"
            )
