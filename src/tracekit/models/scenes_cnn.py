"""`digit-scenes-cnn`: a VGG-style CNN for the `digit-scenes` dataset (default scenes, 1x48x48),
trained on first use (deterministic, about 30 s on a 2-core CPU) and cached.

Three blocks of 3x3 convolutions and ReLUs with 2x2 max-pooling (8, 16, 32 channels), then a
global max-pool over the 6x6 positions and two linear layers (32-64-10). The global max-pool
makes the classifier indifferent to where the digit is, which it must find among the clutter;
no batch norm, so the guided-backprop maps pass through convolutions, ReLUs and max-pools only.
Each epoch trains on fresh scenes of the train digits (two copies of each, new positions and
clutter every epoch), so the model sees 16 x 2 x 1258 scenes. Narrow on purpose: the search
attacks evaluate it thousands of times per image (16-32-64 channels reach the same accuracy at
twice the cost).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..datasets.factories import CLUTTER, DIGIT_SIZE, DISTRACTORS, SCENE_SIZE
from ..datasets.scenes import DigitScenes
from ..protocols import LoadedModel
from . import embedded
from .normalize import InputSpec, loaded_model

NAME = "digit-scenes-cnn"
RECIPE_VERSION = "v1"
CLASS_NAMES = [str(d) for d in range(10)]
RECIPE = embedded.Recipe(epochs=16, batch_size=32, max_lr=5e-3)
COPIES_PER_EPOCH = 2
WHERE = f"model '{NAME}'"


class SceneCNN(nn.Module):
    """conv8-conv8-pool-conv16-conv16-pool-conv32-pool, global max-pool, then 32-64-10."""

    def __init__(self, num_classes: int = len(CLASS_NAMES), widths: tuple[int, int, int] = (8, 16, 32)) -> None:
        super().__init__()
        a, b, c = widths

        def conv(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *conv(1, a), *conv(a, a), nn.MaxPool2d(2),
            *conv(a, b), *conv(b, b), nn.MaxPool2d(2),
            *conv(b, c), nn.MaxPool2d(2),
            nn.AdaptiveMaxPool2d(1),
        )  # fmt: skip
        self.classifier = nn.Sequential(nn.Linear(c, 64), nn.ReLU(inplace=True), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def training_data(limit: int | None = None) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
    """`data(epoch)` for `embedded.train`: scenes `epoch * COPIES_PER_EPOCH ...` of each train
    digit (of the first `limit` scenes), made when the epoch starts."""

    def data(epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        first = epoch * COPIES_PER_EPOCH
        scenes = DigitScenes(
            "train", limit, SCENE_SIZE, DIGIT_SIZE, CLUTTER, DISTRACTORS, range(first, first + COPIES_PER_EPOCH), 0
        )
        return scenes.scenes(torch.arange(len(scenes))), scenes.labels

    return data


def train(
    recipe: embedded.Recipe = RECIPE, widths: tuple[int, int, int] = (8, 16, 32), limit: int | None = None
) -> nn.Module:
    """A freshly trained, normalized `SceneCNN` (a smaller one with other `widths`, `limit`)."""
    return embedded.train(NAME, lambda: SceneCNN(widths=widths), training_data(limit=limit), recipe)


def test_accuracy(module: nn.Module) -> float:
    """Top-1 accuracy on the default test scenes (one of each test digit)."""
    scenes = DigitScenes("test", None, SCENE_SIZE, DIGIT_SIZE, CLUTTER, DISTRACTORS, range(1), 0)
    return embedded.accuracy(module, scenes.scenes(torch.arange(len(scenes))), scenes.labels)


def load_model(weights: Path | None) -> LoadedModel:
    """The model of the factory `digit_scenes_cnn`: the cached one, trained first if need be, or
    the one in `weights`."""
    path = embedded.weights_path(NAME, RECIPE_VERSION)
    if weights is None:
        model, info = embedded.load_cached(SceneCNN, path, WHERE, train)
    else:
        model, info = embedded.load(SceneCNN, weights, WHERE)
    mean, std = (tuple(t.flatten().tolist()) for t in (model.mean, model.std))
    spec = InputSpec((1, SCENE_SIZE, SCENE_SIZE), mean=mean, std=std, crop_pct=1.0)
    info = {"source": NAME, "recipe": RECIPE_VERSION, **info, "test_accuracy": test_accuracy(model)}
    return loaded_model(model.model, spec, CLASS_NAMES, None, info)
