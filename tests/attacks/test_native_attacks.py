"""Native torch attacks against ART's on the same model and images, and their batch/device/model properties."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from tracekit.attacks.art_classifier import ArtAttack
from tracekit.attacks.factories import fgsm, gradient
from tracekit.attacks.fast_gradient import FastGradient
from tracekit.attacks.native import NativeDeepFool, NativeFastGradient, NativePGD
from tracekit.errors import TracekitError
from tracekit.testing import tiny_model, train_briefly

CLASSES = 5


def _banded(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise in [0.25, 0.75] plus a brighter band of 3 rows whose position (of 5) is the class."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (n,), generator=gen)
    images = 0.25 + 0.5 * torch.rand(n, 1, 16, 16, generator=gen)
    for c in range(CLASSES):
        images[labels == c, :, 3 * c : 3 * c + 3, :] += 0.2
    return images.clamp(0, 1), labels


@pytest.fixture(scope="module")
def model() -> nn.Module:
    """The tiny CNN (5 classes) trained briefly on `_banded` images, so attacks have something to flip."""
    images, labels = _banded(256, seed=0)
    return train_briefly(tiny_model(num_classes=CLASSES).module, images, labels, steps=40)


@pytest.fixture(scope="module")
def batch(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """64 correctly classified images, as the engine passes them."""
    images, labels = _banded(160, seed=1)
    with torch.no_grad():
        right = model(images).argmax(1) == labels
    assert right.sum() >= 64, "the test model did not learn the synthetic problem"
    return images[right][:64], labels[right][:64]


class _Art(ArtAttack):
    """Any ART evasion attack built from the classifier, run the way tracekit runs ART."""

    def __init__(self, make: Callable[[Any], Any]) -> None:
        super().__init__()
        self.make = make

    def build(self, classifier: Any) -> Any:
        return self.make(classifier)


def _art_pgd(norm: float, eps: float, eps_step: float, max_iter: int, decay: float | None = None) -> _Art:
    from art.attacks.evasion import ProjectedGradientDescentPyTorch

    return _Art(
        lambda c: ProjectedGradientDescentPyTorch(
            c, norm=norm, eps=eps, eps_step=eps_step, max_iter=max_iter, decay=decay, batch_size=1000, verbose=False
        )
    )


def _art_deepfool(max_iter: int, overshoot: float, nb_grads: int) -> _Art:
    from art.attacks.evasion import DeepFool

    return _Art(
        lambda c: DeepFool(c, max_iter=max_iter, epsilon=overshoot, nb_grads=nb_grads, batch_size=1000, verbose=False)
    )


def _predict(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(images).argmax(1)


def _size(adv: torch.Tensor, images: torch.Tensor, norm: float) -> torch.Tensor:
    return (adv - images).flatten(1).norm(p=norm, dim=1)


# (native attack, the same attack in ART) pairs that must agree.
PAIRS = {
    "fgsm": lambda: (NativeFastGradient("inf", 0.1), FastGradient(math.inf, 0.1, False, 0.1, 128)),
    "gradient": lambda: (NativeFastGradient(2, 1.5), FastGradient(2.0, 1.5, False, 0.1, 128)),
    "fgsm-minimal": lambda: (
        NativeFastGradient(math.inf, 0.08, True, 0.03),
        FastGradient(math.inf, 0.08, True, 0.03, 128),
    ),
    "gradient-minimal": lambda: (NativeFastGradient(2.0, 0.8, True, 0.3), FastGradient(2.0, 0.8, True, 0.3, 128)),
    "pgd-inf": lambda: (NativePGD("inf", 0.06, 0.02, 5), _art_pgd(math.inf, 0.06, 0.02, 5)),
    "pgd-l2": lambda: (NativePGD(2, 0.8, 0.3, 5), _art_pgd(2, 0.8, 0.3, 5)),
    "pgd-inf-momentum": lambda: (NativePGD("inf", 0.08, 0.02, 5, decay=0.9), _art_pgd(math.inf, 0.08, 0.02, 5, 0.9)),
    "pgd-l2-momentum": lambda: (NativePGD(2, 0.8, 0.3, 5, decay=1.0), _art_pgd(2, 0.8, 0.3, 5, 1.0)),
    "deepfool": lambda: (NativeDeepFool(max_iter=20, overshoot=0.02), _art_deepfool(20, 0.02, 10)),
}


@pytest.mark.parametrize("name", PAIRS)
def test_native_equals_art(model, batch, name):
    images, labels = batch
    native, art = PAIRS[name]()
    adv = native.generate(model, images, labels)
    reference = art.generate(model, images, labels)
    assert torch.allclose(adv, reference, atol=1e-5, rtol=0), (adv - reference).abs().max()
    assert not adv.requires_grad  # no autograd graph kept alive
    success = _predict(model, adv) != labels
    assert 0.3 < success.float().mean(), "the comparison is only meaningful if the attack flips predictions"
    assert not torch.equal(adv, images)


class _Reordered(nn.Module):
    """`model` with its classes reordered: output j is the model's class `order[j]`."""

    def __init__(self, model: nn.Module, order: torch.Tensor) -> None:
        super().__init__()
        self.model, self.order = model, order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[:, self.order]


def test_deepfool_with_fewer_grads_than_classes_equals_art_where_art_indexes_right(model, batch):
    # ART 1.20 subtracts the logit of class `position of the prediction in the class subset` rather than of the
    # prediction itself; the two agree when the image's top classes are the first ones. Reorder them so for ART.
    images, labels = batch
    native = NativeDeepFool(max_iter=20, overshoot=0.1, nb_grads=2).generate(model, images, labels)
    art = _art_deepfool(20, 0.1, 2)
    with torch.no_grad():
        tops = model(images[:8]).topk(2, dim=1).indices.sort(dim=1).values
    for i, top in enumerate(tops):
        order = torch.cat([top, torch.tensor([c for c in range(CLASSES) if c not in top])])
        reference = art.generate(_Reordered(model, order), images[i : i + 1], labels[i : i + 1])
        assert torch.allclose(native[i : i + 1], reference, atol=1e-5, rtol=0), i
    full = NativeDeepFool(max_iter=20, overshoot=0.1, nb_grads=CLASSES).generate(model, images, labels)
    assert not torch.allclose(native, full, atol=1e-3)  # the class subset really mattered
    assert (_predict(model, native) != labels).float().mean() > 0.9


@pytest.mark.parametrize("norm", ["inf", 2])
def test_pgd_random_init_stays_in_the_ball_and_draws_from_torch(model, batch, norm):
    images, labels = batch
    eps = 0.05 if norm == "inf" else 0.8
    order = math.inf if norm == "inf" else 2.0
    torch.manual_seed(0)
    start = NativePGD(norm, eps, 1e-6, max_iter=1, num_random_init=1).generate(model, images, labels)
    # one negligible step after the random start: the start's own distribution shows
    delta = _size(start, images, order)
    assert delta.max() <= eps * (1 + 1e-5)
    if norm == "inf":
        unclipped = (images > eps) & (images < 1 - eps)
        spread = (start - images)[unclipped]
        assert spread.abs().mean() == pytest.approx(eps / 2, rel=0.05)  # uniform in [-eps, eps]
    else:
        assert delta.min() > 0.9 * eps  # uniform in a 256-dim ball: almost all mass near the sphere
    torch.manual_seed(0)
    again = NativePGD(norm, eps, 1e-6, max_iter=1, num_random_init=1).generate(model, images, labels)
    assert torch.equal(start, again)


@pytest.mark.parametrize("norm", ["inf", 2])
def test_pgd_restarts_keep_every_success(model, batch, norm):
    images, labels = batch
    eps, step = (0.06, 0.015) if norm == "inf" else (0.8, 0.25)
    order = math.inf if norm == "inf" else 2.0
    torch.manual_seed(3)
    once = NativePGD(norm, eps, step, 4, num_random_init=1).generate(model, images, labels)
    torch.manual_seed(3)  # the first of the three restarts draws the same start as `once`
    thrice = NativePGD(norm, eps, step, 4, num_random_init=3).generate(model, images, labels)
    once_ok, thrice_ok = _predict(model, once) != labels, _predict(model, thrice) != labels
    assert once_ok.any() and not once_ok.all()
    assert (thrice_ok | ~once_ok).all()
    assert thrice_ok.sum() > once_ok.sum()
    assert _size(thrice, images, order).max() <= eps * (1 + 1e-5)
    assert thrice.min() >= 0 and thrice.max() <= 1


def test_momentum_changes_the_path(model, batch):
    images, labels = batch
    plain = NativePGD("inf", 0.06, 0.02, 5).generate(model, images, labels)
    assert not torch.allclose(NativePGD("inf", 0.06, 0.02, 5, decay=1.0).generate(model, images, labels), plain)
    assert torch.equal(NativePGD("inf", 0.06, 0.02, 5, decay=0.0).generate(model, images, labels), plain)  # no memory


@pytest.mark.parametrize("norm", ["inf", 2])
def test_pgd_random_eps_draws_one_radius_per_call_from_torch(model, batch, norm):
    images, labels = batch
    eps, order = (0.1, math.inf) if norm == "inf" else (2.0, 2.0)
    attack = NativePGD(norm, eps, eps / 4, 8, random_eps=True)
    torch.manual_seed(0)
    radii = [attack._radius()[0] for _ in range(2000)]
    assert 0 <= min(radii) and max(radii) <= eps
    # a normal of scale eps/2 truncated to [0, eps]: mean eps/2 * sqrt(2/pi) * (1-e^-2) / erf(sqrt 2)
    expected = eps / 2 * math.sqrt(2 / math.pi) * (1 - math.exp(-2)) / math.erf(math.sqrt(2))
    assert sum(radii) / len(radii) == pytest.approx(expected, rel=0.05)
    torch.manual_seed(1)
    adv = attack.generate(model, images, labels)
    torch.manual_seed(1)
    drawn, step = attack._radius()
    assert step == pytest.approx(drawn / 4)
    assert _size(adv, images, order).max() <= drawn * (1 + 1e-5)
    torch.manual_seed(1)
    assert torch.equal(adv, attack.generate(model, images, labels))  # seeded by torch


def test_fast_gradient_random_starts_are_one_projected_pgd_step(model, batch):
    images, labels = batch
    torch.manual_seed(5)
    started = NativeFastGradient("inf", 0.08, num_random_init=2).generate(model, images, labels)
    torch.manual_seed(5)
    assert torch.equal(started, NativePGD("inf", 0.08, 0.08, 1, num_random_init=2).generate(model, images, labels))
    assert _size(started, images, math.inf).max() <= 0.08 + 1e-6
    assert not torch.equal(started, NativeFastGradient("inf", 0.08).generate(model, images, labels))
    with pytest.raises(TracekitError, match="random start"):
        NativeFastGradient("inf", 0.08, minimal=True, num_random_init=1)


ATTACKS = {
    "fgsm": lambda: NativeFastGradient(math.inf, 0.1),
    "gradient-minimal": lambda: NativeFastGradient(2, 1.0, minimal=True, eps_step=0.25),
    "pgd": lambda: NativePGD(math.inf, 0.05, 0.02, 3),
    "deepfool": lambda: NativeDeepFool(max_iter=10, nb_grads=3),
}


@pytest.mark.parametrize("name", ATTACKS)
def test_a_batch_is_attacked_as_its_halves_are(model, batch, name):
    images, labels = batch
    attack = ATTACKS[name]()
    whole = attack.generate(model, images, labels)
    halves = torch.cat([attack.generate(model, images[i : i + 32], labels[i : i + 32]) for i in (0, 32)])
    assert torch.allclose(whole, halves, atol=1e-5, rtol=0)


def _hook_counts(model: nn.Module) -> list[tuple[int, int, int]]:
    return [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()]


@pytest.mark.parametrize("name", ATTACKS)
def test_images_and_model_are_left_as_they_were(model, batch, name):
    images, labels = batch
    model = copy.deepcopy(model).train()  # training mode, as a user mid-training might have it
    model.features[0].weight.grad = torch.ones_like(model.features[0].weight)
    model.classifier.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    hooks = _hook_counts(model)
    original = images.clone()
    with torch.no_grad():  # callers may attack inside no_grad
        adv = ATTACKS[name]().generate(model, images, labels)
    assert torch.equal(images, original)
    assert adv.shape == images.shape and adv.dtype == images.dtype and adv.device == images.device
    assert adv.min() >= 0 and adv.max() <= 1
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert [m.training for m in model.modules()] == modes
    assert _hook_counts(model) == hooks
    assert torch.equal(model.features[0].weight.grad, torch.ones_like(model.features[0].weight))
    assert all(p.grad is None for p in list(model.parameters())[1:])
    assert all(p.requires_grad for p in model.parameters())


def test_a_model_in_training_mode_is_attacked_in_eval_mode_and_its_statistics_kept(batch):
    images, labels = batch
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Dropout(0.5), nn.Linear(784, CLASSES)
    )
    with torch.no_grad():
        net.train()(images)  # non-trivial running statistics
    stats = copy.deepcopy(net[1].state_dict())
    for make in ATTACKS.values():
        in_training = make().generate(net.train(), images, labels)
        assert net.training and net[1].training and net[4].training
        assert all(torch.equal(v, stats[k]) for k, v in net[1].state_dict().items())
        assert torch.equal(in_training, make().generate(net.eval(), images, labels))


def test_float64_images_keep_their_dtype_and_match_float32(model, batch):
    images, labels = batch
    for make in ATTACKS.values():
        adv64 = make().generate(model, images.double(), labels)
        assert adv64.dtype == torch.float64
        assert torch.allclose(adv64, make().generate(model, images, labels).double(), atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_results_stay_on_cuda_and_match_cpu(model, batch, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # full float32, as on the CPU
    images, labels = batch
    gpu_model = copy.deepcopy(model).cuda()
    for make in ATTACKS.values():
        adv = make().generate(gpu_model, images.cuda(), labels.cuda())
        assert adv.device.type == "cuda" and adv.dtype == images.dtype
        differs = (adv.cpu() - make().generate(model, images, labels)).abs() > 1e-4
        assert differs.float().mean() < 1e-3  # only where a gradient is ~0 may a sign differ


@pytest.mark.parametrize("norm", [1, "l2", None])
def test_unsupported_norms_are_refused_with_a_clear_message(norm):
    with pytest.raises(TracekitError, match="norm 'inf' or 2"):
        NativePGD(norm, 0.1, 0.01, 10)


def test_the_fast_gradient_factories_dispatch_on_backend(model, batch):
    images, labels = batch
    attack = fgsm(eps=0.1, backend="native")
    assert isinstance(attack, NativeFastGradient) and attack.norm == math.inf and attack.eps == 0.1
    minimal = gradient(eps=0.8, minimal=True, eps_step=0.3, backend="native")
    assert isinstance(minimal, NativeFastGradient)
    assert (minimal.norm, minimal.eps, minimal.minimal, minimal.eps_step) == (2.0, 0.8, True, 0.3)
    assert isinstance(gradient(eps=0.8), FastGradient)
    assert torch.allclose(
        attack.generate(model, images, labels), fgsm(eps=0.1).generate(model, images, labels), atol=1e-5
    )
