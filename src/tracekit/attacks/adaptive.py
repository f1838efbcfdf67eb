"""`adaptive`: white-box PGD against the classifier AND the detector it is bound to (Carlini and
Wagner 2017; Athalye et al. 2018; Tramer et al. 2020), for any detector with a differentiable
stand-in of its score (`tracekit.protocols.DifferentiableScore`).

Each step (sign step for L-inf, normalized for L2, projected into the eps ball and [0, 1])
descends `margin` and `lambda` times the detector's stand-in score. `margin = max(z_true -
max_other z, -confidence)` is C&W's margin on the logits: it pushes the prediction off the true
class and stops pulling `confidence` past the boundary, so once an image is misclassified the
step spends itself on the detector (a loss that stopped at misclassification would not evade).
The two gradients are combined per image after each is scaled to unit L2 norm, `g_margin / |g_margin|
+ lambda * g_score / |g_score|`, so `lambda` means the same for every detector whatever the units
of its score (a stand-in with no gradient for an image leaves only the margin's). The score's term
applies to an image only while the model misclassifies it: before that a detector's gradient can
point back to the true class (the confidence that MSP, energy and ODIN reward is the predicted
class's, and a correctly classified image's predicted class is the true one; applied from the
first step it kept every scene correctly classified against MSP), so the margin alone takes the
image across the boundary and the score's term then lowers the score on the wrong side of it.
`lambda = 0` is plain PGD on the cross-entropy (as `pgd`), so the search always contains the
detector-blind attack.

Each `lambda` > 0 runs twice, on the images that do not evade yet: with the fixed step
(`eps_step` for L-inf, its L2 length otherwise), then with a step that halves at each quarter of
`max_iter` (`eps_step`, 1/2, 1/4, 1/8), as APGD (Croce and Hein 2020) halves its step when
progress stalls, here on a fixed schedule so that an image's path never depends on its batch.
Neither schedule is best for every detector. A detector of the input's statistics needs the fine
steps: on 32 digit scenes at NSS's 5%-FPR threshold (L-inf 0.1, 50 steps of 0.01), `adaptive`
evaded NSS on 6% with the fixed step alone and on 97% with the halving one alone. On all 156 test
scenes of examples/adaptive.yaml the halving one alone evaded the paper's detector on 97% and
feature squeezing on 64%, the fixed one alone on 100% and 67%.

Decisions use the REAL detector (BPDA style: stand-in for gradients, real score for decisions).
Every iterate is judged; an image's candidate is its misclassified iterate of lowest real score.
`lambdas` are tried in order, each a fresh PGD run (per restart) on the images whose candidate does
not evade yet (misclassified with real score at most the bound threshold, the engine's success);
a later run replaces a candidate only with a lower score. Restart 0 starts at the clean image
(with `random_init`, as restarts 1.. do, at a random point of the eps ball, counter-based from the
image's seed: `SeededAttack`, an image's adversarial never depends on its batch). An image never
misclassified gets the first run's last iterate.

The engine builds it after the detector is fitted and calibrated: `needs_detector = True`, then
`bind(detector, threshold)`, then `generate_seeded` in batches. Cost per step and image: one real
score, one forward and backward of the model for the margin, and the stand-in's own gradient
(for the paper's detector a second-order backward through the model).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..counters import uniforms
from ..errors import TracekitError
from ..protocols import DifferentiableScore
from .native import evaluating, norm_order, project, to_model_device, unit_step

GRAIN = 1e-12  # below this a gradient counts as none
STEP_HALVINGS = 4  # a run's step: eps_step, then half, a quarter, an eighth, each for a quarter of max_iter


class Adaptive:
    """PGD on `margin + lambda * stand-in score`, judged by the bound detector's real score."""

    needs_detector = True
    name = "adaptive"
    gated = True  # the score's term only for misclassified images (see the module)
    schedules = (False, True)  # a run's step: fixed, then halving (see the module)

    def __init__(
        self,
        norm: float | str,
        eps: float,
        eps_step: float,
        max_iter: int,
        lambdas: list[float],
        confidence: float = 1.0,
        restarts: int = 1,
        random_init: bool = False,
        batch_size: int = 64,
    ) -> None:
        self.norm, self.eps, self.eps_step, self.max_iter = norm_order(norm), eps, eps_step, max_iter
        self.lambdas, self.confidence, self.restarts, self.batch_size = list(lambdas), confidence, restarts, batch_size
        self.random_init = random_init
        self.detector: Any = None
        self.threshold = math.nan

    def bind(self, detector: Any, threshold: float) -> None:
        """Attack `detector` at its calibrated `threshold`; it must offer a differentiable stand-in."""
        self.accepts(detector)
        if not math.isfinite(threshold):
            raise TracekitError(f"attack '{self.name}': the detector's threshold must be finite, got {threshold}")
        self.detector, self.threshold = detector, float(threshold)

    def accepts(self, detector: Any) -> None:
        """`TracekitError` unless this attack can attack `detector` (checked before any work)."""
        if not isinstance(detector, DifferentiableScore):
            raise TracekitError(
                f"attack '{self.name}' needs a detector with a differentiable stand-in of its score "
                f"(score_for_attack, the DifferentiableScore capability); {type(detector).__name__} has none, "
                "so no adaptive attack is available for it (docs/plugins.md says how a detector provides one)"
            )

    def stand_in(self, model: nn.Module, images: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
        """The differentiable stand-in of the bound detector's score (`predicted`: the model's
        current predictions, for stand-ins that need them)."""
        return self.detector.score_for_attack(model, images)

    def generate(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Adversarial versions of `images` in [0, 1] (same shape, device and dtype); restarts are
        seeded by position (the engine calls `generate_seeded` with per-image seeds)."""
        return self.generate_seeded(model, images, labels, torch.arange(len(images)))

    def generate_seeded(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, seeds: torch.Tensor
    ) -> torch.Tensor:
        if self.detector is None:
            raise TracekitError(
                f"attack '{self.name}' needs the detector it attacks: call bind(detector, threshold) before "
                "generate (a run spec's engine does this after calibration)"
            )
        x = to_model_device(model, images)
        labels = labels.to(x.device)
        with evaluating(model):
            batches = zip(x.split(self.batch_size), labels.split(self.batch_size), seeds.split(self.batch_size))
            parts = [self._attack(model, xs, ys, ss) for xs, ys, ss in batches]
        return torch.cat(parts).to(images) if parts else images.clone()

    def _attack(self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """The search on one batch: per image the misclassified iterate of lowest real score."""
        kept = x.clone()
        best = torch.full((len(x),), math.inf, dtype=torch.float64, device=x.device)
        first = True
        for restart in range(self.restarts):
            start = x if restart == 0 and not self.random_init else self._random_starts(x, seeds, restart)
            for lam, halving in self._runs():
                rows = (best > self.threshold).nonzero().squeeze(1)  # not yet evading
                if len(rows) == 0:
                    return kept
                found, scores, last = self._run(model, x[rows], start[rows], labels[rows], lam, halving)
                better = scores < best[rows]
                kept[rows[better]], best[rows[better]] = found[better], scores[better]
                if first:
                    never = best[rows] == math.inf
                    kept[rows[never]] = last[never]
                    first = False
        return kept

    def _random_starts(self, clean: torch.Tensor, seeds: torch.Tensor, restart: int) -> torch.Tensor:
        """A random point of the eps ball around each image (uniform for L-inf and L2; for L1 an
        L2 point projected), counter-based from the image's seed and the restart number
        (`tracekit.counters`): the same alone or in any batch."""
        keys, size = seeds.to(torch.int64).cpu(), clean[0].numel()
        if self.norm == math.inf:
            delta = (uniforms(keys, size, 0, restart, 0) * 2 - 1) * self.eps
        else:  # Box-Muller normals for the direction, u^(1/d) for the radius
            u1, u2 = uniforms(keys, size, 0, restart, 1), uniforms(keys, size, 0, restart, 2)
            normal = (-2 * torch.log1p(-u1)).sqrt() * torch.cos(2 * math.pi * u2)
            radius = self.eps * uniforms(keys, 1, 0, restart, 3) ** (1 / size)
            delta = normal / normal.norm(dim=1, keepdim=True).clamp(min=GRAIN) * radius
        delta = project(delta.view_as(clean).to(clean), self.eps, self.norm)
        return (clean + delta).clamp(0, 1)

    def _runs(self) -> list[tuple[float, bool]]:
        """The PGD runs of one start, in order: each lambda with each step schedule of `schedules`
        (lambda 0, plain PGD, with the fixed step only)."""
        return [(lam, halving) for lam in self.lambdas for halving in self.schedules if not (lam == 0 and halving)]

    def _run(
        self,
        model: nn.Module,
        clean: torch.Tensor,
        start: torch.Tensor,
        labels: torch.Tensor,
        lam: float,
        halving: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One PGD run from `start`: each image's misclassified iterate of lowest real score (score
        inf where none was misclassified), those scores, and the last iterates."""
        adversarial = start
        found = clean.clone()
        lowest = torch.full((len(clean),), math.inf, dtype=torch.float64, device=clean.device)
        for step in range(self.max_iter + 1):
            predicted, scores = self._judge(model, adversarial)
            better = (predicted != labels) & (scores < lowest)
            found[better], lowest[better] = adversarial[better], scores[better]
            if step == self.max_iter:
                break
            grad = self._direction(model, adversarial, labels, predicted, lam)
            size = self.eps_step * (0.5 ** (STEP_HALVINGS * step // self.max_iter) if halving else 1.0)
            moved = (adversarial - size * unit_step(grad, self.norm)).clamp(0, 1)
            adversarial = clean + project(moved - clean, self.eps, self.norm)
        return found, lowest, adversarial

    def _judge(self, model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's predictions and the detector's real scores."""
        with torch.no_grad():
            predicted = model(images).argmax(1)
        return predicted, self.detector.score(model, images).detach().to(torch.float64)

    def _direction(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, predicted: torch.Tensor, lam: float
    ) -> torch.Tensor:
        """The descent direction: of `-CE` when `lam` is 0, else of the margin and the stand-in
        (`combine`)."""
        images = images.detach().requires_grad_(True)
        logits = model(images)
        if lam == 0:
            (grad,) = torch.autograd.grad(-F.cross_entropy(logits, labels, reduction="sum"), images)
            return grad
        true = logits.gather(1, labels[:, None]).squeeze(1)
        other = logits.scatter(1, labels[:, None], -math.inf).amax(1)
        (margin,) = torch.autograd.grad((true - other).clamp(min=-self.confidence).sum(), images)
        wrong = predicted != labels
        if self.gated and not wrong.any():  # no image misclassified yet: no score term for any
            return self.combine(margin, torch.zeros_like(margin), lam)
        stand_in = self.stand_in(model, images, predicted)
        (score,) = torch.autograd.grad(stand_in.sum(), images)
        if self.gated:  # the score's term only for the images misclassified now (see the module)
            score = score * wrong.to(score.dtype).view(-1, *([1] * (score.dim() - 1)))
        return self.combine(margin, score, lam)

    def combine(self, margin: torch.Tensor, score: torch.Tensor, lam: float) -> torch.Tensor:
        """`margin / |margin| + lam * score / |score|`, per image (see the module)."""
        return _unit(margin) + lam * _unit(score)


def _unit(grad: torch.Tensor) -> torch.Tensor:
    """Each image's gradient scaled to unit L2 norm (zero stays zero)."""
    norms = grad.flatten(1).norm(dim=1).clamp(min=GRAIN)
    return grad / norms.view(-1, *([1] * (grad.dim() - 1)))
