"""The embedded model: a small VGG-style CNN for the `digits` dataset, trained on first use.

Training takes seconds; how it is made deterministic and where the weights are cached
(`cache_dir()/models/digits-cnn-<RECIPE_VERSION>.pt`): `tracekit.models.embedded`. Bump
`RECIPE_VERSION` whenever the architecture or the training recipe changes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..datasets.digits import IMAGE_SIZE, digits_arrays
from ..protocols import LoadedModel
from . import embedded
from .normalize import InputSpec, Normalized, loaded_model

RECIPE_VERSION = "v1"
CLASS_NAMES = [str(d) for d in range(10)]
RECIPE = embedded.Recipe(epochs=8, batch_size=32, max_lr=5e-3, seed=0)
WHERE = "model 'digits-cnn'"


class DigitsCNN(nn.Module):
    """conv8-conv8-pool-conv16-conv16-pool-conv32-pool, then 512-64-10 (ReLU throughout)."""

    def __init__(self, num_classes: int = len(CLASS_NAMES)) -> None:
        super().__init__()

        def conv(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *conv(IMAGE_SIZE[0], 8), *conv(8, 8), nn.MaxPool2d(2),
            *conv(8, 16), *conv(16, 16), nn.MaxPool2d(2),
            *conv(16, 32), nn.MaxPool2d(2),
        )  # fmt: skip
        side = IMAGE_SIZE[1] // 8
        self.classifier = nn.Sequential(
            nn.Linear(32 * side * side, 64), nn.ReLU(inplace=True), nn.Linear(64, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def train() -> Normalized:
    """A freshly trained, normalized `DigitsCNN` (deterministic: same weights on every run)."""
    _, images, labels = digits_arrays("train")
    return embedded.train("digits-cnn", DigitsCNN, lambda epoch: (images, labels), RECIPE)


def accuracy(module: nn.Module, split: str = "test") -> float:
    """Top-1 accuracy of `module` on a digits split."""
    _, images, labels = digits_arrays(split)
    return embedded.accuracy(module, images, labels)


def load_model(weights: Path | None) -> LoadedModel:
    """The model of the factory `digits_cnn` (`tracekit.models.factories`): the cached one, trained
    first if need be, or the one in `weights`."""
    if weights is None:
        model, info = embedded.load_cached(DigitsCNN, embedded.weights_path("digits-cnn", RECIPE_VERSION), WHERE, train)
    else:
        model, info = embedded.load(DigitsCNN, weights, WHERE)
    mean, std = (tuple(t.flatten().tolist()) for t in (model.mean, model.std))
    spec = InputSpec(IMAGE_SIZE, mean=mean, std=std, crop_pct=1.0)
    info = {"source": "digits-cnn", "recipe": RECIPE_VERSION, **info, "test_accuracy": accuracy(model)}
    return loaded_model(model.model, spec, CLASS_NAMES, None, info)
