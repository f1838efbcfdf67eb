"""multiLID (Lorenz, Keuper and Keuper, "Unfolding local growth rate estimates for (almost)
perfect adversarial detection", VISAPP 2023): LID's estimate unfolded into its terms, per layer,
and a random forest.

LID's maximum-likelihood estimate from the distances `r_1 <= ... <= r_k` of a layer activation to
its `k` nearest reference activations is `-(1/k sum_i log(r_i / r_k))^-1`
(`tracekit.detectors.lid`). multiLID keeps the `k` growth-rate terms `-log(r_i / r_k)`, i = 1..k,
instead of their mean (the last is 0 by construction and is dropped), for each layer, concatenated
into one feature vector, and a random forest (scikit-learn's, `trees` trees, balanced classes,
seeded) learns clean fit (0) against adversarial fit (1) images from them; the score is the
forest's probability of adversarial.

Without the minibatch dependence: the reference is a fixed batch of `batch_size` clean fit images
drawn once by a seeded shuffle (as tracekit's `lid`), never the other images of the batch being
scored, so an image's score does not depend on its batch; a clean fit image in the reference leaves
itself out. The paper's defaults: k = 20 (its CIFAR-10 setting), the forest of scikit-learn with its
defaults (100 trees); layers default to the model's last four hidden layer outputs (the paper reads
every ReLU of its VGG/WRN; `layers` takes any module names).

No adaptive attack: the forest's output is piecewise constant in its input (a differentiable
stand-in would be a different detector, and attacking through one would certify this one), so
`multilid` has no `score_for_attack`; comparisons say "no adaptive attack available" for it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..protocols import LoadedModel
from .forest import ForestArrays
from .layers import check_hookable, flatten, layer_features, map_batches, model_device
from .lid import reference_batch
from .logistic import require_adversarial

WHERE = "detector 'multilid'"


def growth_rates(points: torch.Tensor, reference: torch.Tensor, k: int, exclude: torch.Tensor | None) -> torch.Tensor:
    """`[N, k-1]`: `-log(r_i / r_k)` for i = 1..k-1, from each point's `k` nearest reference points
    (`exclude[i]`: point i's own index in `reference`, left out, or -1)."""
    distances = torch.cdist(points.double(), reference.double())
    if exclude is not None:
        rows = torch.nonzero(exclude >= 0).flatten()
        distances = distances.index_put((rows, exclude[rows]), distances.new_tensor(torch.inf))
    nearest = distances.topk(k, dim=1, largest=False).values.clamp_min(1e-12)  # ascending
    return -torch.log(nearest[:, :-1] / nearest[:, -1:])


class MultiLID:
    """Unfolded per-layer LID terms against a fixed clean reference, and a random forest."""

    needs_adversarial_fit = True

    def __init__(self, layers: list[str] | None, k: int, batch_size: int, trees: int, seed: int) -> None:
        self.layers, self.k, self.batch_size, self.trees, self.seed = layers, k, batch_size, trees, seed
        self.layers_: list[str] = []
        self.reference: list[torch.Tensor] = []
        self.forest = ForestArrays()

    def check_model(self, model: LoadedModel) -> None:
        """Its features come from forward hooks on the model's layers (`ModelChecked`)."""
        check_hookable(model.module, self.layers)

    def features(self, model: nn.Module, images: torch.Tensor, slot: torch.Tensor | None = None) -> np.ndarray:
        """`[N, layers * (k - 1)]` growth rates of `images` (`slot`: index in the reference, or -1)."""

        def batch_features(batch: torch.Tensor, start: int) -> torch.Tensor:
            exclude = None if slot is None else slot[start : start + len(batch)].to(batch.device)
            with torch.no_grad():
                acts = layer_features(model, batch, self.layers_, flatten, WHERE)[0]
            return torch.cat([growth_rates(a, r, self.k, exclude) for a, r in zip(acts, self.reference)], 1)

        return map_batches(batch_features, images, self.batch_size, model_device(model))

    def fit(
        self,
        model: nn.Module,
        clean_fit_images: torch.Tensor,
        adversarial_fit_images: torch.Tensor | None = None,
    ) -> None:
        """Pick the reference batch, then the forest on clean vs adversarial growth rates."""
        adversarial = require_adversarial(adversarial_fit_images, WHERE)
        self.layers_, self.reference, slot = reference_batch(
            model, clean_fit_images, self.layers, self.batch_size, self.k, self.seed, WHERE
        )
        clean, attacked = self.features(model, clean_fit_images, slot), self.features(model, adversarial)
        labels = np.repeat([0, 1], [len(clean), len(attacked)])
        self.forest.fit(np.concatenate([clean, attacked]), labels, WHERE, self.trees, self.seed)

    def score(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return self.forest.probability(torch.from_numpy(self.features(model, images)))

    def state_dict(self) -> dict[str, Any]:
        return {"layers": list(self.layers_), "reference": list(self.reference), "forest": self.forest.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.layers_, self.reference = list(state["layers"]), list(state["reference"])
        self.forest.load_state_dict(state["forest"])
