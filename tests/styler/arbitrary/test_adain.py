"""AdaIN on the instancenorm kernels against its float64 plain-torch reference: forward, gradient, statistics, and
the blend of several paintings."""

from __future__ import annotations

import pytest
import torch

from styler.arbitrary.adain import StyleStatistics, adain, blend, reference_adain, style_statistics


def features(shape: tuple[int, ...], seed: int, dtype=torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    # ReLU-like features: non-negative, with a per-channel offset and scale so the statistics differ by channel.
    scale = torch.rand(shape[1], 1, 1, generator=generator) * 3
    offset = torch.rand(shape[1], 1, 1, generator=generator)
    return (torch.randn(shape, generator=generator) * scale + offset).relu().to(dtype)


@pytest.mark.parametrize("shape", [(1, 8, 5, 7), (3, 16, 4, 4), (2, 4, 1, 9)])
@pytest.mark.parametrize("strength", [1.0, 0.4, 0.0])
@pytest.mark.parametrize("channels_last", [False, True])
def test_forward_matches_the_float64_reference(shape, strength, channels_last):
    content = features(shape, seed=1)
    painting = features((1, shape[1], 6, 5), seed=2)
    if channels_last:
        content = content.contiguous(memory_format=torch.channels_last)
    result = adain(content, style_statistics(painting), strength)
    expected = reference_adain(content, painting.expand(shape[0], -1, -1, -1), strength)
    assert result.shape == content.shape
    torch.testing.assert_close(result.double(), expected, rtol=1e-4, atol=1e-4)


def test_the_result_has_the_paintings_statistics():
    # Every channel of the photo varies: a constant one has no spread to scale to the painting's.
    content = torch.randn((2, 6, 9, 9), generator=torch.Generator().manual_seed(3)) + 2
    painting = features((1, 6, 12, 10), seed=4)
    result = adain(content, style_statistics(painting))
    var, mean = torch.var_mean(result, dim=(2, 3), unbiased=False)
    target_var, target_mean = torch.var_mean(painting, dim=(2, 3), unbiased=False)
    torch.testing.assert_close(mean, target_mean.expand(2, -1), rtol=1e-4, atol=1e-4)
    # Equal up to eps, which both the photo's and the painting's std carry.
    torch.testing.assert_close(var, target_var.expand(2, -1), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_gradient_matches_the_reference(strength):
    content = features((2, 5, 4, 6), seed=5, dtype=torch.float64).requires_grad_()
    painting = features((2, 5, 7, 3), seed=6, dtype=torch.float64)
    upstream = torch.randn(content.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    (grad,) = torch.autograd.grad((adain(content, style_statistics(painting), strength) * upstream).sum(), content)
    reference = content.detach().clone().requires_grad_()
    (expected,) = torch.autograd.grad((reference_adain(reference, painting, strength) * upstream).sum(), reference)
    torch.testing.assert_close(grad, expected, rtol=1e-9, atol=1e-9)


def test_gradcheck_in_the_content_and_the_statistics():
    content = features((1, 3, 3, 4), seed=8, dtype=torch.float64).requires_grad_()
    mean = torch.rand(1, 3, dtype=torch.float64, requires_grad=True)
    std = (torch.rand(1, 3, dtype=torch.float64) + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, m, s: adain(x, StyleStatistics(m, s)), (content, mean, std))


def test_statistics_are_the_moments_of_each_channel():
    painting = features((2, 7, 5, 6), seed=9)
    statistics = style_statistics(painting, eps=1e-5)
    var, mean = torch.var_mean(painting.double(), dim=(2, 3), unbiased=False)
    torch.testing.assert_close(statistics.mean.double(), mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(statistics.std.double(), (var + 1e-5).sqrt(), rtol=1e-5, atol=1e-6)


def test_a_blend_of_statistics_is_the_same_blend_of_adain_outputs():
    content = features((1, 6, 5, 5), seed=10)
    first, second = style_statistics(features((1, 6, 8, 8), seed=11)), style_statistics(features((1, 6, 8, 8), 12))
    mixed = adain(content, blend([first, second], [3.0, 1.0]))
    expected = 0.75 * adain(content, first) + 0.25 * adain(content, second)
    torch.testing.assert_close(mixed, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(adain(content, blend([first, second], [1.0, 0.0])), adain(content, first))
