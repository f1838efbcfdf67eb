"""Guided backprop: against Captum, against hand-derived maps, and leaving the model untouched."""

from __future__ import annotations

import copy
import threading
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tracekit.errors import TracekitError
from tracekit.saliency.factories import guided_backprop
from tracekit.saliency.guided_backprop import GuidedBackprop, GuidedReLUMode
from tracekit.testing import HalfReLU, tiny_model

ORIGINAL_RELU = F.relu


def captum_maps(model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from captum.attr import GuidedBackprop as CaptumGuidedBackprop

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum warns about setting hooks on activations
        return CaptumGuidedBackprop(model).attribute(images.clone(), target=target).detach()


def assert_maps_close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6 * float(ref.abs().max()))


def seeded(build, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build().eval()


@pytest.mark.parametrize("given", [True, False], ids=["given-target", "predicted"])
def test_matches_captum_on_tiny_cnn(given: bool) -> None:
    model = tiny_model().module
    images = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    predicted = model(images).argmax(1)
    target = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    ours = guided_backprop().maps(model, images, target if given else None)
    assert_maps_close(ours, captum_maps(model, images, target if given else predicted))


def test_hand_derived_one_hidden_layer() -> None:
    # logit = W2 relu(W1 x); guided map = W1^T (relu(W2[t]) * [W1 x > 0]).
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, bias=False), nn.ReLU(), nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, -1, 0, 2], [0, 1, 1, 0], [1, 0, 1, 0]]))
        model[3].weight.copy_(torch.tensor([[-1.0, 4, 2], [1, -5, -1]]))
    image = torch.tensor([3.0, 1, -2, 1]).reshape(1, 1, 2, 2)  # hidden pre-activations: 4, -1, 1
    maps = guided_backprop().maps(model, image.expand(2, -1, -1, -1), torch.tensor([0, 1]))
    # class 0: relu([-1,4,2]) * [1,0,1] = [0,0,2] -> 2*row2; class 1: [1,0,0] -> row0.
    # (The plain gradient of class 0 would be [1, 1, 2, -2].)
    expected = torch.tensor([[2.0, 0, 2, 0], [1, -1, 0, 2]]).reshape(2, 1, 2, 2)
    assert torch.equal(maps, expected)


SPELLINGS = {
    "F.relu": lambda h: F.relu(h),
    "F.relu-inplace": lambda h: F.relu(h, inplace=True),
    "F.relu_": lambda h: (F.relu_(h), h)[1],  # the result ignored: the in-place effect must hold
    "torch.relu": torch.relu,
    "torch.relu_": lambda h: (torch.relu_(h), h)[1],
    "Tensor.relu": lambda h: h.relu(),
    "Tensor.relu_": lambda h: (h.relu_(), h)[1],
}


class FunctionalNet(nn.Module):
    """conv -> relu (some spelling) -> linear; with `module=True`, an nn.ReLU that Captum sees."""

    def __init__(self, relu=None) -> None:
        super().__init__()
        self.conv, self.fc, self.act = nn.Conv2d(3, 4, 3), nn.Linear(4 * 6 * 6, 5), relu or nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).flatten(1))


class Spelled(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fn(h)


@pytest.mark.parametrize("spelling", list(SPELLINGS))
def test_every_relu_spelling_is_guided(spelling: str) -> None:
    reference = seeded(FunctionalNet)
    model = copy.deepcopy(reference)
    model.act = Spelled(SPELLINGS[spelling])  # not an nn.ReLU: Captum would not see it
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    target = torch.tensor([0, 3, 4])
    with GuidedReLUMode() as mode:
        logits = model(images)
    assert mode.calls == 1
    assert torch.equal(logits, reference(images))  # forward unchanged (in-place effect kept)
    assert_maps_close(guided_backprop().maps(model, images, target), captum_maps(reference, images, target))


def test_in_place_relu_on_a_view_guides_only_that_view() -> None:
    reference = seeded(lambda: HalfReLU(in_place_on_view=False))
    model = copy.deepcopy(reference)
    model.in_place_on_view = True
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    target = torch.tensor([1, 2, 4])
    ours = guided_backprop().maps(model, images, target)
    assert_maps_close(ours, captum_maps(reference, images, target))
    assert not torch.allclose(ours, guided_backprop().maps(seeded(lambda: FunctionalNet()), images, target))


def test_a_model_hiding_a_relu_in_an_in_place_op_on_a_view_is_run_under_the_mode_from_then_on() -> None:
    forwards = []
    model = seeded(lambda: HalfReLU(in_place_on_view=True))
    model.register_forward_pre_hook(lambda module, args: forwards.append(1))
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    first = guided_backprop().maps(model, images)
    assert len(forwards) == 2  # the graph walked, then the forward again under the mode
    assert torch.equal(guided_backprop().maps(model, images), first)
    assert len(forwards) == 3  # remembered: straight to the mode
    plain = seeded(FunctionalNet)
    plain.register_forward_pre_hook(lambda module, args: forwards.append(1))
    guided_backprop().maps(plain, images)
    guided_backprop().maps(plain, images)
    assert len(forwards) == 5  # one forward a batch where every ReLU's node is in reach


class Unhashable(HalfReLU):
    def __eq__(self, other: object) -> bool:  # and so no __hash__
        return self is other


@pytest.mark.parametrize("in_place_on_view", [False, True])
def test_an_unhashable_model(in_place_on_view: bool) -> None:
    model = seeded(lambda: Unhashable(in_place_on_view))
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    for _ in range(2):
        maps = guided_backprop().maps(model, images)
    model.in_place_on_view = not in_place_on_view  # the same function
    assert torch.equal(maps, guided_backprop().maps(model, images))


class ReLUElsewhere(nn.Module):
    """FunctionalNet's function, its ReLU called as `torch.ops.aten.relu` or on another thread."""

    def __init__(self, net: nn.Module, how: str) -> None:
        super().__init__()
        self.net, self.how = net, how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net.conv(x)
        if self.how == "aten":
            h = torch.ops.aten.relu(h)
        else:
            out: list[torch.Tensor] = []
            thread = threading.Thread(target=lambda: out.append(F.relu(h)))
            thread.start()
            thread.join()
            h = out[0]
        return self.net.fc(h.flatten(1))


@pytest.mark.parametrize("how", ["aten", "thread"])
def test_relus_the_forward_calls_do_not_show_are_guided(how: str) -> None:
    reference = seeded(FunctionalNet)
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    target = torch.tensor([0, 3, 4])
    ours = guided_backprop().maps(ReLUElsewhere(reference, how), images, target)
    assert_maps_close(ours, captum_maps(reference, images, target))


def test_a_torchscript_model_is_guided() -> None:
    reference = seeded(FunctionalNet)
    scripted = torch.jit.script(seeded(FunctionalNet))
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    target = torch.tensor([0, 3, 4])
    expected = captum_maps(reference, images, target)
    for _ in range(3):  # the profiling executor optimizes the graph after its first runs
        assert_maps_close(guided_backprop().maps(scripted, images, target), expected)


def test_matches_captum_on_resnet18() -> None:
    from torchvision.models import resnet18

    model = seeded(lambda: resnet18(weights=None, num_classes=10))
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    target = torch.tensor([1, 7])
    assert_maps_close(guided_backprop().maps(model, images, target), captum_maps(model, images, target))


class DenseNetWithReLUModule(nn.Module):
    """torchvision's DenseNet.forward, with its final functional ReLU as an nn.ReLU module."""

    def __init__(self, densenet: nn.Module) -> None:
        super().__init__()
        self.features, self.relu, self.classifier = densenet.features, nn.ReLU(), densenet.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.adaptive_avg_pool2d(self.relu(self.features(x)), (1, 1))
        return self.classifier(torch.flatten(out, 1))


@pytest.mark.slow
def test_densenet121_functional_relu_is_guided() -> None:
    from torchvision.models import densenet121

    model = seeded(lambda: densenet121(weights=None, num_classes=10))
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    target = torch.tensor([3])
    reference_model = DenseNetWithReLUModule(model)
    assert torch.equal(reference_model(images), model(images))

    ours = guided_backprop().maps(model, images, target)
    assert_maps_close(ours, captum_maps(reference_model, images, target))
    # Captum on the original misses the functional F.relu(features, inplace=True): a different map.
    assert not torch.allclose(ours, captum_maps(model, images, target), rtol=1e-3, atol=0)

    with GuidedReLUMode() as mode:
        model(images)
    assert mode.calls == sum(isinstance(m, nn.ReLU) for m in model.modules()) + 1


def hook_counts(model: nn.Module) -> list[tuple[int, ...]]:
    return [
        (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks), len(m._backward_pre_hooks))
        for m in model.modules()
    ]


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_model_is_left_exactly_as_it_was(training: bool) -> None:
    model = tiny_model(channels=3, size=16).module.train(training)
    model.features[0].weight.requires_grad_(False)  # a frozen parameter stays frozen
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hooks, modes = hook_counts(model), [m.training for m in model.modules()]
    requires_grad = [p.requires_grad for p in model.parameters()]
    images = torch.rand(4, 3, 16, 16)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "no ReLU was seen" warning for a model with ReLUs
        guided_backprop().maps(model, images)

    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert hook_counts(model) == hooks
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert F.relu is ORIGINAL_RELU


def plain_relu_gradient() -> torch.Tensor:
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    (F.relu(x) * torch.tensor([-1.0, 3.0])).sum().backward()
    return x.grad


class Raises(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        F.relu(x)
        raise RuntimeError("boom")


def test_relu_is_plain_again_after_a_forward_that_raises() -> None:
    with pytest.raises(RuntimeError, match="boom"):
        guided_backprop().maps(Raises(), torch.rand(1, 1, 2, 2))
    assert F.relu is ORIGINAL_RELU
    assert torch.equal(plain_relu_gradient(), torch.tensor([-1.0, 3.0]))  # not clamped: mode gone


def test_other_threads_keep_plain_relu_gradients() -> None:
    other: list[torch.Tensor] = []
    with GuidedReLUMode() as mode:
        thread = threading.Thread(target=lambda: other.append(plain_relu_gradient()))
        thread.start()
        thread.join()
    assert torch.equal(other[0], torch.tensor([-1.0, 3.0])) and mode.calls == 0


def test_warns_when_no_relu_is_seen_and_gives_the_plain_gradient() -> None:
    model = seeded(lambda: nn.Sequential(nn.Flatten(), nn.Linear(4, 3)))
    with pytest.warns(UserWarning, match="no ReLU was seen in Sequential"):
        maps = guided_backprop().maps(model, torch.rand(2, 1, 2, 2), torch.tensor([2, 0]))
    expected = model[1].weight.detach()[[2, 0]].reshape(2, 1, 2, 2)
    assert torch.equal(maps, expected)


class ScalesInputInPlace(nn.Module):
    def __init__(self, in_place: bool) -> None:
        super().__init__()
        self.in_place, self.net = in_place, seeded(FunctionalNet)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.mul_(2) if self.in_place else x * 2)


def test_images_are_not_modified_even_by_a_model_writing_its_input() -> None:
    images = torch.rand(2, 3, 8, 8)
    before = images.clone()
    maps = guided_backprop().maps(ScalesInputInPlace(True), images, torch.tensor([0, 1]))
    assert torch.equal(images, before)
    assert torch.equal(maps, guided_backprop().maps(ScalesInputInPlace(False), images, torch.tensor([0, 1])))
    assert not maps.requires_grad


def test_works_under_no_grad_and_inference_mode(tiny) -> None:
    images = torch.rand(3, 1, 16, 16)
    expected = guided_backprop().maps(tiny.module, images)
    with torch.no_grad():
        assert torch.equal(guided_backprop().maps(tiny.module, images), expected)
    with torch.inference_mode():
        inference_images = images.clone()
        assert torch.equal(guided_backprop().maps(tiny.module, inference_images), expected)


DEVICES = [
    "cpu",
    "meta",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")),
]


@pytest.mark.parametrize("device", DEVICES)
def test_output_on_the_images_device(device: str) -> None:
    model = tiny_model().module
    images = torch.rand(3, 1, 16, 16)
    maps = GuidedBackprop().maps(copy.deepcopy(model).to(device), images.to(device))
    assert maps.device.type == device and maps.shape == images.shape
    if device != "meta":
        assert_maps_close(maps.cpu(), GuidedBackprop().maps(model, images))


@pytest.mark.parametrize(
    "target, message",
    [
        (torch.tensor([0, 1]), "shape \\(2,\\); expected one class index per image, \\(3,\\)"),
        (torch.tensor([0, 3, 1]), "must lie in 0..2"),
    ],
)
def test_bad_targets_are_clear_errors(tiny, target: torch.Tensor, message: str) -> None:
    with pytest.raises(TracekitError, match=message):
        guided_backprop().maps(tiny.module, torch.rand(3, 1, 16, 16), target)


def test_bad_images_and_outputs_are_clear_errors(tiny) -> None:
    with pytest.raises(TracekitError, match="images must be floating point"):
        guided_backprop().maps(tiny.module, torch.zeros(1, 1, 16, 16, dtype=torch.uint8))
    with pytest.raises(TracekitError, match=r"Flatten returned \(256,\); expected logits of shape \[N, classes\]"):
        guided_backprop().maps(nn.Flatten(0), torch.rand(1, 1, 16, 16))
