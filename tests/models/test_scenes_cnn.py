"""`digit-scenes-cnn`: trained on first use to its accuracy, and the paper's premise as a number.

Trains once (about 30 s on 2 cores). How the embedded models cache, reload and retrain their
weights deterministically is tested once, on digits-cnn (tests/models/test_digits_cnn.py): both
go through `tracekit.models.embedded`.
"""

from __future__ import annotations

import pytest
import torch

import tracekit
from tracekit.datasets.digits import digits_arrays
from tracekit.models import scenes_cnn
from tracekit.protocols import LoadedModel


@pytest.fixture(scope="module")
def scenes_model() -> LoadedModel:
    return tracekit.create("model", "digit-scenes-cnn")


@pytest.mark.slow
def test_trained_model_is_accurate_and_described(scenes_model) -> None:
    assert scenes_model.input_size == (1, 48, 48)
    assert scenes_model.class_names == [str(d) for d in range(10)]
    assert not scenes_model.module.training
    data = tracekit.create("dataset", "digit-scenes", split="test")
    images = data.scenes(torch.arange(len(data)))
    with torch.no_grad():
        accuracy = (scenes_model.module(images).argmax(1) == data.labels).float().mean().item()
    assert accuracy >= 0.97
    assert scenes_model.info["test_accuracy"] == pytest.approx(accuracy)
    assert scenes_model.info["recipe"] == scenes_cnn.RECIPE_VERSION


@pytest.mark.slow
def test_the_premise_clean_scene_maps_are_focused_digit_maps_are_not(scenes_model) -> None:
    """The paper's premise as a number: on the scenes the trained model's clean guided-backprop
    maps have a low mean 3x3 local entropy; on the full-frame digits they sit near the maximum."""
    detector = tracekit.create("detector", "feature-response")
    data = tracekit.create("dataset", "digit-scenes", split="test", limit=200)
    scenes = detector.score(scenes_model.module, data.scenes(torch.arange(len(data))))
    _, digits, _ = digits_arrays("test")
    digits_model = tracekit.create("model", "digits-cnn")
    on_digits = detector.score(digits_model.module, digits[:200])
    assert scenes.mean() < 1.0 < 2.5 < on_digits.mean(), (scenes.mean().item(), on_digits.mean().item())
    assert scenes.quantile(0.9) < on_digits.quantile(0.1)


def test_a_smaller_variant_trains_deterministically() -> None:
    recipe = scenes_cnn.embedded.Recipe(epochs=1, batch_size=32, max_lr=3e-3)
    first = scenes_cnn.train(recipe, widths=(4, 8, 8), limit=64).state_dict()
    again = scenes_cnn.train(recipe, widths=(4, 8, 8), limit=64).state_dict()
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
