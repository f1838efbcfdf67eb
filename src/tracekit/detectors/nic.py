"""Neural-network invariant checking, NIC (Ma, Liu, Tao, Lee and Zhang, NDSS 2019): clean inputs
keep two kinds of invariants a one-class model learns, and an adversarial input breaks some.

- Value invariants: per layer, a one-class SVM (RBF) on the layer's activations.
- Provenance invariants: per layer, a linear probe (softmax regression) predicting the model's
  class from the layer's activations; per pair of consecutive layers, a one-class SVM on the two
  probes' class probabilities side by side (how the evidence for a class evolves layer to layer).
- The decision values of all of them go to a last one-class SVM; the score is minus its decision
  (higher = further outside = more likely adversarial).

Fitted on clean fit images only, with the model's predicted classes for the probes. Bounded to fit a
CPU: the last four hidden layer outputs by default (`layers` to choose others, at most 8), each
reduced by global average pooling over space (a conv layer of C channels gives C features) and
standardized; the paper models whole activations of every layer. The invariants' models learn from
one half of the fit images and the last SVM from the other (a seeded split), so the last SVM sees
the invariants' decisions on images they were not fitted on; the paper fits them all on the
training set. One-class SVMs: scikit-learn's with `nu` (0.1) and `gamma="scale"` on standardized
rows (`tracekit.detectors.svm`); probes: `LogisticRegression` (C = 1), evaluated in torch.

Adaptive attacks (`DifferentiableScore.score_for_attack`): the score itself with autograd through the
input (activations, probes' softmax and RBF kernels are differentiable): equal forward.
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
    layer_features,
    model_device,
    resolve_layers,
    scores_in_batches,
    spatial_mean,
)
from .svm import RBFMachine

WHERE = "detector 'nic'"
DEFAULT_LAYER_COUNT = 4


class LinearProbe:
    """Standardized features, then a softmax regression on the model's predicted classes."""

    def fit(self, rows: np.ndarray, labels: np.ndarray) -> LinearProbe:
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler().fit(rows)
        self.mean, self.scale = scaler.mean_, np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
        regression = LogisticRegression(max_iter=1000).fit((rows - self.mean) / self.scale, labels)
        coef, intercept = regression.coef_, regression.intercept_
        if len(regression.classes_) == 2:  # scikit-learn keeps one row for two classes: logits (0, z)
            coef, intercept = np.concatenate([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
        self.coef, self.intercept = coef, intercept
        return self

    def probabilities(self, rows: torch.Tensor) -> torch.Tensor:
        """Class probabilities `[N, classes seen]` of `[N,F]` rows, with autograd through them."""

        def array(values: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(values, dtype=torch.float64, device=rows.device)

        standardized = (rows.double() - array(self.mean)) / array(self.scale)
        return (standardized @ array(self.coef).T + array(self.intercept)).softmax(1)

    def state_dict(self) -> dict[str, Any]:
        return {k: torch.from_numpy(np.asarray(getattr(self, k), dtype=np.float64).copy()) for k in PROBE}

    def load_state_dict(self, state: dict[str, Any]) -> LinearProbe:
        self.mean, self.scale, self.coef, self.intercept = (state[k].cpu().numpy() for k in PROBE)
        return self


PROBE = ("mean", "scale", "coef", "intercept")


class NeuralInvariants:
    """Value and provenance invariants per layer, one-class SVMs, and a last one over their decisions."""

    needs_adversarial_fit = False

    def __init__(self, layers: list[str] | None, nu: float, batch_size: int, seed: int) -> None:
        self.layers, self.nu, self.batch_size, self.seed = layers, nu, batch_size, seed
        self.layers_: list[str] = []
        self.values: list[RBFMachine] = []
        self.probes: list[LinearProbe] = []
        self.provenance: list[RBFMachine] = []
        self.last = RBFMachine()

    def check_model(self, model: LoadedModel) -> None:
        """Its features come from forward hooks on the model's layers (`ModelChecked`)."""
        check_hookable(model.module, self.layers)

    def _pairs(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """The consecutive layers' probe probabilities side by side."""
        probabilities = [p.probabilities(f) for p, f in zip(self.probes, features)]
        return [torch.cat([a, b], 1) for a, b in zip(probabilities, probabilities[1:])]

    def _decisions(self, features: list[torch.Tensor]) -> torch.Tensor:
        """`[N, invariants]`: every value and provenance invariant's one-class decision."""
        values = [m.decision_torch(f) for m, f in zip(self.values, features)]
        provenance = [m.decision_torch(p) for m, p in zip(self.provenance, self._pairs(features))]
        return torch.stack(values + provenance, 1)

    def fit(
        self,
        model: nn.Module,
        clean_fit_images: torch.Tensor,
        adversarial_fit_images: torch.Tensor | None = None,
    ) -> None:
        """The invariants on one half of the clean fit images, the last SVM on the other."""
        if len(clean_fit_images) < 8:
            raise TracekitError(
                f"{WHERE}: needs at least 8 clean fit images (4 per half: the invariants learn from one, the last "
                f"one-class SVM from the other), got {len(clean_fit_images)}; give more images"
            )
        device = model_device(model)
        self.layers_ = resolve_layers(model, self.layers, clean_fit_images[:2].to(device), DEFAULT_LAYER_COUNT, WHERE)
        if len(self.layers_) < 2:
            raise TracekitError(f"{WHERE}: needs at least 2 layers for its provenance invariants, got {self.layers_}")
        order = torch.randperm(len(clean_fit_images), generator=torch.Generator().manual_seed(self.seed))
        (first, logits), (second, _) = (
            features_in_batches(model, clean_fit_images[h], self.layers_, spatial_mean, self.batch_size, WHERE)
            for h in (order[: len(order) // 2], order[len(order) // 2 :])
        )
        labels = logits.argmax(1).cpu().numpy()
        if len(np.unique(labels)) < 2:
            raise TracekitError(
                f"{WHERE}: the model predicts one class for all of its first-half fit images; give more"
            )
        self.values = [RBFMachine().fit(f.cpu().numpy(), None, WHERE, self.nu) for f in first]
        self.probes = [LinearProbe().fit(f.cpu().numpy(), labels) for f in first]
        self.provenance = [RBFMachine().fit(p.cpu().numpy(), None, WHERE, self.nu) for p in self._pairs(first)]
        self.last = RBFMachine().fit(self._decisions(second).cpu().numpy(), None, WHERE, self.nu)

    def _score(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        features = [f.double() for f in layer_features(model, images, self.layers_, spatial_mean, WHERE)[0]]
        return -self.last.decision_torch(self._decisions(features))

    def score(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return scores_in_batches(self._score, model, images, self.batch_size)

    def score_for_attack(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """`score` with autograd through `images` (`DifferentiableScore`), the whole batch at once."""
        return self._score(model, images.to(model_device(model)))

    def state_dict(self) -> dict[str, Any]:
        return {
            "layers": list(self.layers_),
            "values": [m.state_dict() for m in self.values],
            "probes": [p.state_dict() for p in self.probes],
            "provenance": [m.state_dict() for m in self.provenance],
            "last": self.last.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.layers_ = list(state["layers"])
        self.values = [RBFMachine().load_state_dict(s) for s in state["values"]]
        self.probes = [LinearProbe().load_state_dict(s) for s in state["probes"]]
        self.provenance = [RBFMachine().load_state_dict(s) for s in state["provenance"]]
        self.last = RBFMachine().load_state_dict(state["last"])
