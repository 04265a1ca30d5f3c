"""Loss networks and perceptual losses: Gram matrices, the random-feature recipe, VGG16 weight loading."""

from __future__ import annotations

import math

import pytest
import torch

from styler.errors import StylerError
from styler.training import losses
from styler.training.config import DEFAULT_WEIGHTS, LOSS_NETWORKS, LossWeights
from styler.training.losses import ColorDistribution, PerceptualLoss, gram_matrix, total_variation
from styler.training.random_features import RandomFeatureNetwork
from styler.vgg16 import VGG16Features, imagenet_normalize, load_vgg16_weights


def naive_gram(features: torch.Tensor) -> torch.Tensor:
    n, c, h, w = features.shape
    return torch.einsum("nchw,ndhw->ncd", features, features) / (c * h * w)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_gram_matrix_matches_definition_in_both_layouts(memory_format):
    features = torch.randn(2, 5, 7, 6, dtype=torch.float64).contiguous(memory_format=memory_format)
    torch.testing.assert_close(gram_matrix(features), naive_gram(features).float())


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_gram_matrix_gradient_is_exact(memory_format):
    # The hand-written backward against autograd's own, on a non-symmetric upstream gradient.
    features = torch.randn(2, 4, 5, 3, dtype=torch.float64).contiguous(memory_format=memory_format).requires_grad_()
    upstream = torch.randn(2, 4, 4, dtype=torch.float64)
    ours = torch.autograd.grad(gram_matrix(features), features, upstream)[0]
    reference = torch.autograd.grad(naive_gram(features), features, upstream)[0]
    torch.testing.assert_close(ours.double(), reference, rtol=1e-5, atol=1e-6)
    assert ours.is_contiguous(memory_format=memory_format)


def test_gram_matrix_is_normalized_by_feature_size():
    # The same texture at two sizes has the same Gram matrix.
    tile = torch.rand(1, 3, 4, 4)
    torch.testing.assert_close(gram_matrix(tile.repeat(1, 1, 2, 2)), gram_matrix(tile.repeat(1, 1, 8, 4)))


def test_total_variation_of_flat_and_checkerboard_images():
    assert total_variation(torch.full((1, 3, 8, 8), 77.0)).item() == 0.0
    checkerboard = (torch.arange(8).view(1, 8) + torch.arange(8).view(8, 1)) % 2 * 255.0
    # every neighbour differs by the full range: 1 vertically + 1 horizontally
    assert total_variation(checkerboard.expand(1, 3, 8, 8)).item() == pytest.approx(2.0)


def test_imagenet_normalize_maps_the_mean_colour_to_zero():
    mean_colour = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
    assert imagenet_normalize(mean_colour.expand(1, 3, 2, 2)).abs().max() < 1e-6


# ----------------------------------------------------------------------------------------------- random features


def test_random_filters_follow_the_recipe():
    network, same, other = RandomFeatureNetwork(seed=0), RandomFeatureNetwork(seed=0), RandomFeatureNetwork(seed=1)
    for size in RandomFeatureNetwork.KERNEL_SIZES:
        weight = getattr(network, f"weight{size}")
        assert weight.shape == (128, 3, size, size)
        bound = 1 / math.sqrt(3 * size * size)  # uniform(-1, 1) / sqrt(fan_in)
        assert weight.abs().max() <= bound and weight.abs().max() > 0.95 * bound
        assert torch.equal(weight, getattr(same, f"weight{size}"))
        assert not torch.equal(weight, getattr(other, f"weight{size}"))
    assert len(network.style_layers) == 12 and network.content_layers == ("3x3@1", "5x5@1")


def test_calibration_gives_every_filter_mean_zero_std_one_at_every_scale():
    torch.manual_seed(0)
    images = [torch.rand(1, 3, 64, 80) * 255, torch.rand(1, 3, 96, 72) * 200]
    network = RandomFeatureNetwork()
    network.calibrate(images)
    responses = {name: [] for name in network.style_layers}
    for image in images:
        for _, _, name, response in network._responses(image):
            responses[name].append(response.transpose(0, 1).flatten(1))
    for name, parts in responses.items():
        values = torch.cat(parts, dim=1).double()
        torch.testing.assert_close(values.mean(1), torch.zeros(128, dtype=torch.float64), atol=1e-4, rtol=0, msg=name)
        torch.testing.assert_close(
            values.std(1, correction=0), torch.ones(128, dtype=torch.float64), atol=1e-4, rtol=0, msg=name
        )


def test_random_features_at_three_resolutions():
    features = RandomFeatureNetwork()(torch.rand(2, 3, 64, 64) * 255)
    assert features["3x3@1"].shape == (2, 128, 62, 62)
    assert features["11x11@2"].shape == (2, 128, 22, 22)
    assert features["11x11@4"].shape == (2, 128, 6, 6)
    assert all(value.min() >= 0 for value in features.values())  # after the ReLU
    only = RandomFeatureNetwork()(torch.rand(1, 3, 64, 64) * 255, ("5x5@1",))
    assert list(only) == ["5x5@1"]


# ----------------------------------------------------------------------------------------------- the loss


def test_losses_vanish_when_output_is_the_content_in_its_own_style():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 64, 64) * 255
    network = RandomFeatureNetwork()
    network.calibrate([image])
    terms = PerceptualLoss(network, [image], LossWeights(1.0, 1.0, 0.0))(image, image)
    assert terms.content.item() == 0.0
    assert terms.style.item() < 1e-10


def test_the_vgg16_content_term_is_the_mse_of_relu2_2_features_computed_directly():
    """The paper's content layer, from torchvision's own VGG16 layers and ImageNet normalization, written out here
    rather than taken from VGG16Features, so that a wrong layer index, layer name or normalization there shows."""
    from torchvision.models import vgg16

    torch.manual_seed(0)
    reference = vgg16().features.eval()
    network = VGG16Features(reference[:23].state_dict())
    relu2_2 = reference[:9]  # conv1_1, relu, conv1_2, relu, pool, conv2_1, relu, conv2_2, relu
    mean, std = (
        torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
    )
    content, output = torch.rand(2, 3, 48, 40) * 255, torch.rand(2, 3, 48, 40) * 255
    with torch.no_grad():
        expected = (relu2_2((output / 255 - mean) / std) - relu2_2((content / 255 - mean) / std)).square().mean()
    terms = PerceptualLoss(network, [torch.rand(1, 3, 48, 48) * 255], LossWeights(3.0, 0.0, 0.0))(output, content)
    torch.testing.assert_close(terms.content, 3.0 * expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize("loss_network", [RandomFeatureNetwork, VGG16Features])
def test_batch_loss_is_the_mean_of_per_image_losses(loss_network):
    # What makes a batch split over processes (DDP, gradients averaged) equal to one process with the whole batch.
    torch.manual_seed(0)
    network = loss_network()
    loss = PerceptualLoss(network, [torch.rand(1, 3, 72, 64) * 255], LossWeights(1.0, 1e3, 10.0))
    content, output = torch.rand(4, 3, 64, 64) * 255, torch.rand(4, 3, 64, 64) * 255
    whole = loss(output, content).as_floats()
    halves = [loss(output[part], content[part]).as_floats() for part in (slice(0, 2), slice(2, 4))]
    for name in whole:
        assert whole[name] == pytest.approx((halves[0][name] + halves[1][name]) / 2, rel=1e-5)


def test_relative_losses_do_not_depend_on_feature_magnitude():
    # Dividing by the target's size is what lets one style weight serve every layer and scale.
    torch.manual_seed(0)
    image, style = torch.rand(1, 3, 64, 64) * 255, torch.rand(1, 3, 64, 64) * 255
    network = RandomFeatureNetwork()
    network.calibrate([image, style])
    before = PerceptualLoss(network, [style], LossWeights(1.0, 1.0, 0.0))(image * 0.5, image).as_floats()
    network.gain.mul_(3.0)  # every feature map 3x larger (the offsets are scaled with it below)
    network.offset.mul_(3.0)
    after = PerceptualLoss(network, [style], LossWeights(1.0, 1.0, 0.0))(image * 0.5, image).as_floats()
    assert after["content"] == pytest.approx(before["content"], rel=1e-4)
    assert after["style"] == pytest.approx(before["style"], rel=1e-4)


def test_color_distribution_compares_palettes_not_layouts():
    torch.manual_seed(0)
    painting = torch.rand(1, 3, 40, 50) * 255
    colors = ColorDistribution([painting, torch.full((1, 3, 8, 8), 200.0)])
    shuffled = painting.flatten(2)[..., torch.randperm(40 * 50)].view(1, 3, 40, 50)
    grey = torch.full((2, 3, 32, 32), 128.0)
    assert colors(shuffled, 0).item() < 2e-4  # the same colours elsewhere: only sampling noise
    assert colors(grey, 0).shape == (2,) and colors(grey, 0).min() > 100 * colors(shuffled, 0).item()
    # One flat colour against another: every projection differs by the same amount, (200 - 128)/255 along
    # the direction's sum of components; the mean over random unit directions of (sum u)^2 is 1.
    assert colors(grey, 1).mean().item() == pytest.approx((72 / 255) ** 2, rel=0.5)
    assert colors(torch.full((1, 3, 8, 8), 200.0), 1).item() < 1e-10


def test_color_term_pulls_the_output_towards_the_paintings_colours():
    torch.manual_seed(0)
    painting = torch.cat([torch.full((1, 1, 64, 64), 230.0), torch.full((1, 2, 64, 64), 40.0)], dim=1)  # red
    network = RandomFeatureNetwork()
    loss = PerceptualLoss(network, [painting], LossWeights(0.0, 0.0, 0.0, color=1.0))
    start = torch.rand(2, 3, 64, 64) * 255
    output = start.clone().requires_grad_()
    terms = loss(output, start)
    for _ in range(20):  # gradient descent on the pixels, 5 levels a step
        step = loss(output, start)
        output.grad = None
        step.total.backward()
        with torch.no_grad():
            output -= 5 * output.grad.sign()
    assert loss(output, start).color.item() < 0.5 * terms.color.item()
    assert (output[:, 0] - start[:, 0]).mean() > 20 and (output[:, 1:] - start[:, 1:]).mean() < -20  # redder
    assert loss(output, output.detach(), style_scale=0.0).color.item() == 0.0  # it follows the style ramp
    without = PerceptualLoss(network, [painting], LossWeights(1.0, 1.0, 0.0))(output, output.detach())
    assert without.color is None and "color" not in without.as_floats()
    assert terms.as_floats()["total"] == pytest.approx(sum(v for k, v in terms.as_floats().items() if k != "total"))


def test_default_weights_cover_every_loss_network():
    assert set(DEFAULT_WEIGHTS) == set(LOSS_NETWORKS)
    assert DEFAULT_WEIGHTS["random"].style / DEFAULT_WEIGHTS["random"].content == 1000  # the recipe's ratio
    assert DEFAULT_WEIGHTS["teacher"].style == 0  # a teacher carries the style; there are no Gram matrices


def test_distillation_loss_is_the_pixel_difference_from_the_teacher():
    teacher = torch.nn.Conv2d(3, 3, 1)
    content = torch.rand(2, 3, 8, 8) * 255
    with torch.no_grad():
        target = teacher(content).clamp(0, 255)
    loss = losses.DistillationLoss([teacher], LossWeights(content=2.0, style=0.0, tv=0.0))
    assert loss(target.clone(), content).total.item() == pytest.approx(0.0, abs=1e-12)
    shifted = loss((target + 25.5).requires_grad_(), content)
    assert shifted.content.item() == pytest.approx(2.0 * 0.1**2, rel=1e-5)
    assert not any(parameter.requires_grad for parameter in loss.parameters())


def test_feature_distillation_matches_each_photo_to_its_own_teacher_output():
    torch.manual_seed(0)
    teacher = torch.nn.Conv2d(3, 3, 1)
    content = torch.rand(2, 3, 48, 48) * 255
    with torch.no_grad():
        target = teacher(content).clamp(0, 255)
    network = RandomFeatureNetwork()
    network.calibrate([content])
    loss = losses.FeatureDistillationLoss(network, [teacher], LossWeights(content=1.0, style=1.0, tv=0.0))
    assert loss(target.clone(), content).total.item() == pytest.approx(0.0, abs=1e-6)
    # The second photo's teacher output is the first one's target: each image has its own Gram targets, so that
    # image's style and content terms are no longer zero.
    swapped = loss(target.flip(0), content).as_floats()
    assert swapped["content"] > 0 and swapped["style"] > 0
    output = (target + torch.randn_like(target) * 20).requires_grad_()
    loss(output, content).total.backward()
    assert output.grad.abs().sum() > 0 and not any(p.requires_grad for p in loss.teachers.parameters())


# ----------------------------------------------------------------------------------------------- VGG16 weights


def vgg16_state_dict() -> dict[str, torch.Tensor]:
    """What torchvision's vgg16().state_dict() holds for the layers we use, plus a classifier key to ignore."""
    layers = VGG16Features().layers.state_dict()
    return {**{f"features.{key}": value for key, value in layers.items()}, "classifier.0.bias": torch.zeros(4096)}


def test_vgg16_weights_load_from_a_file(tmp_path):
    saved = vgg16_state_dict()
    path = tmp_path / "vgg16.pth"
    torch.save(saved, path)
    weights, source = load_vgg16_weights(path)
    assert source == path
    network = VGG16Features(weights)
    for key, value in network.layers.state_dict().items():
        assert torch.equal(value, saved[f"features.{key}"])
    features = network(torch.rand(1, 3, 64, 64) * 255)
    assert [features[name].shape[1] for name in VGG16Features.style_layers] == [64, 128, 256, 512]


def test_missing_vgg16_weights_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(StylerError) as error:
        load_vgg16_weights(None)
    message = str(error.value)
    assert "\n" not in message
    assert "styler weights vgg16" in message and "--vgg-weights" in message
    assert str(tmp_path / "empty-cache") in message and "--loss-net random" in message


@pytest.mark.parametrize(
    "contents",
    [b"not a torch file", {"features.0.weight": torch.zeros(3)}, [1, 2, 3]],
    ids=["garbage", "wrong shapes", "not a dict"],
)
def test_unusable_vgg16_files_are_one_line_errors(tmp_path, contents):
    path = tmp_path / "weights.pth"
    if isinstance(contents, bytes):
        path.write_bytes(contents)
    else:
        torch.save(contents, path)
    with pytest.raises(StylerError, match="weights.pth") as error:
        load_vgg16_weights(path)
    assert "\n" not in str(error.value)
