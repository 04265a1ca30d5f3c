"""How the network runs outside autograd: in place, convolutions band by band, and with borrowed statistics.

The network's forward (network.py) reads like the paper; the memory-saving paths it takes when no backward pass
will follow live here, with the hook through which a video supplies the statistics its norms normalize with.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Hashable, Iterator
from contextvars import ContextVar
from typing import Protocol, TypeVar, runtime_checkable

import torch
from torch import Tensor, nn

import instancenorm


class NormStatistics(Protocol):
    """Statistics an instance-norm layer normalizes with instead of its input's own (video.steadiness implements
    it): for `layer` and its input x (N, C, H, W), the (mean, inv_std) to use, each (N, C). `layer` is whatever
    names the place for the whole video: our norm modules, or a name (arbitrary-style AdaIN's encoder layers)."""

    def of(self, layer: Hashable, x: Tensor, eps: float) -> tuple[Tensor, Tensor]: ...


@runtime_checkable
class StyleNorm(Protocol):
    """Our instance norms (network.InstanceNorm, instancenorm.ConditionalInstanceNorm2d): their affine parameters
    for a style can be applied by the fused kernels. A norm module other than these (the benchmarks swap torch's in)
    runs as an ordinary module."""

    eps: float

    def style_affine(self, style: Tensor | None, batch: int) -> tuple[Tensor, Tensor]: ...


class ConvLayerLike(Protocol):
    conv2d: nn.Conv2d
    upsample_factor: int


_ACTIVE_STATISTICS: ContextVar[NormStatistics | None] = ContextVar("active_statistics", default=None)


@contextlib.contextmanager
def statistics_in_use(statistics: NormStatistics) -> Iterator[None]:
    """Inside this block our norms normalize with `statistics` (a ContextVar: other threads are not affected)."""
    token = _ACTIVE_STATISTICS.set(statistics)
    try:
        yield
    finally:
        _ACTIVE_STATISTICS.reset(token)


def active_statistics() -> NormStatistics | None:
    """The statistics set by the innermost statistics_in_use block, None outside one: for normalizations other than
    our norm modules (arbitrary-style AdaIN) that follow them too."""
    return _ACTIVE_STATISTICS.get()


def inference_in_place() -> bool:
    """Whether the network may work in place: true outside autograd, where no op's input is kept for a backward pass.

    Then a conv output that no one else holds may be overwritten: instance norm and ReLU write into it (normalize), a
    residual block adds its input into it (ResidualBlock), and a convolution gathers its upsampled, reflection-padded
    input in one pass, band by band for large layers (ConvLayer), instead of materializing each intermediate. With
    autograd every op is the ordinary out-of-place one, as the backward pass needs their inputs.
    """
    return not torch.is_grad_enabled()


def normalize(norm: nn.Module, x: Tensor, style: Tensor | None, relu: bool = True) -> Tensor:
    """norm(x, style), then ReLU; in place on x where inference_in_place() allows, which saves two activation-sized
    allocations per layer (a norm module other than ours, as the benchmarks swap in, runs out of place). While a
    video runs with steady statistics (statistics_in_use), our norms use those instead of x's own."""
    in_place = inference_in_place()
    steady = active_statistics()
    # A conditional norm always gets a style: TransformerNet.forward refuses a multi-style call without one.
    if isinstance(norm, StyleNorm) and steady is not None:
        mean, inv_std = steady.of(norm, x, norm.eps)
        apply = instancenorm.normalize_with_stats_ if in_place else instancenorm.normalize_with_stats
        y = apply(x, mean, inv_std, *norm.style_affine(style, x.shape[0]))
    elif isinstance(norm, StyleNorm) and in_place:
        y = instancenorm.instance_norm_(x, *norm.style_affine(style, x.shape[0]), norm.eps)
    else:
        y = norm(x, style)
    if not relu:
        return y
    return relu_(y) if in_place else torch.relu(y)


def relu_(x: Tensor) -> Tensor:
    """x.relu_(), for 16-bit floats on the CPU as an integer clamp: torch's bfloat16 ReLU converts every value to
    float32 and back (measured on one core, 64x341x512: 3.7 ms, against 0.8 ms for the clamp; with the max-pool
    below, an arbitrary-style photo in bfloat16 went from 128 to 84 ms on one core, 50 to 40 ms on two). A bfloat16
    or float16 read as int16 is negative exactly when its sign bit is set, so clamping the integers at 0 zeroes the
    negative values and keeps the rest bit for bit; -0.0 becomes +0.0 and a NaN whose sign bit is set becomes 0
    (images hold no NaN; the kernels' NaN rule is theirs, not this)."""
    if _as_int16(x):
        x.view(torch.int16).clamp_min_(0)
        return x
    return x.relu_()


def _as_int16(x: Tensor) -> bool:
    """Whether x is computed on as 16-bit integers (relu_, MaxPoolAfterReLU): 16-bit floats on the CPU, outside
    autograd."""
    return x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16) and not x.requires_grad


class InferenceReLU(nn.Module):
    """nn.ReLU for a network that runs outside autograd: in place through relu_, safe on a conv output no one else
    holds. Under autograd it is torch's ReLU."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x) if torch.is_grad_enabled() and x.requires_grad else relu_(x)


class MaxPoolAfterReLU(nn.Module):
    """nn.MaxPool2d(2) of a ReLU's output, for a network that runs outside autograd: values that are never negative
    order as their bit patterns read as integers, so for 16-bit floats on the CPU the pool is three integer maxima
    of each 2x2 block's pixels (measured on one core, 32x342x512: 1.1 ms against 3.9 ms for torch's bfloat16
    max_pool2d, which also finds the indices). After relu_, no value is negative, not even -0.0 or a NaN. Otherwise
    it is the pool."""

    def __init__(self, pool: nn.MaxPool2d) -> None:
        super().__init__()
        self.pool = pool

    def forward(self, x: Tensor) -> Tensor:
        if not _as_int16(x):
            return self.pool(x)
        height, width = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2  # an odd last row or column is dropped, as pooled
        pixels = x[..., :height, :width].view(torch.int16)
        top = torch.maximum(pixels[..., 0::2, 0::2], pixels[..., 0::2, 1::2])
        bottom = torch.maximum(pixels[..., 1::2, 0::2], pixels[..., 1::2, 1::2])
        return torch.maximum(top, bottom, out=top).view(x.dtype)


NetworkT = TypeVar("NetworkT", bound=nn.Module)


def _pools_two_by_two(pool: nn.MaxPool2d) -> bool:
    return (
        all(value in (2, (2, 2)) for value in (pool.kernel_size, pool.stride))
        and pool.padding in (0, (0, 0))
        and pool.dilation in (1, (1, 1))
        and not pool.ceil_mode
    )


def for_inference(network: NetworkT) -> NetworkT:
    """`network` rewritten, in place and with its weights untouched, for running outside autograd only: each nn.ReLU
    an InferenceReLU, each 2x2 max-pool right after a ReLU (VGG16's) a MaxPoolAfterReLU. (Gathering the decoder's
    reflection pads into its convolutions, as banded_conv does, was measured slower on two threads: torch's pad is
    parallel, its index_select is not.)"""
    for name, child in network.named_children():
        if isinstance(child, nn.ReLU):
            setattr(network, name, InferenceReLU())
        else:
            for_inference(child)
    if isinstance(network, nn.Sequential):
        layers = list(network)
        for index, (first, second) in enumerate(itertools.pairwise(layers)):
            if isinstance(first, InferenceReLU) and isinstance(second, nn.MaxPool2d) and _pools_two_by_two(second):
                network[index + 1] = MaxPoolAfterReLU(second)
    return network


# Outside autograd, a convolution whose padded (and upsampled) input or output is bigger than WHOLE_BYTES runs a band
# of output rows at a time, each band's input and output about BAND_BYTES, so the full-size padded copy never exists:
# at 4000x3000 johnson's deconv2 input would be 3.1 GB upsampled and again padded. Smaller layers (all of johnson's at
# 1024x768) run whole, as each band costs a weight reorder and an output copy (docs/reliability.md).
WHOLE_BYTES = 256 * 2**20
BAND_BYTES = 32 * 2**20


def _source_index(start: int, stop: int, pad: int, size: int, upsample: int) -> Tensor:
    """For positions start..stop-1 of a line upsampled to `size` then reflection-padded by `pad`: the input index."""
    index = (torch.arange(start, stop) - pad).abs()
    index = torch.where(index >= size, 2 * (size - 1) - index, index)
    return index // upsample


def _gather(x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """x[:, :, rows][..., cols] in x's memory layout, as one gather of whole pixels (channels_last) or values."""
    n, c, _, width = x.shape
    flat = (rows[:, None] * width + cols).flatten().to(x.device)
    if x.is_contiguous(memory_format=torch.channels_last):
        pixels = x.permute(0, 2, 3, 1).reshape(n, -1, c).index_select(1, flat)
        return pixels.view(n, len(rows), len(cols), c).permute(0, 3, 1, 2)
    return x.reshape(n, c, -1).index_select(2, flat).view(n, c, len(rows), len(cols))


class ConvRows:
    """Which rows of a layer's input each band of its output rows needs: the convolution's input is upsampled, then
    reflection-padded, so output row r needs padded rows r*stride .. r*stride+kernel-1, each one some input row."""

    def __init__(self, layer: ConvLayerLike, height: int, width: int) -> None:
        (self.kernel, _), (self.stride, _) = layer.conv2d.kernel_size, layer.conv2d.stride
        self.pad, self.up = self.kernel // 2, layer.upsample_factor
        self.height, self.width = height * self.up, width * self.up  # upsampled, unpadded
        self.cols = _source_index(0, self.width + 2 * self.pad, self.pad, self.width, self.up)
        self.out_rows = (self.height + 2 * self.pad - self.kernel) // self.stride + 1
        self.out_cols = (len(self.cols) - self.kernel) // self.stride + 1

    def rows(self, first: int, last: int) -> Tensor:
        """The input row of each padded row that output rows first..last-1 read."""
        return _source_index(
            first * self.stride, (last - 1) * self.stride + self.kernel, self.pad, self.height, self.up
        )

    def bytes_per_row(self, in_channels: int, out_channels: int, element_size: int) -> int:
        """Bytes per output row: of its padded input, and of its output (which the conv may reorder, i.e. copy)."""
        return element_size * max(in_channels * len(self.cols) * self.stride, out_channels * self.out_cols)

    def bands(self, band: int) -> Iterator[tuple[int, int]]:
        """(first, last) output rows, `band` rows at a time."""
        for first in range(0, self.out_rows, band):
            yield first, min(self.out_rows, first + band)


def conv_band(layer: ConvLayerLike, x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """layer's convolution of the padded rows `rows` (indices into x's rows) and columns `cols` of x."""
    return layer.conv2d(_gather(x, rows, cols))


def banded_conv(layer: ConvLayerLike, x: Tensor) -> Tensor:
    """layer's convolution of x with its padded input gathered (one pass instead of upsample + pad), for large
    layers band by band: exact, as each output row needs only kernel_size rows of the padded input."""
    geometry = ConvRows(layer, x.shape[-2], x.shape[-1])
    row = geometry.bytes_per_row(x.shape[1], layer.conv2d.out_channels, x.element_size())
    out_rows = geometry.out_rows
    band = out_rows if row * out_rows <= WHOLE_BYTES else max(1, BAND_BYTES // row)
    out = None
    for first, last in geometry.bands(band):
        y = conv_band(layer, x, geometry.rows(first, last), geometry.cols)
        if last - first == out_rows:
            return y
        if out is None:
            channels_last = y.is_contiguous(memory_format=torch.channels_last)
            layout = torch.channels_last if channels_last else torch.contiguous_format
            out = torch.empty(
                (*y.shape[:2], out_rows, y.shape[-1]), dtype=y.dtype, device=y.device, memory_format=layout
            )
        out[:, :, first:last] = y
    assert out is not None  # more than one band, so the first one made it
    return out
