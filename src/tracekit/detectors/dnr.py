"""Deep neural rejection, DNR (Sotgiu, Demontis, Melis, Biggio, Fumera, Feng and Roli, "Deep neural
rejection against adversarial examples", EURASIP J. Inf. Security 2020): RBF support vector
machines on the last layers' representations, combined by another, and an input is rejected when
its highest combined class score is low.

Per layer l of the last three hidden layer outputs (flattened, `layers` to choose others), one
one-vs-all RBF SVM per class c gives `s_lc(x)`; a combiner, one one-vs-all RBF SVM per class on the
concatenated `[s_lc(x)]`, gives `s_c(x)`. The score is `-max_c s_c(x)` (higher = more likely
adversarial): DNR's reject option, calibrated like any score. Fitted on clean fit images only, with
the model's predicted classes as labels (what exists at score time); as in the paper, the layer
machines and the combiner learn from disjoint halves of them (a seeded split), so the combiner sees
the layer machines' scores on images they were not fitted on.

Departures: the paper tunes each machine's C and gamma by cross-validation; here C = 1 and scikit-
learn's `gamma="scale"` (`tracekit.detectors.svm`), on standardized features. A class with fewer
than 2 images (or fewer than 2 others) in either half gets no machines, and is left out of every
max and concatenation: with few fit images, rarely predicted classes cannot be modelled.

Adaptive attacks (`DifferentiableScore.score_for_attack`): the score itself with autograd through
the input (activations, RBF kernels and the max are differentiable): equal forward.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import TracekitError
from ..protocols import LoadedModel
from .layers import (
    check_hookable,
    features_in_batches,
    flatten,
    layer_features,
    model_device,
    resolve_layers,
    scores_in_batches,
)
from .svm import RBFMachine

WHERE = "detector 'dnr'"
DEFAULT_LAYER_COUNT = 3
MIN_PER_SIDE = 2


class DeepNeuralRejection:
    """Per-layer one-vs-all RBF SVMs, a combiner over their scores, `-max` class score."""

    needs_adversarial_fit = False

    def __init__(self, layers: list[str] | None, batch_size: int, seed: int) -> None:
        self.layers, self.batch_size, self.seed = layers, batch_size, seed
        self.layers_: list[str] = []
        self.classes: list[int] = []
        self.per_layer: list[list[RBFMachine]] = []
        self.combiner: list[RBFMachine] = []

    def check_model(self, model: LoadedModel) -> None:
        """Its features come from forward hooks on the model's layers (`ModelChecked`)."""
        check_hookable(model.module, self.layers)

    def _layer_scores(self, activations: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(
            [
                torch.stack([m.decision_torch(a) for m in machines], 1)
                for a, machines in zip(activations, self.per_layer)
            ],
            1,
        )

    def fit(
        self,
        model: nn.Module,
        clean_fit_images: torch.Tensor,
        adversarial_fit_images: torch.Tensor | None = None,
    ) -> None:
        """Layer machines on one half of the clean fit images, the combiner on the other."""
        device = model_device(model)
        self.layers_ = resolve_layers(model, self.layers, clean_fit_images[:2].to(device), DEFAULT_LAYER_COUNT, WHERE)
        order = torch.randperm(len(clean_fit_images), generator=torch.Generator().manual_seed(self.seed))
        halves = order[: len(order) // 2], order[len(order) // 2 :]
        (first, logits_a), (second, logits_b) = (
            features_in_batches(model, clean_fit_images[h], self.layers_, flatten, self.batch_size, WHERE)
            for h in halves
        )
        labels = logits_a.argmax(1).cpu().numpy(), logits_b.argmax(1).cpu().numpy()
        self.classes = [c for c in np.unique(np.concatenate(labels)).tolist() if all(_enough(y == c) for y in labels)]
        if len(self.classes) < 2:
            raise TracekitError(
                f"{WHERE}: needs at least {MIN_PER_SIDE} clean fit images predicted as each of two classes in "
                "each half of the fit images (the engine's calibration fits copies on all but one of its "
                "`calibration.folds` folds), got "
                f"{len(clean_fit_images)} images; give more images"
            )
        self.per_layer = [
            [RBFMachine().fit(a.cpu().numpy(), (labels[0] == c).astype(int), WHERE) for c in self.classes]
            for a in first
        ]
        with torch.no_grad():
            combined = self._layer_scores([a.to(device) for a in second]).cpu().numpy()
        self.combiner = [RBFMachine().fit(combined, (labels[1] == c).astype(int), WHERE) for c in self.classes]

    def _score(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        activations = [a.double() for a in layer_features(model, images, self.layers_, flatten, WHERE)[0]]
        combined = self._layer_scores(activations)
        return -torch.stack([m.decision_torch(combined) for m in self.combiner], 1).amax(1)

    def score(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return scores_in_batches(self._score, model, images, self.batch_size)

    def score_for_attack(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """`score` with autograd through `images` (`DifferentiableScore`), the whole batch at once."""
        return self._score(model, images.to(model_device(model)))

    def state_dict(self) -> dict[str, Any]:
        return {
            "layers": list(self.layers_),
            "classes": list(self.classes),
            "per_layer": [[m.state_dict() for m in machines] for machines in self.per_layer],
            "combiner": [m.state_dict() for m in self.combiner],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.layers_, self.classes = list(state["layers"]), [int(c) for c in state["classes"]]
        self.per_layer = [[RBFMachine().load_state_dict(s) for s in machines] for machines in state["per_layer"]]
        self.combiner = [RBFMachine().load_state_dict(s) for s in state["combiner"]]


def _enough(members: np.ndarray) -> bool:
    """At least `MIN_PER_SIDE` members and as many others."""
    return MIN_PER_SIDE <= int(members.sum()) <= len(members) - MIN_PER_SIDE
