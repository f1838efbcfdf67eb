"""`adaptive-entropy`: it lowers the real detector score, evades more than plain PGD, stays in bounds,
leaves the model alone and refuses detectors it cannot attack."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import tracekit
from tracekit.attacks.adaptive_entropy import AdaptiveEntropy
from tracekit.attacks.native import NativePGD
from tracekit.errors import TracekitError

EPS, STEP, ITERS = 0.1, 0.02, 20


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def real_scores(model, detector, adversarial, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """Whether each prediction changed, and each image's real detector score."""
    with torch.no_grad():
        changed = model(adversarial).argmax(1) != labels
    return changed, detector.score(model, adversarial)


def adaptive(detector, threshold: float, lambdas: list[float], **params) -> AdaptiveEntropy:
    params = {"eps": EPS, "eps_step": STEP, "max_iter": ITERS, **params}
    attack = tracekit.create("attack", "adaptive-entropy", lambdas=lambdas, **params)
    attack.bind(detector, threshold)
    return attack


def test_lowers_the_real_score_relative_to_plain_pgd(attacked_digits, detector) -> None:
    model, images, labels, _ = attacked_digits
    plain = NativePGD("inf", EPS, STEP, ITERS).generate(model, images, labels)
    # An unreachable threshold: no image is ever done, so every run keeps lowering the real score.
    blind = adaptive(detector, 0.0, [0.0]).generate(model, images, labels)  # same selection, no surrogate
    aware = adaptive(detector, 0.0, [10.0]).generate(model, images, labels)
    (_, plain_s), (_, blind_s), (changed, aware_s) = (
        real_scores(model, detector, a, labels) for a in (plain, blind, aware)
    )
    assert aware_s.mean() < plain_s.mean() - 0.03  # measured: 0.06 (clean scores' sd is 0.07)
    assert aware_s.mean() < blind_s.mean() - 0.015  # the surrogate's gradient, not just the selection
    assert changed.float().mean() >= 0.75  # while still attacking the classifier


def test_evades_more_than_plain_pgd_at_the_bound_threshold(attacked_digits, detector) -> None:
    model, images, labels, clean = attacked_digits
    threshold = detector.score(model, clean).median().item()  # strict: half the clean images flagged
    plain = NativePGD("inf", EPS, STEP, ITERS).generate(model, images, labels)
    ours = adaptive(detector, threshold, [0.0, 3.0, 10.0]).generate(model, images, labels)
    evasion = []
    for adversarial in (plain, ours):
        changed, score = real_scores(model, detector, adversarial, labels)
        evasion.append((changed & (score <= threshold)).float().mean().item())
    assert evasion[1] > evasion[0] + 0.15  # measured: 0.58 -> 0.92


@pytest.mark.parametrize(("norm", "eps", "random_init"), [("inf", 0.05, False), ("inf", 0.05, True), (2, 0.5, False)])
def test_bounds_hold_and_model_is_untouched(model, batch, detector, norm, eps, random_init) -> None:
    images, labels = batch[0][:12], batch[1][:12]
    threshold = detector.score(model, images).median().item()
    attack = adaptive(detector, threshold, [0.0, 10.0], norm=norm, eps=eps, eps_step=eps / 4, random_init=random_init)
    model = copy.deepcopy(model).train()  # attacked in eval mode, as ART does, then restored
    before = copy.deepcopy(model.state_dict())
    images = images.double()  # returned in the images' dtype
    adversarial = attack.generate(model, images, labels)
    assert adversarial.shape == images.shape and adversarial.dtype == torch.float64
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    delta = (adversarial - images).flatten(1)
    size = delta.abs().amax(1) if norm == "inf" else delta.norm(dim=1)
    assert size.max() <= eps + 1e-6
    assert all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "feature-response", "score": {"name": "global-entropy"}},
        {"name": "feature-response", "saliency": {"name": "gradient"}},
        {"name": "feature-squeezing"},
    ],
    ids=["other-score", "other-saliency", "other-detector"],
)
def test_bind_refuses_detectors_it_cannot_attack(spec) -> None:
    other = tracekit.create("detector", **spec)
    attack = tracekit.create("attack", "adaptive-entropy")
    with pytest.raises(TracekitError, match="adaptive-entropy.*guided-backprop.*local-entropy"):
        attack.bind(other, 1.0)


def test_needs_a_bound_detector_and_a_finite_threshold(detector, tiny) -> None:
    attack = tracekit.create("attack", "adaptive-entropy")
    assert attack.needs_detector is True
    with pytest.raises(TracekitError, match="bind"):
        attack.generate(tiny.module, torch.rand(2, 1, 16, 16), torch.tensor([0, 1]))
    with pytest.raises(TracekitError, match="finite"):
        attack.bind(detector, math.nan)


def test_parameters_are_checked() -> None:
    with pytest.raises(TracekitError, match="lambdas"):
        tracekit.create("attack", "adaptive-entropy", lambdas=[-1.0])
    with pytest.raises(TracekitError, match="eps"):
        tracekit.create("attack", "adaptive-entropy", norm="inf", eps=2.0)
    assert tracekit.create("attack", "adaptive-entropy", norm=2, eps=2.0).eps == 2.0
