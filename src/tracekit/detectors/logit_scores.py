"""Post-hoc scores of the classifier's logits, the out-of-distribution baselines OpenOOD standardized,
run against adversarial inputs: `msp`, `energy` and `odin`. Unsupervised: nothing is learned, the
engine calibrates the threshold on clean fit images. Higher = more likely adversarial.

- `msp` (Hendrycks and Gimpel, ICLR 2017): minus the maximum softmax probability.
- `energy` (Liu, Wang, Owens and Li, NeurIPS 2020): the free energy `-T logsumexp(f(x) / T)` of the
  logits `f(x)` at temperature `T` (the paper's 1).
- `odin` (Liang, Li and Srikant, ICLR 2018): minus the maximum softmax probability at temperature
  `T` (the paper's 1000) of the input moved a step `noise` (0.0014, the value OpenOOD uses) up the
  gradient of that probability's log: `x' = x - noise * sign(-grad_x log S_y(x; T))`, `y` the
  predicted class. Departure: the step is in [0, 1] pixel space (tracekit's models take [0, 1]
  images and fold their normalization in); the paper's code divides the gradient by the
  normalization's standard deviations, a step of `noise / std` in pixels. `x'` is not clipped, as
  in the paper.

Softmax probabilities and the energy are computed in float64 from the model's logits: at `T = 1000`
the probabilities differ from `1 / classes` by about 1e-4, beyond float32's resolution for ranking.

Adaptive attacks (`DifferentiableScore.score_for_attack`): each score itself with autograd (equal
forward). ODIN's step is a sign: its derivative is zero wherever it exists, so the stand-in keeps the
step's direction as a constant and its gradient is the score's at `x'` (as Mahalanobis's).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

from .layers import model_device


class _LogitScore(ABC):
    """Unsupervised: `score` is `score_for_attack` without autograd."""

    needs_adversarial_fit = False

    def fit(
        self,
        model: nn.Module,
        clean_fit_images: torch.Tensor,
        adversarial_fit_images: torch.Tensor | None = None,
    ) -> None:
        """Nothing to learn: the engine calibrates the threshold on clean fit scores."""

    def score(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._score(model, images.to(model_device(model)))

    def score_for_attack(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The score with autograd through `images` (`DifferentiableScore`): the same value."""
        return self._score(model, images.to(model_device(model)))

    @abstractmethod
    def _score(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The score `[N]` of `images` (on the model's device) under the caller's grad mode."""


class MaxSoftmax(_LogitScore):
    """`-max_c softmax(f(x))_c`."""

    def _score(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return -model(images).double().softmax(1).amax(1)


class Energy(_LogitScore):
    """`-T logsumexp(f(x) / T)`."""

    def __init__(self, temperature: float) -> None:
        self.temperature = temperature

    def _score(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return -self.temperature * torch.logsumexp(model(images).double() / self.temperature, dim=1)


class Odin(_LogitScore):
    """`-max_c softmax(f(x') / T)_c` with `x'` the input moved `noise` up its log-probability."""

    def __init__(self, temperature: float, noise: float) -> None:
        self.temperature, self.noise = temperature, noise

    def _score(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        x = images
        if self.noise > 0:
            probe = images.detach().requires_grad_()
            with torch.enable_grad():
                logits = model(probe).double() / self.temperature
                loss = F.cross_entropy(logits, logits.argmax(1), reduction="sum")  # -log S_y(x; T)
                (grad,) = torch.autograd.grad(loss, probe)
            x = images - self.noise * grad.sign()
        return -(model(x).double() / self.temperature).softmax(1).amax(1)
