"""The nn modules: drop-in equivalence with torch.nn, conditional instance norm, AdaIN."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import instancenorm

TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("track", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_instance_norm_2d_is_a_drop_in(affine, track, channels_last):
    torch.manual_seed(0)
    theirs = nn.InstanceNorm2d(6, affine=affine, track_running_stats=track, momentum=0.3)
    if affine:
        with torch.no_grad():
            theirs.weight.uniform_(0.5, 2)
            theirs.bias.uniform_(-1, 1)
    ours = instancenorm.InstanceNorm2d(6, affine=affine, track_running_stats=track, momentum=0.3)
    ours.load_state_dict(theirs.state_dict())
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert isinstance(ours, nn.InstanceNorm2d)

    for step in range(3):  # training steps update running stats the same way
        x = torch.randn(4, 6, 9, 11) * (step + 1) + step
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y_ours, y_theirs = ours(x), theirs(x)
        torch.testing.assert_close(y_ours, y_theirs, **TOL)
        assert y_ours.is_contiguous(memory_format=torch.channels_last) == channels_last
    for name, value in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[name], value, **TOL, msg=name)

    ours.eval(), theirs.eval()
    x = torch.randn(2, 6, 5, 5)
    torch.testing.assert_close(ours(x), theirs(x), **TOL)


def test_momentum_none_behaves_as_torch():
    theirs = nn.InstanceNorm2d(3, track_running_stats=True, momentum=None)
    ours = instancenorm.InstanceNorm2d(3, track_running_stats=True, momentum=None)
    for _ in range(4):
        x = torch.randn(2, 3, 4, 4) * 3
        ours(x), theirs(x)
    torch.testing.assert_close(ours.running_var, theirs.running_var, **TOL)
    torch.testing.assert_close(ours.running_mean, theirs.running_mean, **TOL)


def test_unbatched_input_and_1d():
    torch.manual_seed(0)
    x2d = torch.randn(5, 7, 8)
    torch.testing.assert_close(instancenorm.InstanceNorm2d(5)(x2d), nn.InstanceNorm2d(5)(x2d), **TOL)
    x1d = torch.randn(3, 5, 20)
    theirs = nn.InstanceNorm1d(5, affine=True)
    with torch.no_grad():
        theirs.weight.uniform_()
    ours = instancenorm.InstanceNorm1d(5, affine=True)
    ours.load_state_dict(theirs.state_dict())
    torch.testing.assert_close(ours(x1d), theirs(x1d), **TOL)
    torch.testing.assert_close(ours(x1d[0]), theirs(x1d[0]), **TOL)
    with pytest.raises(ValueError, match="expected 2D or 3D input"):
        ours(torch.randn(2, 5, 4, 4))


def test_affine_gradients_match_torch():
    torch.manual_seed(0)
    theirs = nn.InstanceNorm2d(4, affine=True)
    ours = instancenorm.InstanceNorm2d(4, affine=True)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(3, 4, 6, 6)
    dy = torch.randn(3, 4, 6, 6)
    ours(x).backward(dy)
    theirs(x).backward(dy)
    torch.testing.assert_close(ours.weight.grad, theirs.weight.grad, **TOL)
    torch.testing.assert_close(ours.bias.grad, theirs.bias.grad, **TOL)


def test_conditional_instance_norm_selects_and_blends_styles():
    torch.manual_seed(0)
    layer = instancenorm.ConditionalInstanceNorm2d(4, num_styles=3)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2)
        layer.bias.uniform_(-1, 1)
    x = torch.randn(2, 4, 5, 5)
    plain = lambda w, b: instancenorm.instance_norm(x, w, b)  # noqa: E731

    torch.testing.assert_close(layer(x, 2), plain(layer.weight[2], layer.bias[2]))
    per_sample = layer(x, torch.tensor([0, 2]))
    torch.testing.assert_close(per_sample[0], plain(layer.weight[0], layer.bias[0])[0])
    torch.testing.assert_close(per_sample[1], plain(layer.weight[2], layer.bias[2])[1])

    mix = torch.tensor([0.7, 0.0, 0.3])
    blended = layer(x, mix)
    torch.testing.assert_close(blended, plain(0.7 * layer.weight[0] + 0.3 * layer.weight[2],
                                              0.7 * layer.bias[0] + 0.3 * layer.bias[2]))
    # Only the styles that take part in a sample get gradient.
    layer(x, torch.tensor([1, 1])).sum().backward()
    assert layer.bias.grad[1].abs().sum() > 0 and layer.bias.grad[0].abs().sum() == 0


def test_adaptive_instance_norm_transfers_style_statistics():
    torch.manual_seed(0)
    content = torch.randn(2, 3, 16, 16, requires_grad=True)
    style = torch.randn(2, 3, 12, 10) * torch.tensor([2.0, 0.5, 1.0])[:, None, None] + 3
    out = instancenorm.adaptive_instance_norm(content, style)
    torch.testing.assert_close(out.mean(dim=(2, 3)), style.mean(dim=(2, 3)), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.std(dim=(2, 3), unbiased=False), style.std(dim=(2, 3), unbiased=False),
                               atol=1e-3, rtol=1e-3)
    # One style for the whole batch, given as (mean, std).
    mean, std = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5, 1.0, 2.0])
    out = instancenorm.adaptive_instance_norm(content, (mean, std))
    torch.testing.assert_close(out.mean(dim=(2, 3)), mean.expand(2, 3), atol=1e-4, rtol=1e-4)
    out.sum().backward()
    assert content.grad is not None and content.grad.isfinite().all()
