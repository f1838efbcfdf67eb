"""The learned baselines' differentiable stand-ins (`DifferentiableScore.score_for_attack`, for
adaptive attacks): Mahalanobis, LID and KD+BU, fitted on the embedded digits model. Each stand-in
is its detector's real score with autograd through the images, so its forward equals `score`, its
gradient reaches every image, and a step against that gradient lowers the real score."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from torch import nn

import tracekit
from tracekit.protocols import DifferentiableScore

N_FIT, N_TEST = 100, 20
DETECTORS = {
    "mahalanobis": {},
    "mahalanobis-no-noise": {"noise": 0.0},  # without the input pre-processing step
    "lid": {},
    "kd-bu": {"n_samples": 10},  # fewer MC passes than the paper's 50 keep the test fast
}
STEP = 0.01  # one L-inf step in [0, 1] pixels, a typical PGD step size


@pytest.fixture(scope="module")
def digits(correct_digits) -> dict[str, Any]:
    """digits-cnn, correctly classified fit images with their successful FGSM (eps 0.3)
    adversarials, and test images: `N_TEST` clean ones and their FGSM adversarials."""
    model, images, labels = correct_digits
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    fit, test = order[:N_FIT], order[N_FIT : N_FIT + N_TEST]
    attack = tracekit.create("attack", "fgsm", eps=0.3, backend="native")
    adversarial = attack.generate(model, images[fit], labels[fit])
    with torch.no_grad():
        adversarial = adversarial[model(adversarial).argmax(1) != labels[fit]]
    test_images = torch.cat([images[test], attack.generate(model, images[test], labels[test])])
    return {"model": model, "fit": images[fit], "fit-adv": adversarial, "test": test_images}


@pytest.fixture(scope="module")
def fitted(digits: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, params in DETECTORS.items():
        detector = tracekit.create("detector", key.removesuffix("-no-noise"), **params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # KD+BU's "no dropout" warning, tested in test_baselines
            detector.fit(digits["model"], digits["fit"], digits["fit-adv"])
        out[key] = detector
    return out


def _stand_in(detector: Any, model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The stand-in's values and their gradient with respect to the images."""
    x = images.clone().requires_grad_()
    values = detector.score_for_attack(model, x)
    (grad,) = torch.autograd.grad(values.sum(), x)
    return values.detach().cpu(), grad


@pytest.mark.parametrize("key", DETECTORS)
def test_stand_in_is_the_score_with_a_gradient(fitted: dict[str, Any], digits: dict[str, Any], key: str) -> None:
    detector, model, images = fitted[key], digits["model"], digits["test"]
    assert isinstance(detector, DifferentiableScore)
    assert len(images) <= detector.batch_size  # `score` sees the same single batch as the stand-in
    values, grad = _stand_in(detector, model, images)
    # The same float32 forward passes and float64 arithmetic on the same batch, with autograd on or
    # off: bit-equal on CPU; the tolerance (float32 round-off) only leaves room for kernels that
    # choose another algorithm when autograd records.
    torch.testing.assert_close(values, detector.score(model, images), rtol=1e-6, atol=1e-6)
    assert values.shape == (len(images),) and values.dtype == torch.float64
    assert grad.shape == images.shape
    assert grad.isfinite().all()
    assert (grad.flatten(1).abs().sum(1) > 0).all(), "an image without gradient"


@pytest.mark.parametrize("key", DETECTORS)
def test_a_step_against_the_stand_ins_gradient_lowers_the_real_score(
    fitted: dict[str, Any], digits: dict[str, Any], key: str
) -> None:
    detector, model, images = fitted[key], digits["model"], digits["test"]
    _, grad = _stand_in(detector, model, images)
    before = detector.score(model, images)
    after = detector.score(model, (images - STEP * grad.sign()).clamp(0, 1))
    assert after.mean() < before.mean()
    assert (after < before).double().mean() > 0.5


@pytest.mark.parametrize("key", ["mahalanobis", "kd-bu"])
def test_stand_in_leaves_the_model_and_random_state_as_they_were(
    fitted: dict[str, Any], digits: dict[str, Any], key: str
) -> None:
    model = digits["model"]
    hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]
    modes, rng = [m.training for m in model.modules()], torch.random.get_rng_state()
    _stand_in(fitted[key], model, digits["test"][:4])
    assert [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()] == hooks
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.random.get_rng_state(), rng)
