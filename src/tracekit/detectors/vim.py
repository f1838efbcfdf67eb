"""Virtual-logit matching, ViM (Wang, Li, Feng and Zhang, CVPR 2022): how much of an input's
penultimate feature lies outside the principal subspace of the clean features, scaled to the
logits and weighed against the energy.

With `x` the input of the classifier's final linear layer `f(x) = W x + b`
(`tracekit.detectors.head`): the origin `o = -pinv(W) b`; on the clean fit images, the
eigenvectors of the (uncentred) covariance of `x - o` (scikit-learn's `EmpiricalCovariance` with
`assume_centered`, then `numpy.linalg.eigh`, as the paper's code); `R` those beyond the `dim`
largest eigenvalues (the residual space). The virtual logit is `alpha |R^T (x - o)|` with
`alpha = mean(max_c f_c) / mean(|R^T (x - o)|)` over the clean fit images, and the score is
`alpha |R^T (x - o)| - logsumexp(f(x))`: the paper's code's in-distribution score `energy -
virtual logit`, negated (higher = more likely adversarial). `dim` defaults to the paper's rule:
1000 for features of 2048 or more, 512 for 768 or more, else half the feature size.

Adaptive attacks (`DifferentiableScore.score_for_attack`): the score itself with autograd (equal
forward).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import TracekitError
from ..protocols import LoadedModel
from .head import find_head, head_weights, penultimate
from .layers import batches, check_hookable, model_device, scores_in_batches

WHERE = "detector 'vim'"


def principal_dim(features: int) -> int:
    """The paper's choice of the principal subspace's size for `features`-dimensional features."""
    return 1000 if features >= 2048 else 512 if features >= 768 else features // 2


class VirtualLogit:
    """Residual of the principal subspace as a virtual logit, against the energy."""

    needs_adversarial_fit = False

    def __init__(self, dim: int | None, batch_size: int) -> None:
        self.dim, self.batch_size = dim, batch_size
        self.head = ""
        self.origin = torch.empty(0)
        self.residual = torch.empty(0)
        self.alpha = 1.0

    def check_model(self, model: LoadedModel) -> None:
        """Its features come from a forward hook on the model's head (`ModelChecked`)."""
        check_hookable(model.module, None)

    def fit(
        self,
        model: nn.Module,
        clean_fit_images: torch.Tensor,
        adversarial_fit_images: torch.Tensor | None = None,
    ) -> None:
        """The origin, the residual space and `alpha` from the clean fit images' features."""
        from sklearn.covariance import EmpiricalCovariance

        device = model_device(model)
        self.head = find_head(model, clean_fit_images[:2].to(device), WHERE)
        weight, bias = head_weights(model, self.head, WHERE)
        with torch.no_grad():
            pairs = [
                penultimate(model, b, self.head, WHERE) for b in batches(clean_fit_images, self.batch_size, device)
            ]
        features = torch.cat([f for f, _ in pairs]).double().cpu().numpy()
        max_logits = torch.cat([lg for _, lg in pairs]).double().amax(1).cpu().numpy()
        size = features.shape[1]
        dim = principal_dim(size) if self.dim is None else self.dim
        if not 0 < dim < size:
            raise TracekitError(
                f"{WHERE}: dim={dim} must be between 1 and the penultimate feature size minus one ({size - 1}); "
                f"leave it out for the paper's choice ({principal_dim(size)})"
            )
        origin = -np.linalg.pinv(weight.double().cpu().numpy()) @ bias.double().cpu().numpy()
        covariance = EmpiricalCovariance(assume_centered=True).fit(features - origin).covariance_
        values, vectors = np.linalg.eigh(covariance)
        residual = np.ascontiguousarray(vectors[:, np.argsort(values)[::-1][dim:]])
        norms = np.linalg.norm((features - origin) @ residual, axis=1)
        if norms.mean() == 0:
            raise TracekitError(f"{WHERE}: the clean fit features have no residual beyond dim={dim}; lower dim")
        self.alpha = float(max_logits.mean() / norms.mean())
        self.origin = torch.as_tensor(origin, device=device)
        self.residual = torch.as_tensor(residual, device=device)

    def score(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return scores_in_batches(self._score, model, images, self.batch_size)

    def score_for_attack(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """`score` with autograd through `images` (`DifferentiableScore`), the whole batch at once."""
        return self._score(model, images.to(model_device(model)))

    def _score(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        features, logits = penultimate(model, images, self.head, WHERE)
        origin, residual = self.origin.to(images.device), self.residual.to(images.device)
        virtual = self.alpha * ((features.double() - origin) @ residual).norm(dim=1)
        return virtual - torch.logsumexp(logits.double(), dim=1)

    def state_dict(self) -> dict[str, Any]:
        return {"head": self.head, "origin": self.origin, "residual": self.residual, "alpha": self.alpha}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.head, self.origin, self.residual = str(state["head"]), state["origin"], state["residual"]
        self.alpha = float(state["alpha"])
