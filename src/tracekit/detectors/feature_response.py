"""The paper's detector: a saliency method composed with a score (default: guided backprop
scored by mean 3x3 local entropy). It learns nothing; the engine calibrates its threshold
on clean fit images."""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from ..checks import checked, component
from ..errors import TracekitError
from ..protocols import LoadedModel, ModelChecked, ScoreMap


class FeatureResponse:
    """Score = `score(saliency(model, images))`; higher means more likely adversarial."""

    needs_adversarial_fit = False

    def __init__(self, saliency: Any, score: Any, names: tuple[str, str] = ("saliency", "score")) -> None:
        """`names`: the saliency method's and the score's registered names (for messages)."""
        self.saliency = saliency
        self.scorer = score
        self.names = names

    def fit(
        self,
        model: nn.Module,
        clean_fit_images: torch.Tensor,
        adversarial_fit_images: torch.Tensor | None = None,
    ) -> None:
        """Nothing to learn: the threshold is calibrated by the engine on clean fit scores."""

    def check_model(self, model: LoadedModel) -> None:
        """What its saliency method and score need of the model (`ModelChecked`), named."""
        for part, who in zip((self.saliency, self.scorer), self._who):
            if isinstance(part, ModelChecked):
                try:
                    part.check_model(model)
                except TracekitError as exc:
                    raise TracekitError(f"its {who}: {exc}") from None

    @functools.cached_property
    def _who(self) -> tuple[str, str]:
        """The saliency method and the score, as messages name them (looked up once)."""
        return component("saliency", self.names[0]), component("score", self.names[1])

    def maps(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The feature response maps `[N,C,H,W]` (predicted class), checked."""
        n, _, height, width = images.shape
        maps = self.saliency.maps(model, images)
        return checked(maps, self._who[0], (n, None, height, width), "maps")

    def score_map(self, maps: torch.Tensor) -> torch.Tensor | None:
        """The score's per-pixel picture of `maps` (`ScoreMap`), None when its score has none."""
        return self.scorer.map(maps) if isinstance(self.scorer, ScoreMap) else None

    def score(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        scores = self.scorer.score(self.maps(model, images))
        return checked(scores, self._who[1], (len(images),), "scores")


class EntropyFeatureResponse(FeatureResponse):
    """The paper's detector proper (guided backprop scored by local entropy), with a differentiable
    stand-in of its score (`DifferentiableScore`) for adaptive attacks: the surrogate of
    `tracekit.scores.entropy_surrogate` (softplus-smoothed guided backprop, soft gray conversion,
    kernel estimate of the window entropy) at its default smoothing, for the predicted class. Other
    saliency methods and scores have no stand-in yet: their real scores pass through 8-bit
    quantization and ReLU masks with no useful gradient, and a weak stand-in would certify them."""

    def score_for_attack(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        from ..scores.entropy_surrogate import surrogate_score

        return surrogate_score(model, images, None, self.scorer.size)
