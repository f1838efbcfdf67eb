"""Deep nearest neighbours (Sun, Ming, Zhu and Li, ICML 2022): the distance from an input's
normalized penultimate feature to its `k`-th nearest neighbour among the clean fit images'.

`z = phi(x) / |phi(x)|` with `phi` the input of the classifier's final linear layer
(`tracekit.detectors.head`); the score is `|z - z_(k)|`, the Euclidean distance to the k-th
nearest normalized fit feature (higher = farther from the clean images = more likely
adversarial). `k` defaults to the paper's 50 (its CIFAR-10 setting, with the whole training set as
the bank); the bank here is the clean fit images, and each fit (the engine's cross-fitting fits
copies on all but one of `calibration.folds` folds) needs more than `k` of them. The paper's faiss search is exact
brute force here (`torch.cdist`): fit sets are thousands of images, not millions.

Adaptive attacks (`DifferentiableScore.score_for_attack`): the score itself with autograd through
the input (distances to the fixed bank; the k-th smallest passes its gradient to the selected
neighbour's distance): equal forward.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import TracekitError
from ..protocols import LoadedModel
from .head import find_head, penultimate
from .layers import batches, check_hookable, model_device, scores_in_batches

WHERE = "detector 'knn'"


class DeepKNN:
    """Distance to the k-th nearest normalized penultimate feature of the clean fit images."""

    needs_adversarial_fit = False

    def __init__(self, k: int, batch_size: int) -> None:
        self.k, self.batch_size = k, batch_size
        self.head = ""
        self.bank = torch.empty(0)

    def check_model(self, model: LoadedModel) -> None:
        """Its features come from a forward hook on the model's head (`ModelChecked`)."""
        check_hookable(model.module, None)

    def fit(
        self,
        model: nn.Module,
        clean_fit_images: torch.Tensor,
        adversarial_fit_images: torch.Tensor | None = None,
    ) -> None:
        """The normalized penultimate features of the clean fit images: the bank."""
        if len(clean_fit_images) <= self.k:
            raise TracekitError(
                f"{WHERE}: k={self.k} needs more than {self.k} clean fit images, got {len(clean_fit_images)} "
                "(the engine's calibration fits copies on all but one of its `calibration.folds` folds); "
                "lower k or use more images"
            )
        device = model_device(model)
        self.head = find_head(model, clean_fit_images[:2].to(device), WHERE)
        with torch.no_grad():
            parts = [self._normalized(model, batch) for batch in batches(clean_fit_images, self.batch_size, device)]
        self.bank = torch.cat(parts)

    def _normalized(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        features, _ = penultimate(model, images, self.head, WHERE)
        return nn.functional.normalize(features.double(), dim=1)

    def score(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return scores_in_batches(self._distance, model, images, self.batch_size)

    def score_for_attack(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """`score` with autograd through `images` (`DifferentiableScore`), the whole batch at once."""
        return self._distance(model, images.to(model_device(model)))

    def _distance(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        distances = torch.cdist(self._normalized(model, images), self.bank.to(images.device))
        return distances.kthvalue(self.k, dim=1).values

    def state_dict(self) -> dict[str, Any]:
        return {"head": self.head, "bank": self.bank}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.head, self.bank = str(state["head"]), state["bank"]
