"""Local intrinsic dimensionality (Ma et al., ICLR 2018): adversarial regions of a layer's
activation space have a higher LID than the clean data around them.

The maximum-likelihood estimate of an activation `x` against a reference batch, from the
distances `r_1 <= ... <= r_k` to its `k` nearest reference activations (flattened, Euclidean):
`LID(x) = -(1/k sum_i log(r_i / r_k))^-1`. One LID per layer is one feature; a logistic
regression on clean vs adversarial fit images combines them (`tracekit.detectors.logistic`).

Reference batch: `batch_size` clean fit images drawn once by a seeded shuffle. Every LID (clean
fit, adversarial fit and test images) is estimated against it; a clean fit image in the
reference leaves itself out, as in the paper's within-batch estimate. The paper estimates test
LIDs within minibatches mixing clean and adversarial images, which lets each score depend on the
other images of its batch (and so on their labels); a fixed clean reference is the standard
honest variant, and makes an image's score independent of the batch it is scored in.

Adaptive attacks (`DifferentiableScore.score_for_attack`): the stand-in is the score itself, with
autograd through the input (equal forward): the image's activations, their distances to the fixed
reference activations (constants of the graph), the `k` smallest of them (`topk`: the gradient
flows through the distances that are the nearest at the current point, the choice of neighbours
being piecewise constant), the MLE and the logistic log-odds, all in torch. Since test LIDs use the
fixed reference, never the other images of the batch, an attacker cannot move an image's score by
choosing its batch-mates, and the stand-in needs none.

Not implemented: the paper's noisy samples (negatives with random noise added to the training set
of the logistic regression).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import TracekitError
from ..protocols import LoadedModel
from .layers import check_hookable, flatten, layer_features, map_batches, model_device, resolve_layers
from .logistic import LogisticCombiner, require_adversarial

WHERE = "detector 'lid'"
DEFAULT_LAYER_COUNT = 4


def lid_mle(points: torch.Tensor, reference: torch.Tensor, k: int, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """MLE of the LID of each `[N,D]` point against `[M,D]` reference points from its `k` nearest.

    `exclude[i]` is the index of point i itself in `reference` (left out), or -1.
    """
    distances = torch.cdist(points.double(), reference.double())
    if exclude is not None:
        rows = torch.nonzero(exclude >= 0).flatten()
        distances = distances.index_put((rows, exclude[rows]), distances.new_tensor(torch.inf))  # not in place
    nearest = distances.topk(k, dim=1, largest=False).values.clamp_min(1e-12)  # ascending
    log_ratios = torch.log(nearest / nearest[:, -1:]).sum(1)
    return -k / log_ratios.clamp_max(-1e-12)


def reference_batch(
    model: nn.Module, images: torch.Tensor, layers: list[str] | None, size: int, k: int, seed: int, where: str
) -> tuple[list[str], list[torch.Tensor], torch.Tensor]:
    """The layers (the given ones checked, or the model's last four hidden outputs), the flattened
    activations of a reference batch of `size` clean fit `images` drawn once by a seeded shuffle,
    and each fit image's slot in it (-1 outside), which its own estimate leaves out."""
    n = len(images)
    size = min(size, n)
    if size <= k:
        raise TracekitError(
            f"{where}: k={k} nearest neighbours need more than {k} clean fit images in the reference batch, got "
            f"{size} (the engine's calibration fits copies on all but one of its "
            "`calibration.folds` folds); lower k or give more images"
        )
    device = model_device(model)
    resolved = resolve_layers(model, layers, images[:2].to(device), DEFAULT_LAYER_COUNT, where)
    chosen = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size]
    with torch.no_grad():
        reference = layer_features(model, images[chosen].to(device), resolved, flatten, where)[0]
    slot = torch.full((n,), -1, dtype=torch.long)
    slot[chosen] = torch.arange(size)
    return resolved, reference, slot


class LocalIntrinsicDimensionality:
    """Per-layer LID against a clean reference batch, combined by logistic regression."""

    needs_adversarial_fit = True

    def __init__(self, layers: list[str] | None, k: int, batch_size: int, seed: int) -> None:
        self.layers, self.k, self.batch_size, self.seed = layers, k, batch_size, seed
        self.layers_: list[str] = []
        self.reference: list[torch.Tensor] = []
        self.combiner = LogisticCombiner()

    def _activations(self, model: nn.Module, images: torch.Tensor, differentiable: bool = False) -> list[torch.Tensor]:
        with torch.set_grad_enabled(differentiable):
            return layer_features(model, images, self.layers_, flatten, WHERE)[0]

    def _lids(
        self, model: nn.Module, batch: torch.Tensor, exclude: torch.Tensor | None = None, differentiable: bool = False
    ) -> torch.Tensor:
        """`[N, layers]` LIDs of one device batch against the reference (with autograd through
        `batch` where `differentiable`)."""
        acts = self._activations(model, batch, differentiable)
        return torch.stack([lid_mle(a, r, self.k, exclude) for a, r in zip(acts, self.reference)], 1)

    def lids(self, model: nn.Module, images: torch.Tensor, slot: torch.Tensor | None = None) -> np.ndarray:
        """`[N, layers]` LIDs of `images` against the reference (`slot`: index in it, or -1)."""

        def batch_lids(batch: torch.Tensor, start: int) -> torch.Tensor:
            exclude = None if slot is None else slot[start : start + len(batch)].to(batch.device)
            return self._lids(model, batch, exclude)

        return map_batches(batch_lids, images, self.batch_size, model_device(model))

    def check_model(self, model: LoadedModel) -> None:
        """Its features come from forward hooks on the model's layers (`ModelChecked`)."""
        check_hookable(model.module, self.layers)

    def fit(
        self,
        model: nn.Module,
        clean_fit_images: torch.Tensor,
        adversarial_fit_images: torch.Tensor | None = None,
    ) -> None:
        """Pick the reference batch, then learn clean vs adversarial from per-layer LIDs."""
        adversarial = require_adversarial(adversarial_fit_images, WHERE)
        self.layers_, self.reference, slot = reference_batch(
            model, clean_fit_images, self.layers, self.batch_size, self.k, self.seed, WHERE
        )
        self.combiner.fit(self.lids(model, clean_fit_images, slot), self.lids(model, adversarial), WHERE)

    def score(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return self.combiner.score(self.lids(model, images))

    def score_for_attack(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """`score` itself, with autograd through `images` (`DifferentiableScore`; see the module
        docstring), computed on the whole batch at once on the model's device."""
        lids = self._lids(model, images.to(model_device(model)), differentiable=True)
        return self.combiner.decision_torch(lids)

    def state_dict(self) -> dict[str, Any]:
        return {"layers": list(self.layers_), "reference": list(self.reference), "combiner": self.combiner.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.layers_, self.reference = list(state["layers"]), list(state["reference"])
        self.combiner.load_state_dict(state["combiner"])
