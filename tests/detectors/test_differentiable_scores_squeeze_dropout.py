"""Differentiable stand-ins for adaptive attacks (issue 26): feature squeezing (BPDA through the
squeezers) and the MC-dropout Bayesian uncertainty (EOT over the score's own per-image masks).

Each stand-in's forward is the real score (the same operations on the same values: compared
bit for bit, or within float rounding where noted), its gradient reaches (nearly) every image, and
one small step down that gradient lowers the real score on average."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from torch import nn

import tracekit
from tracekit.detectors.feature_squeezing import FeatureSqueezing
from tracekit.detectors.kd_bu import WHERE as KD_BU
from tracekit.detectors.mc_dropout import bayesian_uncertainty
from tracekit.errors import TracekitError
from tracekit.protocols import DifferentiableScore

N = 48  # clean and adversarial test images each
# One L-inf signed-gradient step (PGD's eps_step at eps 0.1 is 0.01). MC dropout's step is larger:
# the stepped image gets fresh masks (they follow its 8-bit content), whose noise a smaller step's
# change does not clear on 48 images (measured: mean uncertainty 0.297 -> 0.269 at 0.01, -> 0.213
# at 0.03, 79% of the images lower).
STEP, DROPOUT_STEP = 0.01, 0.03


@pytest.fixture(scope="module")
def digits(correct_digits) -> dict[str, Any]:
    """digits-cnn, correctly classified test images and FGSM eps 0.1 adversarials of others (the
    images an adaptive attack starts from: detected, near the decision boundary)."""
    model, images, labels = correct_digits
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(1))
    clean, fit, source = order[:N], order[N : 3 * N], order[3 * N : 6 * N]
    attack = tracekit.create("attack", "fgsm", eps=0.1, backend="native")
    adversarial = attack.generate(model, images[source], labels[source])
    fit_adversarial = attack.generate(model, images[fit], labels[fit])
    with torch.no_grad():
        success = model(adversarial).argmax(1) != labels[source]
    return {
        "model": model,
        "clean": images[clean],
        "adversarial": adversarial[success][:N],
        "fit": images[fit],
        "fit-adversarial": fit_adversarial,
    }


def _gradient(score: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    (grad,) = torch.autograd.grad(score.sum(), images)
    return grad


def _snapshot(model: nn.Module) -> dict[str, Any]:
    return {
        "training": [m.training for m in model.modules()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()],
        "grads": [p.grad for p in model.parameters()],
        "rng": torch.random.get_rng_state(),
    }


def _assert_unchanged(model: nn.Module, before: dict[str, Any]) -> None:
    after = _snapshot(model)
    assert after["training"] == before["training"]
    assert after["hooks"] == before["hooks"]
    assert all(g is None for g in after["grads"])  # gradients went to the images only
    assert torch.equal(after["rng"], before["rng"])


# Feature squeezing: BPDA


def test_feature_squeezing_offers_a_stand_in() -> None:
    detector = tracekit.create("detector", "feature-squeezing")
    assert isinstance(detector, DifferentiableScore)


@pytest.mark.parametrize("params", [{}, {"bits": 3, "median_sizes": [2, 3]}])
def test_feature_squeezing_stand_in_is_the_real_score(digits: dict[str, Any], params: dict[str, Any]) -> None:
    """Forward: bit for bit (the same operations on the same values; `x - x.detach()` is zero)."""
    detector, model = tracekit.create("detector", "feature-squeezing", **params), digits["model"]
    images = torch.cat([digits["clean"], digits["adversarial"]]).requires_grad_()
    before = _snapshot(model)
    stand_in = detector.score_for_attack(model, images)
    assert stand_in.requires_grad and stand_in.shape == (len(images),)
    real = detector.score(model, images.detach())
    torch.testing.assert_close(stand_in.detach(), real, rtol=0, atol=0)
    grad = _gradient(stand_in, images)
    assert grad.isfinite().all()
    nonzero = grad.flatten(1).abs().amax(1) > 0
    assert nonzero.double().mean() >= 0.95, f"{int((~nonzero).sum())} of {len(images)} images without gradient"
    _assert_unchanged(model, before)


def test_feature_squeezing_gradient_is_straight_through() -> None:
    """The gradient is that of `|softmax(x) - softmax(s)|_1` in x plus that in s (the squeezer's
    backward the identity), through the squeezer of the largest change: BPDA, by hand."""
    from tracekit.testing import tiny_model

    model = tiny_model(seed=3).module
    images = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    detector = FeatureSqueezing(bits=2, median_sizes=[2, 3])
    x = images.clone().requires_grad_()
    grad = _gradient(detector.score_for_attack(model, x), x)
    squeezed = [s.clone().requires_grad_() for s in detector.squeezed(images)]
    clean = images.clone().requires_grad_()
    changes = torch.stack([(model(s).softmax(1) - model(clean).softmax(1)).abs().sum(1) for s in squeezed])
    best = changes.argmax(0)
    picked = changes.gather(0, best[None])[0]
    grads = torch.autograd.grad(picked.sum(), [clean, *squeezed], allow_unused=True)
    expected = grads[0] + sum(g for g in grads[1:] if g is not None)
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-7)


def test_feature_squeezing_descent_lowers_the_real_score(digits: dict[str, Any]) -> None:
    detector, model = tracekit.create("detector", "feature-squeezing"), digits["model"]
    images = digits["adversarial"].clone().requires_grad_()
    grad = _gradient(detector.score_for_attack(model, images), images)
    stepped = (images.detach() - STEP * grad.sign()).clamp(0, 1)
    before, after = detector.score(model, images.detach()), detector.score(model, stepped)
    assert after.mean() < before.mean(), f"mean real score {before.mean():.4f} -> {after.mean():.4f}"
    assert (after < before).double().mean() > 0.5


# MC dropout: EOT over the score's own masks


@pytest.fixture(scope="module")
def kd_bu(digits: dict[str, Any]) -> Any:
    """KD+BU fitted on digits-cnn (no dropout modules: dropout on the last hidden features)."""
    detector = tracekit.create("detector", "kd-bu", n_samples=20, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no dropout": the fallback site, as intended here
        detector.fit(digits["model"], digits["fit"], digits["fit-adversarial"])
    return detector


def _uncertainty(detector: Any, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return bayesian_uncertainty(model, images, detector.layer_, detector.rate, detector.seed, detector.n_samples, KD_BU)


def test_mc_dropout_stand_in_is_the_real_uncertainty(digits: dict[str, Any], kd_bu: Any) -> None:
    """Forward: KD+BU's own Bayesian uncertainty feature, bit for bit (the same masks, passes and
    float64 sums in the same order; here all images fit one of the detector's batches)."""
    model = digits["model"]
    images = torch.cat([digits["clean"], digits["adversarial"]]).requires_grad_()
    before = _snapshot(model)
    stand_in = _uncertainty(kd_bu, model, images)
    assert stand_in.requires_grad and stand_in.shape == (len(images),) and stand_in.dtype == torch.float64
    real = torch.from_numpy(kd_bu.features(model, images.detach())[:, 1])
    torch.testing.assert_close(stand_in.detach(), real, rtol=0, atol=0)
    grad = _gradient(stand_in, images)
    assert grad.isfinite().all()
    nonzero = grad.flatten(1).abs().amax(1) > 0
    assert nonzero.double().mean() >= 0.95, f"{int((~nonzero).sum())} of {len(images)} images without gradient"
    _assert_unchanged(model, before)


def test_mc_dropout_descent_lowers_the_real_uncertainty(digits: dict[str, Any], kd_bu: Any) -> None:
    """The step changes the images, so the real score draws fresh masks for them: the stand-in's
    gradient still lowers it on average."""
    model = digits["model"]
    images = digits["adversarial"].clone().requires_grad_()
    grad = _gradient(_uncertainty(kd_bu, model, images), images)
    stepped = (images.detach() - DROPOUT_STEP * grad.sign()).clamp(0, 1)
    before = torch.from_numpy(kd_bu.features(model, images.detach())[:, 1])
    after = torch.from_numpy(kd_bu.features(model, stepped)[:, 1])
    assert after.mean() < before.mean(), f"mean real uncertainty {before.mean():.5f} -> {after.mean():.5f}"
    assert (after < before).double().mean() > 0.5


class _DropoutNet(nn.Module):
    """The model's own dropout modules (element and channel), so the masks go where they are."""

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.conv = nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.Dropout2d(0.2))
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(6 * 14 * 14, 32), nn.ReLU(), nn.Dropout(0.3))
            self.out = nn.Linear(32, 4)
        self.fail_after: int | None = None
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("out of memory (simulated)")
        return self.out(self.head(self.conv(x)))


def test_mc_dropout_stand_in_on_the_model_dropout_is_deterministic_and_leaves_it_as_it_was() -> None:
    model = _DropoutNet().eval()
    images = torch.rand(10, 1, 16, 16, generator=torch.Generator().manual_seed(4)).requires_grad_()
    before = _snapshot(model)
    first = bayesian_uncertainty(model, images, "", 0.0, seed=1, n_samples=8, where="test")
    again = bayesian_uncertainty(model, images.detach(), "", 0.0, seed=1, n_samples=8, where="test")
    torch.testing.assert_close(first.detach(), again, rtol=0, atol=0)  # the same masks every time
    alone = bayesian_uncertainty(model, images.detach()[3:4], "", 0.0, seed=1, n_samples=8, where="test")
    torch.testing.assert_close(alone, again[3:4], rtol=1e-6, atol=1e-12)  # the image's masks, in any batch
    assert (first > 0).all()
    grad = _gradient(first, images)
    assert grad.isfinite().all() and (grad.flatten(1).abs().amax(1) > 0).all()
    _assert_unchanged(model, before)
    assert all(not m.training for m in model.modules())  # eval mode throughout: the hooks drop

    model.calls, model.fail_after = 0, 3  # fails in the middle of the passes
    with pytest.raises(RuntimeError, match="simulated"):
        bayesian_uncertainty(model, images, "", 0.0, seed=1, n_samples=8, where="test")
    _assert_unchanged(model, before)  # hooks removed, modes untouched, even on the exception
    with pytest.raises(TracekitError, match="n_samples"):
        bayesian_uncertainty(model, images, "", 0.0, seed=1, n_samples=0, where="test")
