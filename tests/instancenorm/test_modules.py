"""The nn modules: drop-in equivalence with torch.nn, conditional instance norm, AdaIN."""

from __future__ import annotations

import warnings

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


def _run(module: nn.Module, x: torch.Tensor):
    """("ok", output, state) or (exception type, message); with the warnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = ("ok", module(x), {k: v.clone() for k, v in module.state_dict().items()})
        except Exception as error:  # any exception: the exception itself is what is compared
            result = (type(error), str(error))
    return result, [str(w.message) for w in caught]


# (constructor kwargs, input shape, training): where torch.nn's modules check their input, raise, warn, or give NaN.
EDGE_CASES = [
    ({"num_features": 3, "affine": True}, (2, 4, 5, 5), True),  # wrong C with affine: ValueError
    ({"num_features": 3}, (2, 4, 5, 5), True),  # wrong C without affine: a warning, then normalized
    ({"num_features": 3, "track_running_stats": True}, (2, 1, 5, 5), True),  # C = 1 must not fill every running entry
    ({"num_features": 3, "track_running_stats": True}, (2, 1, 5, 5), False),
    ({"num_features": 3, "track_running_stats": True, "affine": True}, (2, 4, 5, 5), False),
    ({"num_features": 3}, (2, 3, 1, 1), True),  # one spatial element in training: ValueError
    ({"num_features": 3}, (2, 3, 1, 1), False),  # ... and in eval without running statistics
    ({"num_features": 3, "track_running_stats": True}, (2, 3, 1, 1), False),  # eval with them: fine
    ({"num_features": 3, "track_running_stats": True}, (0, 3, 5, 5), True),  # empty batch: running stats become NaN
    ({"num_features": 3, "track_running_stats": True}, (0, 3, 5, 5), False),
    # (Not compared: an empty batch with affine=True, where torch 2.x raises IndexError from inside
    # torch.instance_norm; ours returns the empty output, as the functional form does.)
    ({"num_features": 3, "affine": True}, (3, 5, 5), True),  # unbatched
    ({"num_features": 3, "affine": True}, (4, 5, 5), True),  # unbatched, wrong C
]


@pytest.mark.parametrize(("kwargs", "shape", "training"), EDGE_CASES)
@pytest.mark.parametrize("dims", [1, 2])
def test_edge_cases_behave_as_torch(kwargs, shape, training, dims):
    """Same exception type and message, same warnings, or the same output and state, as torch.nn.InstanceNorm1d/2d."""
    if dims == 1:
        shape = shape[:-2] + (shape[-2] * shape[-1],)
    x = torch.randn(shape)
    ours_cls, theirs_cls = (
        (instancenorm.InstanceNorm1d, nn.InstanceNorm1d)
        if dims == 1
        else (instancenorm.InstanceNorm2d, nn.InstanceNorm2d)
    )
    ours, theirs = ours_cls(**kwargs).train(training), theirs_cls(**kwargs).train(training)
    (result_ours, warned_ours), (result_theirs, warned_theirs) = _run(ours, x), _run(theirs, x)
    assert warned_ours == warned_theirs
    assert result_ours[0] == result_theirs[0], (result_ours, result_theirs)
    if result_ours[0] != "ok":
        assert result_ours[1] == result_theirs[1]
        return
    torch.testing.assert_close(result_ours[1], result_theirs[1], **TOL)
    for name, value in result_theirs[2].items():
        torch.testing.assert_close(result_ours[2][name], value, **TOL, equal_nan=True, msg=name)


def test_running_var_is_the_variance_itself():
    """A constant channel has running variance exactly (1 - momentum) * 1 (its batch variance is 0, not a rounding
    residue of 1 / inv_std**2 - eps), and a variance far below eps keeps its digits."""
    layer = instancenorm.InstanceNorm2d(2, track_running_stats=True, momentum=1.0)
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    x[:, 0] = 0.37
    x[:, 1] *= 1e-4
    layer(x.float())
    assert layer.running_var[0].item() == 0.0
    expected = x[:, 1].flatten(1).var(dim=1).mean()
    torch.testing.assert_close(layer.running_var[1].double(), expected, rtol=1e-5, atol=0)


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
    torch.testing.assert_close(
        blended, plain(0.7 * layer.weight[0] + 0.3 * layer.weight[2], 0.7 * layer.bias[0] + 0.3 * layer.bias[2])
    )
    # Only the styles that take part in a sample get gradient.
    layer(x, torch.tensor([1, 1])).sum().backward()
    assert layer.bias.grad[1].abs().sum() > 0 and layer.bias.grad[0].abs().sum() == 0


def test_adaptive_instance_norm_transfers_style_statistics():
    torch.manual_seed(0)
    content = torch.randn(2, 3, 16, 16, requires_grad=True)
    style = torch.randn(2, 3, 12, 10) * torch.tensor([2.0, 0.5, 1.0])[:, None, None] + 3
    out = instancenorm.adaptive_instance_norm(content, style)
    torch.testing.assert_close(out.mean(dim=(2, 3)), style.mean(dim=(2, 3)), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        out.std(dim=(2, 3), unbiased=False), style.std(dim=(2, 3), unbiased=False), atol=1e-3, rtol=1e-3
    )
    # One style for the whole batch, given as (mean, std).
    mean, std = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5, 1.0, 2.0])
    out = instancenorm.adaptive_instance_norm(content, (mean, std))
    torch.testing.assert_close(out.mean(dim=(2, 3)), mean.expand(2, 3), atol=1e-4, rtol=1e-4)
    out.sum().backward()
    assert content.grad is not None and content.grad.isfinite().all()
