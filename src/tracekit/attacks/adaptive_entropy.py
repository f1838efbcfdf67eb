"""`adaptive-entropy`: white-box PGD against the classifier AND the paper's detector (Tramer et al. 2020).

Each step (sign step for L-inf, normalized for L2, projected into the eps ball and [0, 1]) descends
`margin + lambda * surrogate`: `margin = max(z_true - max_other z, -confidence)` is C&W's margin on
the logits (pushes the prediction off the true class and stops pulling `confidence` past the
boundary; its gradient does not vanish when the softmax saturates, so the two terms stay
comparable), and `surrogate` is `tracekit.scores.entropy_surrogate`'s differentiable stand-in for
the detector's score (guided backprop of a softplus-smoothed network, soft gray conversion, kernel
estimate of the local entropy; see that module). `lambda = 0` is plain PGD on the cross-entropy
(as `pgd`), so the search always contains the detector-blind attack.

Decisions use the REAL detector (BPDA style: surrogate for gradients, real score for decisions).
Every iterate of a run is judged; an image's candidate is its misclassified iterate of lowest
real score. `lambdas` are tried in the given order, each a fresh PGD run on the images whose
candidate does not yet evade (misclassified with real score at most the bound threshold, the
engine's success); a later run replaces a candidate only with a lower score. An image never
misclassified gets the first run's last iterate.

The engine builds it after the detector is fitted and calibrated: `needs_detector = True`, then
`bind(detector, threshold)`, then `generate` in batches. Cost per step and image: one real score
(guided backprop + entropy) and, for lambda > 0, a second-order backward through the model.
Its factory (`adaptive_entropy`, with the default `lambdas`) is in `tracekit.attacks.factories`.
"""

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import TracekitError
from ..scores.entropy_surrogate import DEFAULT_BETA, DEFAULT_SIGMA, surrogate_score
from .native import evaluating, norm_order, project, random_in_ball, to_model_device, unit_step


class AdaptiveEntropy:
    """PGD on `margin + lambda * entropy surrogate`, judged by the bound detector's real score."""

    needs_detector = True

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
        self.norm, self.eps, self.eps_step, self.max_iter = norm_order(norm), eps, eps_step, max_iter
        self.lambdas, self.beta, self.sigma, self.confidence = list(lambdas), beta, sigma, confidence
        self.random_init, self.batch_size = random_init, batch_size
        self.detector: Any = None
        self.threshold = math.nan

    def bind(self, detector: Any, threshold: float) -> None:
        """Attack `detector` (guided backprop scored by local entropy) at its calibrated `threshold`."""
        from ..detectors.feature_response import FeatureResponse
        from ..saliency.guided_backprop import GuidedBackprop
        from ..scores.entropy import LocalEntropy

        parts = (detector.saliency, detector.scorer) if isinstance(detector, FeatureResponse) else ()
        if not (parts and isinstance(parts[0], GuidedBackprop) and isinstance(parts[1], LocalEntropy)):
            got = " + ".join(type(p).__name__ for p in parts) or type(detector).__name__
            raise TracekitError(
                f"attack 'adaptive-entropy' can only attack the feature-response detector with saliency "
                f"guided-backprop and score local-entropy (its surrogate models exactly that), got {got}; "
                "use that detector, or a detector-agnostic attack such as pgd"
            )
        if not math.isfinite(threshold):
            raise TracekitError(f"attack 'adaptive-entropy': the detector's threshold must be finite, got {threshold}")
        self.detector, self.threshold = detector, float(threshold)

    def generate(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Adversarial versions of `images` in [0, 1] (same shape, device and dtype)."""
        if self.detector is None:
            raise TracekitError(
                "attack 'adaptive-entropy' needs the detector it attacks: call bind(detector, threshold) "
                "before generate (a run spec's engine does this after calibration)"
            )
        x = to_model_device(model, images)
        labels = labels.to(x.device)
        with evaluating(model):
            batches = zip(x.split(self.batch_size), labels.split(self.batch_size))
            parts = [self._attack(model, xs, ys) for xs, ys in batches]
        return torch.cat(parts).to(images) if parts else images.clone()

    def _attack(self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The lambda search on one batch: per image the misclassified iterate of lowest real score."""
        kept = x.clone()
        best = torch.full((len(x),), math.inf, dtype=torch.float64, device=x.device)
        for i, lam in enumerate(self.lambdas):
            rows = (best > self.threshold).nonzero().squeeze(1)  # not yet evading
            if len(rows) == 0:
                break
            found, scores, last = self._run(model, x[rows], labels[rows], lam)
            better = scores < best[rows]
            kept[rows[better]], best[rows[better]] = found[better], scores[better]
            if i == 0:
                never = best[rows] == math.inf
                kept[rows[never]] = last[never]
        return kept

    def _run(
        self, model: nn.Module, clean: torch.Tensor, labels: torch.Tensor, lam: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One PGD run: each image's misclassified iterate of lowest real score (score inf where
        none was misclassified), those scores, and the last iterates."""
        adversarial = clean
        if self.random_init:
            adversarial = (clean + random_in_ball(clean, self.eps, self.norm)).clamp(0, 1)
        found = clean.clone()
        lowest = torch.full((len(clean),), math.inf, dtype=torch.float64, device=clean.device)
        for step in range(self.max_iter + 1):
            predicted, scores = self._judge(model, adversarial)
            better = (predicted != labels) & (scores < lowest)
            found[better], lowest[better] = adversarial[better], scores[better]
            if step == self.max_iter:
                break
            grad = self._gradient(model, adversarial, labels, predicted, lam)
            moved = (adversarial - self.eps_step * unit_step(grad, self.norm)).clamp(0, 1)
            adversarial = clean + project(moved - clean, self.eps, self.norm)
        return found, lowest, adversarial

    def _judge(self, model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's predictions and the detector's real scores."""
        with torch.no_grad():
            predicted = model(images).argmax(1)
        return predicted, self.detector.score(model, images).to(torch.float64)

    def _gradient(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, target: torch.Tensor | None, lam: float
    ) -> torch.Tensor:
        """Input gradient of `margin + lam * surrogate` (map of class `target`); of `-CE` when `lam` is 0."""
        images = images.detach().requires_grad_(True)
        logits = model(images)
        if lam == 0:
            loss = -F.cross_entropy(logits, labels, reduction="sum")
        else:
            true = logits.gather(1, labels[:, None]).squeeze(1)
            other = logits.scatter(1, labels[:, None], -math.inf).amax(1)
            surrogate = surrogate_score(model, images, target, self.detector.scorer.size, self.beta, self.sigma)
            loss = ((true - other).clamp(min=-self.confidence) + lam * surrogate).sum()
        (grad,) = torch.autograd.grad(loss, images)
        return grad
