"""The transformer network: pytorch/examples names and function, architecture options, multi-style conditioning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from styler.errors import StylerError
from styler.model.architecture import ARCHITECTURES, Architecture, architecture
from styler.model.network import TransformerNet


def fast_neural_style_shapes() -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of pytorch/examples fast_neural_style's TransformerNet (its state_dict today)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name: str, cin: int, cout: int, kernel: int) -> None:
        shapes[f"{name}.conv2d.weight"] = (cout, cin, kernel, kernel)
        shapes[f"{name}.conv2d.bias"] = (cout,)

    def norm(name: str, channels: int) -> None:
        shapes[f"{name}.weight"] = (channels,)
        shapes[f"{name}.bias"] = (channels,)

    conv("conv1", 3, 32, 9), norm("in1", 32)
    conv("conv2", 32, 64, 3), norm("in2", 64)
    conv("conv3", 64, 128, 3), norm("in3", 128)
    for block in range(1, 6):
        conv(f"res{block}.conv1", 128, 128, 3), norm(f"res{block}.in1", 128)
        conv(f"res{block}.conv2", 128, 128, 3), norm(f"res{block}.in2", 128)
    conv("deconv1", 128, 64, 3), norm("in4", 64)
    conv("deconv2", 64, 32, 3), norm("in5", 32)
    conv("deconv3", 32, 3, 9)
    return shapes


def random_state_dict(
    shapes: dict[str, tuple[int, ...]], seed: int = 0, dtype=torch.float64
) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in shapes.items():
        fan_in = shape[1] * shape[2] * shape[3] if len(shape) == 4 else 1
        scale = fan_in**-0.5 if len(shape) == 4 else 0.2
        centre = 1.0 if name.endswith("weight") and len(shape) == 1 else 0.0  # norm scales near 1
        state[name] = (centre + scale * torch.randn(shape, generator=generator)).to(dtype)
    return state


def reference_forward(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """pytorch/examples' TransformerNet.forward written with torch.nn.functional only (no styler code)."""

    def conv(name: str, y: torch.Tensor, stride: int = 1, upsample: int = 1) -> torch.Tensor:
        weight = state[f"{name}.conv2d.weight"]
        if upsample > 1:
            y = F.interpolate(y, scale_factor=upsample, mode="nearest")
        y = F.pad(y, [weight.shape[-1] // 2] * 4, mode="reflect")
        return F.conv2d(y, weight, state[f"{name}.conv2d.bias"], stride)

    def norm(name: str, y: torch.Tensor) -> torch.Tensor:
        return F.instance_norm(y, weight=state[f"{name}.weight"], bias=state[f"{name}.bias"], eps=1e-5)

    y = F.relu(norm("in1", conv("conv1", x)))
    y = F.relu(norm("in2", conv("conv2", y, stride=2)))
    y = F.relu(norm("in3", conv("conv3", y, stride=2)))
    for block in range(1, 6):
        residual = F.relu(norm(f"res{block}.in1", conv(f"res{block}.conv1", y)))
        y = y + norm(f"res{block}.in2", conv(f"res{block}.conv2", residual))
    y = F.relu(norm("in4", conv("deconv1", y, upsample=2)))
    y = F.relu(norm("in5", conv("deconv2", y, upsample=2)))
    return conv("deconv3", y)


def test_johnson_network_has_the_fast_neural_style_names_and_shapes():
    network = TransformerNet(ARCHITECTURES["johnson"])
    assert {k: tuple(v.shape) for k, v in network.state_dict().items()} == fast_neural_style_shapes()
    assert sum(p.numel() for p in network.parameters()) == 1_679_235  # the paper's "1.68M"


def test_forward_computes_what_fast_neural_style_computes():
    state = random_state_dict(fast_neural_style_shapes())
    network = TransformerNet().double().eval()
    network.load_state_dict(state)
    x = torch.rand(2, 3, 28, 40, dtype=torch.float64) * 255
    with torch.inference_mode():
        torch.testing.assert_close(network(x), reference_forward(state, x), rtol=1e-9, atol=1e-8)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
@pytest.mark.parametrize("size", [(16, 16), (32, 48), (48, 16)])
def test_output_has_the_input_size_for_multiples_of_the_size_multiple(name, size):
    network = TransformerNet(architecture(name)).eval()
    height, width = (
        max(s, network.arch.min_size) // network.arch.size_multiple * network.arch.size_multiple for s in size
    )
    with torch.inference_mode():
        assert network(torch.rand(1, 3, height, width) * 255).shape == (1, 3, height, width)


def test_channels_last_gives_the_same_result():
    network = TransformerNet(architecture("lite")).eval()
    x = torch.rand(1, 3, 32, 48) * 255
    with torch.inference_mode():
        expected = network(x)
        network.to(memory_format=torch.channels_last)
        torch.testing.assert_close(
            network(x.contiguous(memory_format=torch.channels_last)), expected, rtol=1e-4, atol=1e-3
        )


def test_lite_is_smaller_than_the_peer_network():
    lite = ARCHITECTURES["lite"]
    assert sum(p.numel() for p in TransformerNet(lite).parameters()) < 166_000
    assert lite.channels == (8, 16, 32) and lite.stem_stride == 1 and lite.size_multiple == 4


def test_width_and_block_count_shape_the_network():
    network = TransformerNet(Architecture(width=0.5, residual_blocks=2))
    state = network.state_dict()
    assert state["conv1.conv2d.weight"].shape == (16, 3, 9, 9)
    assert state["res2.conv2.conv2d.weight"].shape == (64, 64, 3, 3)
    assert not any(key.startswith("res3.") for key in state)
    assert [block for block in network.residual_blocks] == [network.res1, network.res2]


def test_multi_style_network_picks_each_style_like_a_single_style_network_with_its_parameters():
    torch.manual_seed(0)
    arch = Architecture(width=0.25, residual_blocks=1, num_styles=3)
    multi = TransformerNet(arch).eval()
    with torch.no_grad():
        for name, parameter in multi.named_parameters():
            if parameter.dim() == 2:  # conditional norm parameters: (styles, channels)
                parameter.copy_(torch.randn_like(parameter) * 0.3 + (1.0 if name.endswith("weight") else 0.0))
    x = torch.rand(1, 3, 16, 24) * 255
    single = TransformerNet(Architecture(width=0.25, residual_blocks=1)).eval()
    for style in range(3):
        single.load_state_dict({k: v[style] if v.dim() == 2 else v for k, v in multi.state_dict().items()})
        with torch.inference_mode():
            expected = single(x)
            torch.testing.assert_close(multi(x, torch.tensor([style])), expected, rtol=1e-4, atol=1e-3)
            one_hot = F.one_hot(torch.tensor([style]), 3).float()
            torch.testing.assert_close(multi(x, one_hot), expected, rtol=1e-4, atol=1e-3)


def test_multi_style_network_blends_norm_parameters():
    torch.manual_seed(1)
    multi = TransformerNet(Architecture(width=0.25, residual_blocks=1, num_styles=2)).eval()
    x = torch.rand(1, 3, 16, 16) * 255
    with torch.no_grad():
        multi.in5.weight[1].mul_(3.0)
        first, second, half = (multi(x, torch.tensor([w])) for w in ([1.0, 0.0], [0.0, 1.0], [0.5, 0.5]))
    assert not torch.allclose(first, second)
    assert not torch.allclose(half, first) and not torch.allclose(half, second)


def test_multi_style_network_needs_a_style():
    network = TransformerNet(Architecture(width=0.125, residual_blocks=0, num_styles=2))
    with pytest.raises(ValueError, match="2 styles"):
        network(torch.rand(1, 3, 16, 16))


@pytest.mark.parametrize(
    "values",
    [
        {"width": 0},
        {"width": -1.0},
        {"residual_blocks": -1},
        {"residual_blocks": 2.5},
        {"stem_stride": 3},
        {"num_styles": 0},
    ],
)
def test_bad_architectures_are_user_errors(values):
    with pytest.raises(StylerError, match="bad architecture"):
        Architecture(**values)


def test_architecture_round_trips_through_a_dict_and_rejects_unknown_keys():
    arch = Architecture(width=0.5, residual_blocks=4, stem_stride=2, num_styles=3)
    assert Architecture.from_dict(arch.to_dict()) == arch
    with pytest.raises(StylerError, match="expected a dict"):
        Architecture.from_dict({"width": 1.0, "colour": "blue"})
    with pytest.raises(StylerError, match="unknown architecture"):
        architecture("huge")


def _spread_random_network(arch: Architecture) -> TransformerNet:
    """A random network with distinct per-style parameters and outputs over 0..255, like tests/conftest.py's models."""
    torch.manual_seed(arch.num_styles)
    network = TransformerNet(arch).eval().to(memory_format=torch.channels_last)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
        network.deconv3.conv2d.weight.mul_(40.0)
        network.deconv3.conv2d.bias.fill_(128.0)
    return network


@pytest.mark.parametrize(
    "arch",
    [architecture("johnson"), architecture("lite"), architecture("lite", num_styles=3)],
    ids=["johnson", "lite", "lite-3-styles"],
)
@pytest.mark.parametrize(
    ("dtype", "band_bytes", "tolerance"),
    [
        pytest.param(torch.float32, None, 1e-3, id="float32-whole"),  # what `styler stylize` runs at this size
        # johnson's deconv2 in two bands; bands of a few rows make oneDNN pick other float32 kernels, whose results
        # are 2e-3 apart at this size: as far as the float32 network is from float64
        pytest.param(torch.float32, 2**20, 1e-3, id="float32-bands"),
        pytest.param(torch.float64, 4096, 1e-9, id="float64-bands-of-a-few-rows"),  # exact up to rounding
    ],
)
def test_inference_path_computes_what_the_autograd_path_computes(arch, dtype, band_bytes, tolerance, monkeypatch):
    """Without autograd the network normalizes, rectifies and adds in place and gathers each conv's padded input,
    in bands of rows for big layers. The 70x53 photo is mirror-padded as `styler stylize` does; outputs span 0..255."""
    import styler.model.inference
    from styler.model.stylizer import mirror_pad_to

    if band_bytes is not None:
        monkeypatch.setattr(styler.model.inference, "WHOLE_BYTES", 0)
        monkeypatch.setattr(styler.model.inference, "BAND_BYTES", band_bytes)
    network = _spread_random_network(arch).to(dtype)
    multiple = arch.size_multiple
    photo = torch.rand(1, 3, 53, 70, generator=torch.Generator().manual_seed(0), dtype=dtype) * 255
    x = mirror_pad_to(photo, -(-53 // multiple) * multiple, -(-70 // multiple) * multiple)
    x = x.contiguous(memory_format=torch.channels_last)
    style = None if arch.num_styles == 1 else torch.tensor([[0.5, 0.2, 0.3]], dtype=dtype)
    expected = network(x, style)
    assert expected.requires_grad and expected.std() > 20  # the autograd path
    untouched = x.clone()
    with torch.inference_mode():
        got = network(x, style)
    assert torch.equal(x, untouched)  # the in-place work touches only the network's own intermediates
    assert (got - expected.detach()).abs().max() <= tolerance
