"""The inference-only rewrites (styler.model.inference): the integer ReLU and max-pool, for_inference."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from styler.arbitrary.network import Decoder, SmallEncoder
from styler.model.inference import InferenceReLU, MaxPoolAfterReLU, for_inference, relu_


def _awkward_values(dtype: torch.dtype) -> torch.Tensor:
    """Every sign, zeros of both signs, infinities, subnormals, the extremes, and plenty of ordinary values."""
    info = torch.finfo(dtype)
    special = [0.0, -0.0, 1.0, -1.0, float("inf"), float("-inf"), info.tiny / 4, -info.tiny / 4, info.max, -info.max]
    return torch.cat([torch.tensor(special), torch.randn(4000, generator=torch.Generator().manual_seed(0)) * 100]).to(
        dtype
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_relu_matches_torch_in_place(dtype):
    x = _awkward_values(dtype).reshape(2, -1)
    expected = torch.relu(x)
    result = relu_(x)
    assert result.data_ptr() == x.data_ptr()
    assert torch.equal(result, expected)
    if dtype.itemsize == 2:  # the integer clamp: -0.0 comes out +0.0 (torch's float32 ReLU keeps -0.0)
        assert not result.signbit().any()


def test_relu_of_a_channels_last_view():
    x = torch.randn(2, 5, 6, 7).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    expected = torch.relu(x)
    assert torch.equal(relu_(x), expected)
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_the_inference_relu_is_torchs_under_autograd():
    x = torch.randn(10, dtype=torch.bfloat16, requires_grad=True)
    y = InferenceReLU()(x)
    y.sum().backward()
    assert torch.equal(x.grad, (x > 0).to(x.dtype))
    with torch.inference_mode():
        z = x.detach().clone()
        assert InferenceReLU()(z).data_ptr() == z.data_ptr()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_arbitrary_decoder_for_inference_decodes_bit_for_bit(dtype):
    torch.manual_seed(1)
    decoder = Decoder(width=0.125, skips=("relu2_1", "relu3_1"))
    for projection in decoder.projections.values():
        nn.init.normal_(projection.weight)  # zero at first: make the skips count
    plain = decoder.to(dtype).eval()
    fast = Decoder(width=0.125, skips=("relu2_1", "relu3_1"))
    fast.load_state_dict(plain.state_dict())
    fast = for_inference(fast.to(dtype))
    sizes = {"relu4_1": (512, 5, 7), "relu3_1": (256, 10, 14), "relu2_1": (128, 20, 28)}
    features = {name: torch.randn(1, *size).relu().to(dtype) for name, size in sizes.items()}
    with torch.inference_mode():
        expected = plain({k: v.clone() for k, v in features.items()})
        result = fast({k: v.clone() for k, v in features.items()})
    assert not any(isinstance(m, nn.ReLU) for m in fast.modules())
    assert torch.equal(result, expected)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(2, 3, 8, 6), (1, 5, 9, 7), (1, 4, 3, 5)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_the_max_pool_after_a_relu_equals_torchs(dtype, shape, layout):
    x = relu_(torch.randn(shape).to(dtype).contiguous(memory_format=layout))
    x[0, 0, 0, :3] = float("inf")
    pool = MaxPoolAfterReLU(nn.MaxPool2d(2))
    with torch.inference_mode():
        result = pool(x)
    assert torch.equal(result, nn.functional.max_pool2d(x, 2))
    assert result.dtype == dtype
    assert result.is_contiguous(memory_format=layout)


def test_the_max_pool_keeps_a_positive_nan():
    x = torch.zeros(1, 1, 2, 2, dtype=torch.bfloat16)
    x[0, 0, 1, 1] = float("nan")
    assert MaxPoolAfterReLU(nn.MaxPool2d(2))(x).isnan().all()


def test_only_a_two_by_two_pool_right_after_a_relu_is_rewritten():
    network = for_inference(
        nn.Sequential(nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(1, 1, 1), nn.MaxPool2d(2), nn.ReLU(), nn.MaxPool2d(3))
    )
    assert [type(layer).__name__ for layer in network] == [
        "InferenceReLU",
        "MaxPoolAfterReLU",
        "Conv2d",
        "MaxPool2d",
        "InferenceReLU",
        "MaxPool2d",
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_small_encoder_for_inference_encodes_bit_for_bit(dtype):
    torch.manual_seed(2)
    plain = SmallEncoder(0.125).to(dtype).eval()
    fast = SmallEncoder(0.125)
    fast.load_state_dict(plain.state_dict())
    fast = for_inference(fast.to(dtype))
    assert sum(isinstance(m, MaxPoolAfterReLU) for m in fast.modules()) == 3
    images = (torch.rand(1, 3, 37, 50) * 255).to(dtype).contiguous(memory_format=torch.channels_last)
    layers = ("relu4_1", "relu2_1", "relu3_1")
    with torch.inference_mode():
        expected, result = plain(images, layers), fast(images, layers)
    for layer in layers:
        assert torch.equal(result[layer], expected[layer])
