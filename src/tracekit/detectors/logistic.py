"""The logistic regression that turns per-image detector features into one score, as the
supervised baselines (LID, Mahalanobis, KD+BU) do in their papers: features standardized, then
a logistic regression trained on clean fit (0) vs adversarial fit (1) images. The papers tune the
regularization by cross-validation (`LogisticRegressionCV`); with a handful of standardized
features and hundreds of images it barely matters, so the default `C=1` is kept (faster, and
free of that estimator's changing defaults).

Classes are weighted to balance (the papers train on pairs of clean and adversarial images; here
the adversarials of several attacks may outnumber the clean ones). The score is the decision
function (log-odds of adversarial), which ranks like the probability but never saturates; it is
computed from the fitted scaler's and regression's arrays (equal to the pipeline's
`decision_function`), which are all a fitted combiner holds, so its state is four arrays. It is
computed in torch (`decision_torch`), so the same function is differentiable for adaptive attacks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import TracekitError

MIN_PER_CLASS = 2


def require_adversarial(adversarial: torch.Tensor | None, where: str) -> torch.Tensor:
    """The adversarial fit images, or a `TracekitError` when there are too few to learn from."""
    n = 0 if adversarial is None else len(adversarial)
    if adversarial is None or n < MIN_PER_CLASS:
        raise TracekitError(
            f"{where}: needs at least {MIN_PER_CLASS} adversarial fit images (successful adversarials of "
            f"fit-part images) but got {n}; give the spec attacks that succeed, or more images"
        )
    return adversarial


class LogisticCombiner:
    """Standardize features, then a logistic regression (clean 0, adversarial 1)."""

    def __init__(self) -> None:
        self.mean = self.scale = self.coef = np.zeros(0)
        self.intercept = 0.0

    def fit(self, clean: np.ndarray, adversarial: np.ndarray, where: str) -> None:
        """Learn from `[N,F]` clean and `[M,F]` adversarial feature rows."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        if min(len(clean), len(adversarial)) < MIN_PER_CLASS:
            raise TracekitError(f"{where}: needs at least {MIN_PER_CLASS} clean and adversarial fit images")
        x = np.concatenate([clean, adversarial]).astype(np.float64)
        y = np.concatenate([np.zeros(len(clean)), np.ones(len(adversarial))])
        model = LogisticRegression(class_weight="balanced", max_iter=1000)
        scaler, regression = make_pipeline(StandardScaler(), model).fit(x, y)
        self.mean, self.scale = scaler.mean_, scaler.scale_
        self.coef, self.intercept = regression.coef_[0], float(regression.intercept_[0])

    def score(self, features: np.ndarray) -> torch.Tensor:
        """Log-odds of adversarial for `[N,F]` feature rows."""
        return self.decision_torch(torch.from_numpy(np.asarray(features)))

    def decision_torch(self, features: torch.Tensor) -> torch.Tensor:
        """Log-odds of adversarial for `[N,F]` feature rows, in float64 on their device, with
        autograd through `features` (the detectors' `score_for_attack` ends here; `score` too, so
        both compute the same numbers)."""

        def array(values: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(values, dtype=torch.float64, device=features.device)

        standardized = (features.double() - array(self.mean)) / array(self.scale)
        return standardized @ array(self.coef) + self.intercept

    def state_dict(self) -> dict[str, Any]:
        return {name: torch.from_numpy(np.asarray(getattr(self, name), dtype=np.float64).copy())
                for name in ("mean", "scale", "coef", "intercept")}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean, self.scale, self.coef = (state[k].cpu().numpy() for k in ("mean", "scale", "coef"))
        self.intercept = float(state["intercept"])
