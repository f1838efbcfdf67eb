"""Vanilla gradient against Captum and by hand; what every gradient method (gradient,
integrated-gradients, smoothgrad) must share: model untouched, clear errors, any grad mode."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import tracekit
from tracekit.errors import TracekitError
from tracekit.saliency.factories import gradient
from tracekit.testing import tiny_model

METHODS = {
    "gradient": {},
    "integrated-gradients": {"steps": 4},
    "smoothgrad": {"n_samples": 3, "base": {"name": "gradient"}},
    "smoothgrad-over-guided-backprop": {"n_samples": 2},
}


def create(method: str) -> tracekit.protocols.Saliency:
    return tracekit.create("saliency", method.split("-over-")[0], **METHODS[method])


def images(n: int = 6, channels: int = 1, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, channels, 16, 16, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("given", [True, False], ids=["given-target", "predicted"])
def test_gradient_matches_captum_saliency(tiny, given: bool) -> None:
    from captum.attr import Saliency

    x, target = images(), torch.tensor([0, 1, 2, 0, 1, 2])
    explained = target if given else tiny.module(x).argmax(1)
    reference = Saliency(tiny.module).attribute(x.clone().requires_grad_(), target=explained, abs=False)
    ours = gradient().maps(tiny.module, x, target if given else None)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-7)
    assert not torch.equal(ours, ours.abs())  # signed, unlike Captum's default abs=True


def test_gradient_by_hand_through_a_relu() -> None:
    # logit = W2 relu(W1 x): gradient = W1^T (W2[t] * [W1 x > 0]), negative entries kept.
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, bias=False), nn.ReLU(), nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, -1, 0, 2], [0, 1, 1, 0], [1, 0, 1, 0]]))
        model[3].weight.copy_(torch.tensor([[-1.0, 4, 2], [1, -5, -1]]))
    image = torch.tensor([3.0, 1, -2, 1]).reshape(1, 1, 2, 2)  # hidden pre-activations: 4, -1, 1
    maps = gradient().maps(model, image.expand(2, -1, -1, -1), torch.tensor([0, 1]))
    # class 0: [-1, 0, 2] -> -row0 + 2 row2; class 1: [1, 0, -1] -> row0 - row2.
    expected = torch.tensor([[1.0, 1, 2, -2], [0, -1, -1, 2]]).reshape(2, 1, 2, 2)
    assert torch.equal(maps, expected)


def hook_counts(model: nn.Module) -> list[tuple[int, ...]]:
    return [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_model_and_images_left_exactly_as_they_were(method: str, training: bool) -> None:
    model = tiny_model(channels=3).module.train(training)
    model.features[0].weight.requires_grad_(False)  # a frozen parameter stays frozen
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hooks, modes = hook_counts(model), [m.training for m in model.modules()]
    requires_grad = [p.requires_grad for p in model.parameters()]
    x = images(3, channels=3)
    before = x.clone()

    maps = create(method).maps(model, x)

    assert maps.shape == x.shape and not maps.requires_grad and maps.abs().sum() > 0
    assert torch.equal(x, before)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert hook_counts(model) == hooks
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == requires_grad
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("method", METHODS)
def test_works_under_no_grad_and_inference_mode(tiny, method: str) -> None:
    x = images(3)
    expected = create(method).maps(tiny.module, x)
    with torch.no_grad():
        assert torch.equal(create(method).maps(tiny.module, x), expected)
    with torch.inference_mode():
        assert torch.equal(create(method).maps(tiny.module, x.clone()), expected)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "target, message",
    [
        (torch.tensor([0, 1]), r"target has shape \(2,\); expected one class index per image, \(3,\)"),
        (torch.tensor([0, 3, 1]), "target classes must lie in 0..2"),
    ],
)
def test_bad_targets_are_clear_errors(tiny, method: str, target: torch.Tensor, message: str) -> None:
    name = method.split("-over-")[0]
    with pytest.raises(TracekitError, match=f"^{name}: {message}"):
        create(method).maps(tiny.module, images(3), target)


@pytest.mark.parametrize("method", METHODS)
def test_bad_images_and_outputs_are_clear_errors(tiny, method: str) -> None:
    name = method.split("-over-")[0]
    with pytest.raises(TracekitError, match=f"^{name}: images must be floating point"):
        create(method).maps(tiny.module, torch.zeros(1, 1, 16, 16, dtype=torch.uint8))
    with pytest.raises(TracekitError, match=r"Flatten returned \(256,\); expected logits of shape \[N, classes\]"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # guided backprop: "no ReLU was seen"
            create(method).maps(nn.Flatten(0), torch.rand(1, 1, 16, 16))


def test_registered_with_their_parameters() -> None:
    saliency = tracekit.plugins.registry("saliency")
    assert saliency.resolve({"name": "gradient"}) == {"name": "gradient"}
    assert saliency.resolve({"name": "integrated-gradients"}) == {"name": "integrated-gradients", "steps": 32}
    assert saliency.resolve({"name": "smoothgrad"}) == {
        "name": "smoothgrad",
        "base": {"name": "guided-backprop"},
        "n_samples": 16,
        "noise": 0.15,
        "seed": 0,
    }
    for entry in ("gradient", "integrated-gradients", "smoothgrad"):
        assert saliency.get(entry).source == "tracekit" and saliency.get(entry).summary
