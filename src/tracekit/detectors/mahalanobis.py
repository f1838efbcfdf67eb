"""Mahalanobis confidence (Lee, Lee, Lee and Shin, NeurIPS 2018): class-conditional Gaussians
with one shared (tied) covariance on each layer's globally average-pooled features.

Per layer l, on clean fit images with the model's predicted classes (they are all correctly
classified, and predictions are what exists at score time): class means `mu_c` and the tied
covariance `Sigma` (scikit-learn's `EmpiricalCovariance` of the class-centred features, as the
paper's code). The confidence score is `M_l(x) = max_c -(f_l(x) - mu_c)^T Sigma^-1 (f_l(x) - mu_c)`.
Input pre-processing: `x' = x + noise * sign(grad_x M_l(x))` in [0, 1] pixel space (not clipped,
as in the paper), and the layer's feature is `M_l(x')`. A logistic regression on clean vs
adversarial fit images combines the layers (`tracekit.detectors.logistic`); its log-odds is the
score. The paper tunes `noise` on validation data over {0, 0.0005, 0.001, 0.0014, 0.002, 0.005,
0.01}; here it is a parameter.

Adaptive attacks (`DifferentiableScore.score_for_attack`): the stand-in is the score itself, the
same confidences and the same logistic log-odds computed in torch with autograd through the input
(equal forward). The pre-processing step is kept: `x' = x + noise * sign(g(x))` with `g(x)` the
input gradient of `M_l`, so `dx'/dx = I + noise * d sign(g(x))/dx`, and the derivative of `sign` is
zero wherever it exists; differentiating through the step (`create_graph=True`, a second-order
pass) would add exactly zero, so the stand-in takes the step's direction as a constant and its
gradient is `M_l`'s gradient at `x'`, the exact gradient of the score (no BPDA approximation). Only
the score's jumps where a component of `g(x)` changes sign are invisible to it, as to any gradient.

Caveat: the Gaussians and the logistic regression are both fitted on the clean fit images (the
paper uses the training set for one and validation data for the other), so the regression sees
clean confidences slightly higher than clean test images get (in-sample Mahalanobis distances are
smaller, by a fraction of about features / images).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..protocols import LoadedModel
from .layers import batches, check_hookable, layer_features, map_batches, model_device, resolve_layers, spatial_mean
from .logistic import LogisticCombiner, require_adversarial

WHERE = "detector 'mahalanobis'"
DEFAULT_LAYER_COUNT = 4


class TiedGaussian:
    """Class means and one shared precision matrix; confidence = max_c of minus the Mahalanobis distance."""

    def __init__(self, means: torch.Tensor, precision: torch.Tensor) -> None:
        self.means, self.precision = means.double(), precision.double()
        self.mean_norms = ((self.means @ self.precision) * self.means).sum(1)  # mu_c^T P mu_c

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, device: torch.device) -> TiedGaussian:
        """Means of each class's `[N,D]` features and the precision of the class-centred features."""
        from sklearn.covariance import EmpiricalCovariance

        classes = np.unique(labels)
        means = np.stack([features[labels == c].mean(0) for c in classes])
        centred = features - means[np.searchsorted(classes, labels)]
        precision = EmpiricalCovariance(assume_centered=False).fit(centred).precision_
        return cls(torch.as_tensor(means, device=device), torch.as_tensor(precision, device=device))

    def confidence(self, features: torch.Tensor) -> torch.Tensor:
        """`[N,D] -> [N]`: `max_c -(f - mu_c)^T P (f - mu_c)` (differentiable; float64, expanded
        as `f^T P f - 2 f^T P mu_c + mu_c^T P mu_c` so no `[N,C,D]` tensor is built)."""
        f = features.double()
        fp = f @ self.precision
        distances = (fp * f).sum(1, keepdim=True) - 2 * fp @ self.means.T + self.mean_norms
        return (-distances).amax(1)


class Mahalanobis:
    """Per-layer Mahalanobis confidence with input pre-processing, combined by logistic regression."""

    needs_adversarial_fit = True

    def __init__(self, layers: list[str] | None, noise: float, batch_size: int) -> None:
        self.layers, self.noise, self.batch_size = layers, noise, batch_size
        self.layers_: list[str] = []
        self.gaussians: list[TiedGaussian] = []
        self.combiner = LogisticCombiner()

    def _confidences(self, model: nn.Module, images: torch.Tensor, differentiable: bool = False) -> torch.Tensor:
        """`[N, layers]` confidences of one device batch after each layer's pre-processing; with
        `differentiable`, with autograd through `images` (the pre-processing step's sign is a
        constant of the graph: its derivative is zero wherever it has one)."""
        x = images if differentiable else images.detach()
        if self.noise > 0:
            probe = images.detach().requires_grad_()
            with torch.enable_grad():
                features = layer_features(model, probe, self.layers_, spatial_mean, WHERE)[0]
                scores = [g.confidence(f) for g, f in zip(self.gaussians, features)]
                steps = [torch.autograd.grad(s.sum(), probe, retain_graph=True)[0].sign() for s in scores]
            x = torch.cat([x + self.noise * step for step in steps])  # layer l's own step in chunk l
        with torch.set_grad_enabled(differentiable):
            features = layer_features(model, x, self.layers_, spatial_mean, WHERE)[0]
            chunks = [f.split(len(images))[i if self.noise > 0 else 0] for i, f in enumerate(features)]
            return torch.stack([g.confidence(c) for g, c in zip(self.gaussians, chunks)], 1)

    def confidences(self, model: nn.Module, images: torch.Tensor) -> np.ndarray:
        """`[N, layers]` pre-processed Mahalanobis confidences of `images`."""
        return map_batches(
            lambda batch, _: self._confidences(model, batch), images, self.batch_size, model_device(model)
        )

    def check_model(self, model: LoadedModel) -> None:
        """Its features come from forward hooks on the model's layers (`ModelChecked`)."""
        check_hookable(model.module, self.layers)

    def fit(
        self,
        model: nn.Module,
        clean_fit_images: torch.Tensor,
        adversarial_fit_images: torch.Tensor | None = None,
    ) -> None:
        """Gaussians on clean fit features (predicted classes), then the layer ensemble."""
        adversarial = require_adversarial(adversarial_fit_images, WHERE)
        device = model_device(model)
        self.layers_ = resolve_layers(model, self.layers, clean_fit_images[:2].to(device), DEFAULT_LAYER_COUNT, WHERE)
        per_layer: list[list[torch.Tensor]] = [[] for _ in self.layers_]
        labels = []
        with torch.no_grad():
            for batch in batches(clean_fit_images, self.batch_size, device):
                features, logits = layer_features(model, batch, self.layers_, spatial_mean, WHERE)
                labels.append(logits.argmax(1).cpu())
                for store, f in zip(per_layer, features):
                    store.append(f.double().cpu())
        y = torch.cat(labels).numpy()
        self.gaussians = [TiedGaussian.fit(torch.cat(f).numpy(), y, device) for f in per_layer]
        self.combiner.fit(self.confidences(model, clean_fit_images), self.confidences(model, adversarial), WHERE)

    def score(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return self.combiner.score(self.confidences(model, images))

    def score_for_attack(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """`score` itself, with autograd through `images` (`DifferentiableScore`; see the module
        docstring), computed on the whole batch at once on the model's device."""
        confidences = self._confidences(model, images.to(model_device(model)), differentiable=True)
        return self.combiner.decision_torch(confidences)

    def state_dict(self) -> dict[str, Any]:
        return {
            "layers": list(self.layers_),
            "means": [g.means for g in self.gaussians],
            "precisions": [g.precision for g in self.gaussians],
            "combiner": self.combiner.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.layers_ = list(state["layers"])
        self.gaussians = [TiedGaussian(m, p) for m, p in zip(state["means"], state["precisions"])]
        self.combiner.load_state_dict(state["combiner"])
