"""`adaptive-entropy`: the `adaptive` attack bound to the paper's detector through its own
differentiable surrogate (`tracekit.scores.entropy_surrogate`: guided backprop of a softplus-smoothed
network, soft gray conversion, kernel estimate of the local entropy), with the surrogate's `beta`
and `sigma` as parameters.

It differs from `adaptive` (`tracekit.attacks.adaptive`, which it extends) in four ways kept from
its first version: it attacks only the feature-response detector with guided backprop and local
entropy (what the surrogate models), its surrogate's term applies from the first step, not only
to misclassified images, its step is fixed, and its `lambdas` weigh the raw gradients, `g_margin +
lambda * g_surrogate` (on digits-cnn the surrogate's input gradient is about 1/25 of the margin's,
hence its default lambdas up to 30), where `adaptive` weighs unit-norm ones. The surrogate's map is
taken for the model's current prediction. Its factory is in `tracekit.attacks.factories`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import TracekitError
from ..scores.entropy_surrogate import DEFAULT_BETA, DEFAULT_SIGMA, surrogate_score
from .adaptive import Adaptive


class AdaptiveEntropy(Adaptive):
    """`adaptive` on the local-entropy surrogate of the paper's detector (see the module)."""

    name = "adaptive-entropy"

    def __init__(
        self,
        norm: float | str,
        eps: float,
        eps_step: float,
        max_iter: int,
        lambdas: list[float],
        beta: float = DEFAULT_BETA,
        sigma: float = DEFAULT_SIGMA,
        confidence: float = 1.0,
        random_init: bool = False,
        batch_size: int = 64,
    ) -> None:
        super().__init__(norm, eps, eps_step, max_iter, lambdas, confidence, 1, random_init, batch_size)
        self.beta, self.sigma = beta, sigma

    def accepts(self, detector: Any) -> None:
        """Only the feature-response detector with guided backprop and local entropy."""
        from ..detectors.feature_response import FeatureResponse
        from ..saliency.guided_backprop import GuidedBackprop
        from ..scores.entropy import LocalEntropy

        parts = (detector.saliency, detector.scorer) if isinstance(detector, FeatureResponse) else ()
        if not (parts and isinstance(parts[0], GuidedBackprop) and isinstance(parts[1], LocalEntropy)):
            got = " + ".join(type(p).__name__ for p in parts) or type(detector).__name__
            raise TracekitError(
                f"attack 'adaptive-entropy' can only attack the feature-response detector with saliency "
                f"guided-backprop and score local-entropy (its surrogate models exactly that), got {got}; "
                "use `adaptive`, which attacks any detector with a differentiable stand-in"
            )

    def stand_in(self, model: nn.Module, images: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
        return surrogate_score(model, images, predicted, self.detector.scorer.size, self.beta, self.sigma)

    gated = False  # its surrogate's term applies from the first step, as in its first version
    schedules = (False,)  # a fixed step, as in its first version

    def combine(self, margin: torch.Tensor, score: torch.Tensor, lam: float) -> torch.Tensor:
        return margin + lam * score
