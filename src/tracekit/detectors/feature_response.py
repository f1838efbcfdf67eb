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
from ..protocols import DifferentiableMapScore, DifferentiableMaps, LoadedModel, ModelChecked, ScoreMap


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


class DifferentiableFeatureResponse(FeatureResponse):
    """The detector built of a saliency method with differentiable maps (`DifferentiableMaps`) and
    a score with a differentiable stand-in (`DifferentiableMapScore`), so with a differentiable
    stand-in of its own score (`DifferentiableScore`) for adaptive attacks: the score's stand-in of
    the method's maps. For the built-ins: the maps of a softplus-smoothed network
    (`tracekit.saliency.smoothed`; second order through the saliency), then the entropy surrogates
    (`tracekit.scores.entropy_surrogate`). The factory picks it when both parts offer theirs; a
    third-party part without gives the plain detector, which adaptive attacks refuse rather than
    attack through a weaker stand-in."""

    saliency: DifferentiableMaps
    scorer: DifferentiableMapScore

    def score_for_attack(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return self.scorer.score_for_attack(self.saliency.maps_for_attack(model, images))
