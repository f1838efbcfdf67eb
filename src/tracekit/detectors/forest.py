"""A random forest fitted by scikit-learn and evaluated from its trees' arrays in torch, for the
detectors that learn one (multiLID): its fitted state is then plain tensors (`detect` loads a run's
fitted detector with `torch.load(weights_only=True)`, which refuses pickled estimators).

Each tree keeps `children_left`, `children_right`, `feature`, `threshold` and the class-1 share of
every node's training samples; an input descends all trees at once, one level per step
(`x[feature] <= threshold` goes left, as scikit-learn), for the forest's largest depth. The mean
over trees of the reached leaves' shares is `RandomForestClassifier.predict_proba(x)[:, 1]`
(tested). A forest's output is piecewise constant in its input: it has no gradient to give an
adaptive attack.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import TracekitError

FIELDS = ("left", "right", "feature", "threshold", "share")


class ForestArrays:
    """The trees of a fitted binary random forest, as padded `[trees, nodes]` tensors."""

    def __init__(self) -> None:
        self.arrays: dict[str, torch.Tensor] = {}
        self.depth = 0

    def fit(self, rows: np.ndarray, labels: np.ndarray, where: str, trees: int, seed: int) -> ForestArrays:
        """Fit `RandomForestClassifier(trees, class_weight="balanced", random_state=seed)` on `[N,F]`
        rows and 0/1 labels. Returns itself."""
        from sklearn.ensemble import RandomForestClassifier

        if np.bincount(labels.astype(int), minlength=2).min() < 2:
            raise TracekitError(f"{where}: needs at least 2 clean and 2 adversarial fit images for its random forest")
        forest = RandomForestClassifier(n_estimators=trees, class_weight="balanced", random_state=seed)
        forest.fit(np.asarray(rows, dtype=np.float64), labels)
        nodes = max(t.tree_.node_count for t in forest.estimators_)
        padded = {name: np.zeros((trees, nodes)) for name in FIELDS}
        for i, estimator in enumerate(forest.estimators_):
            tree, n = estimator.tree_, estimator.tree_.node_count
            value = tree.value[:, 0, :]
            padded["left"][i, :n], padded["right"][i, :n] = tree.children_left, tree.children_right
            padded["feature"][i, :n], padded["threshold"][i, :n] = tree.feature, tree.threshold
            padded["share"][i, :n] = value[:, 1] / value.sum(1)
        self.depth = max(t.tree_.max_depth for t in forest.estimators_)
        self.arrays = {
            name: torch.as_tensor(a, dtype=torch.float64 if name in ("threshold", "share") else torch.long)
            for name, a in padded.items()
        }
        return self

    def probability(self, rows: torch.Tensor) -> torch.Tensor:
        """The forest's class-1 probability of `[N,F]` rows (float64, no gradient)."""
        a = {name: t.to(rows.device) for name, t in self.arrays.items()}
        trees = a["left"].shape[0]
        x = rows.detach().float().double()  # scikit-learn compares float32 inputs with float64 thresholds
        node = torch.zeros(len(x), trees, dtype=torch.long, device=x.device)
        tree = torch.arange(trees, device=x.device).expand_as(node)
        for _ in range(self.depth):
            left, right = a["left"][tree, node], a["right"][tree, node]
            leaf = left < 0
            feature = a["feature"][tree, node].clamp(min=0)
            goes_left = x.gather(1, feature) <= a["threshold"][tree, node]
            node = torch.where(leaf, node, torch.where(goes_left, left, right))
        return a["share"][tree, node].mean(1)

    def state_dict(self) -> dict[str, Any]:
        return {**self.arrays, "depth": self.depth}

    def load_state_dict(self, state: dict[str, Any]) -> ForestArrays:
        self.arrays, self.depth = {name: state[name] for name in FIELDS}, int(state["depth"])
        return self
