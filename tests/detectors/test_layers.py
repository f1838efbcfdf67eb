"""Layer features by module name: values, default layers on several architectures, hooks always
removed, unknown names answered with the closest ones."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tracekit.detectors.layers import (
    check_layers,
    default_layers,
    flatten,
    layer_features,
    layer_outputs_in_order,
    model_device,
    spatial_mean,
)
from tracekit.errors import TracekitError
from tracekit.models.digits_cnn import DigitsCNN
from tracekit.models.normalize import Normalized
from tracekit.testing import tiny_model


def _hook_counts(model: nn.Module) -> list[tuple[int, int]]:
    return [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]


def _resnet18() -> nn.Module:
    import torchvision

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return torchvision.models.resnet18(weights=None, num_classes=5).eval()


class _Functional(nn.Module):
    """Activations only as function calls: no parameter-free modules."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.hidden = nn.Linear(4 * 14 * 14, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.hidden(F.relu(self.conv(x)).flatten(1))))


def test_features_are_the_module_outputs_even_before_an_in_place_relu() -> None:
    model = tiny_model().module  # features.0 (conv) is followed by an in-place ReLU
    images = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        (conv, pool), logits = layer_features(model, images, ["features.0", "features.5"], flatten, "test")
        expected_conv = model.features[0](images)
        assert (expected_conv < 0).any()  # the in-place ReLU would have changed these
        torch.testing.assert_close(conv, expected_conv.flatten(1))
        torch.testing.assert_close(pool, model.features(images).flatten(1))
        torch.testing.assert_close(logits, model(images))
        (pooled,), _ = layer_features(model, images, ["features.5"], spatial_mean, "test")
        torch.testing.assert_close(pooled, model.features(images).mean(dim=(2, 3)))
    assert _hook_counts(model) == [(0, 0)] * len(list(model.modules()))


def test_features_carry_gradients_to_the_input() -> None:
    model = tiny_model().module
    images = torch.rand(2, 1, 16, 16, requires_grad=True)
    (features,), _ = layer_features(model, images, ["features.2"], spatial_mean, "test")
    (grad,) = torch.autograd.grad(features.sum(), images)
    assert grad.abs().sum() > 0


def test_a_module_called_twice_gives_its_last_output() -> None:
    """torchvision's BasicBlock runs its `relu` twice; the feature is the block's output."""
    model = _resnet18()
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        (block,), _ = layer_features(model, images, ["layer1.0.relu"], flatten, "test")
        stem = model.maxpool(model.relu(model.bn1(model.conv1(images))))
        torch.testing.assert_close(block, model.layer1[0](stem).flatten(1))


def test_default_layers_of_common_architectures() -> None:
    digits = Normalized(DigitsCNN(), [0.5], [0.25]).eval()
    sample = torch.rand(2, 1, 32, 32)
    assert layer_outputs_in_order(digits, sample) == [
        "model.features.1", "model.features.4", "model.features.6",
        "model.features.9", "model.features.12", "model.classifier.1",
    ]  # fmt: skip
    assert default_layers(digits, sample, 2, "test") == ["model.features.12", "model.classifier.1"]
    resnet = _resnet18()
    points = layer_outputs_in_order(resnet, torch.rand(2, 3, 32, 32))
    assert points[0] == "maxpool" and points[-1] == "avgpool"  # avgpool's output is the input of fc
    assert points[1:-1] == [f"layer{i}.{j}.relu" for i in range(1, 5) for j in range(2)]
    functional = _Functional()
    assert layer_outputs_in_order(functional, torch.rand(2, 1, 16, 16)) == ["conv", "hidden"]
    assert _hook_counts(resnet) == [(0, 0)] * len(list(resnet.modules()))


def test_a_model_without_hidden_layers_asks_for_layers() -> None:
    with pytest.raises(TracekitError, match="give `layers`"):
        default_layers(nn.Linear(4, 2), torch.rand(2, 4), 3, "detector 'x'")


def test_unknown_layer_names_the_closest() -> None:
    model = Normalized(DigitsCNN(), [0.5], [0.25])
    assert check_layers(model, ["model.features.4"], "w") == ["model.features.4"]
    with pytest.raises(TracekitError, match=r"^detector 'lid': model Normalized has no layer 'features\.4' "
                       r"\(did you mean 'model\.features\.4'"):  # fmt: skip
        check_layers(model, ["model.features.4", "features.4"], "detector 'lid'")
    with pytest.raises(TracekitError, match="no layer ''"):
        check_layers(model, [""], "w")


def test_a_layer_that_does_not_run_is_bad_input() -> None:
    model = _Functional()
    model.unused = nn.ReLU()
    with pytest.raises(TracekitError, match="'unused' gave no tensor output"):
        layer_features(model, torch.rand(2, 1, 16, 16), ["conv", "unused"], flatten, "w")
    assert _hook_counts(model) == [(0, 0)] * len(list(model.modules()))


def test_hooks_are_removed_when_the_forward_pass_fails() -> None:
    model = tiny_model().module
    with pytest.raises(RuntimeError):
        layer_features(model, torch.rand(2, 3, 16, 16), ["features.2"], flatten, "w")  # wrong channels
    assert _hook_counts(model) == [(0, 0)] * len(list(model.modules()))


def test_model_device() -> None:
    assert model_device(tiny_model().module) == torch.device("cpu")
    assert model_device(nn.ReLU()) == torch.device("cpu")
