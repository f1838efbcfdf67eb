"""Radial-basis support vector machines for the detectors that learn one (NSS, DNR, NIC), fitted
by scikit-learn and evaluated in torch, so the same function scores and is differentiable for
adaptive attacks (`score_for_attack`).

`RBFMachine.fit` standardizes the feature rows (`StandardScaler`), fits `SVC(kernel="rbf")` on two
classes or `OneClassSVM` on one, and keeps what the decision function needs: the scaler's mean
and scale, the support vectors, their dual coefficients, the intercept and `gamma` (scikit-learn's
`"scale"`: 1 / (features x variance of the standardized rows), resolved at fit). The decision is
`sum_i a_i exp(-gamma |x - s_i|^2) + b`, equal to the fitted estimator's `decision_function`
(tested), positive on the side of class 1 for `SVC` and inside the support for `OneClassSVM`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import TracekitError

ARRAYS = ("mean", "scale", "support", "dual")


class RBFMachine:
    """A fitted RBF support vector machine's decision function, in torch."""

    def __init__(self) -> None:
        self.mean = self.scale = self.dual = np.zeros(0)
        self.support = np.zeros((0, 0))
        self.intercept = self.gamma = 0.0

    def fit(self, rows: np.ndarray, labels: np.ndarray | None, where: str, nu: float = 0.1) -> RBFMachine:
        """Fit on `[N,F]` rows: `SVC` (balanced classes) on `labels` 0/1, or `OneClassSVM(nu)`
        when `labels` is None. Returns itself."""
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC, OneClassSVM

        rows = np.asarray(rows, dtype=np.float64)
        if len(rows) < 2 or (labels is not None and np.bincount(labels.astype(int), minlength=2).min() < 2):
            raise TracekitError(f"{where}: needs at least 2 fit images of each kind to fit its support vector machine")
        scaler = StandardScaler().fit(rows)
        scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
        standardized = (rows - scaler.mean_) / scale
        variance = float(standardized.var())
        self.gamma = 1.0 / (rows.shape[1] * variance) if variance > 0 else 1.0
        machine = (
            OneClassSVM(kernel="rbf", gamma=self.gamma, nu=nu)
            if labels is None
            else SVC(kernel="rbf", gamma=self.gamma, class_weight="balanced")
        )
        machine.fit(standardized, *(() if labels is None else (labels,)))
        self.mean, self.scale = scaler.mean_, scale
        self.support, self.dual = machine.support_vectors_, machine.dual_coef_[0]
        self.intercept = float(np.ravel(machine.intercept_)[0])
        return self

    def decision_torch(self, rows: torch.Tensor) -> torch.Tensor:
        """The decision function of `[N,F]` rows, float64 on their device, with autograd through them."""

        def array(values: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(values, dtype=torch.float64, device=rows.device)

        standardized = (rows.double() - array(self.mean)) / array(self.scale)
        kernel = torch.exp(-self.gamma * torch.cdist(standardized, array(self.support)) ** 2)
        return kernel @ array(self.dual) + self.intercept

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            k: torch.from_numpy(np.asarray(getattr(self, k), dtype=np.float64).copy()) for k in ARRAYS
        }
        return {**state, "intercept": self.intercept, "gamma": self.gamma}

    def load_state_dict(self, state: dict[str, Any]) -> RBFMachine:
        self.mean, self.scale, self.support, self.dual = (state[k].cpu().numpy() for k in ARRAYS)
        self.intercept, self.gamma = float(state["intercept"]), float(state["gamma"])
        return self
