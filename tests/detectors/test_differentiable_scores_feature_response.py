"""The feature-response detector's differentiable stand-ins (`DifferentiableScore`, for adaptive
attacks), for every built-in saliency method and score: the score's stand-in of the method's maps of
a softplus-smoothed network (`DifferentiableMaps`, `DifferentiableMapScore`). Each ranks images as
the real score does, has a gradient for every image, and small steps against it lower the real
score. A part without the capability gives a detector without a stand-in."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from scipy.stats import spearmanr

import tracekit
from tracekit import hookimpl, plugins
from tracekit.attacks.native import NativeFastGradient
from tracekit.protocols import DifferentiableMaps, DifferentiableScore
from tracekit.saliency.gradient import Gradient
from tracekit.scores.entropy_surrogate import surrogate_score

SALIENCY = {  # fewer path steps and noisy copies than the defaults keep the test fast
    "guided-backprop": {"name": "guided-backprop"},
    "gradient": {"name": "gradient"},
    "integrated-gradients": {"name": "integrated-gradients", "steps": 8},
    "smoothgrad": {"name": "smoothgrad", "n_samples": 4},
    "smoothgrad-of-gradient": {"name": "smoothgrad", "n_samples": 4, "base": {"name": "gradient"}},
}
SCORES = ["local-entropy", "global-entropy"]


@pytest.fixture(scope="module")
def varied(correct_digits) -> tuple[torch.nn.Module, torch.Tensor]:
    """digits-cnn and 48 images whose scores vary: 16 clean, 16 FGSM (0.1), 16 sign noise (0.1)."""
    model, images, labels = correct_digits
    images, labels = images[:48], labels[:48]
    signs = torch.randint(0, 2, (16, *images.shape[1:]), generator=torch.Generator().manual_seed(5)) * 2 - 1
    fgsm = NativeFastGradient("inf", 0.1).generate(model, images[16:32], labels[16:32])
    return model, torch.cat([images[:16], fgsm, (images[32:] + 0.1 * signs).clamp(0, 1)])


def detector(saliency: str, score: str) -> Any:
    return tracekit.create("detector", "feature-response", saliency=SALIENCY[saliency], score={"name": score})


@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("saliency", list(SALIENCY))
def test_the_stand_in_ranks_like_the_score_and_has_a_gradient(varied, saliency, score):
    model, images = varied
    found = detector(saliency, score)
    assert isinstance(found, DifferentiableScore)
    x = images.clone().requires_grad_(True)
    stand_in = found.score_for_attack(model, x)
    real = found.score(model, images)
    assert real.std() > 0.01  # the scores do vary
    assert spearmanr(stand_in.detach().numpy(), real.numpy()).statistic > 0.85
    (grad,) = torch.autograd.grad(stand_in.sum(), x)
    assert torch.isfinite(grad).all() and (grad.flatten(1).norm(dim=1) > 0).all()


@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("saliency", list(SALIENCY))
def test_small_steps_against_it_lower_the_real_score(varied, saliency, score):
    model, images = varied
    found, x = detector(saliency, score), images[:16]
    before = found.score(model, x).mean()
    for _ in range(4):
        moved = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(found.score_for_attack(model, moved).sum(), moved)
        x = (x - 0.002 * grad.sign()).clamp(0, 1)
    assert found.score(model, x).mean() < before


def test_the_papers_stand_in_is_the_entropy_surrogate(varied):
    model, images = varied
    ours = detector("guided-backprop", "local-entropy").score_for_attack(model, images)
    torch.testing.assert_close(ours, surrogate_score(model, images), rtol=0, atol=0)


class _PlainGradient:
    """A third party's saliency method without differentiable maps."""

    def maps(self, model, images, target=None):
        return Gradient().maps(model, images, target)


class _Plugin:
    @hookimpl
    def tracekit_register_saliency(self, register):
        register("plain-gradient", lambda: _PlainGradient())


@pytest.fixture
def plain_gradient():
    plugins.register_plugin(_Plugin(), "stand-in-test")
    yield
    plugins.unregister_plugin("stand-in-test")


@pytest.mark.parametrize(
    "saliency", [{"name": "plain-gradient"}, {"name": "smoothgrad", "base": {"name": "plain-gradient"}}]
)
def test_a_part_without_the_capability_gives_no_stand_in(plain_gradient, saliency):
    found = tracekit.create("detector", "feature-response", saliency=saliency)
    assert not isinstance(found.saliency, DifferentiableMaps)
    assert not isinstance(found, DifferentiableScore)
