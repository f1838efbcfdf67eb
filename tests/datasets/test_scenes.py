"""The `digit-scenes` dataset: deterministic scenes, a split by digit, stable ids, checked sizes."""

from __future__ import annotations

import pytest
import torch

import tracekit
from tracekit.datasets import scenes as scenes_module
from tracekit.datasets.digits import _all_digits
from tracekit.datasets.scenes import FRAGMENT_BRIGHTNESS, make_scenes
from tracekit.errors import SpecError, TracekitError
from tracekit.testing import tiny_model


def create(**params):
    return tracekit.create("dataset", "digit-scenes", **params)


@pytest.fixture(scope="module")
def scene_model():
    """A LoadedModel stand-in that takes 1x48x48 inputs (items only check the input size)."""
    from dataclasses import replace

    return replace(tiny_model(), input_size=(1, 48, 48))


def test_scenes_are_deterministic_whatever_the_limit_or_block(scene_model, monkeypatch) -> None:
    full = create(limit=40)
    again = create(limit=40)
    assert full.ids == again.ids
    first = torch.stack([full.item(i, scene_model)[1] for i in range(len(full))])
    assert torch.equal(first, torch.stack([again.item(i, scene_model)[1] for i in range(len(again))]))
    assert torch.equal(first, full.scenes(torch.arange(len(full))))
    short = create(limit=7)
    assert torch.equal(short.item(6, scene_model)[1], first[6])
    monkeypatch.setattr(scenes_module, "BLOCK", 3)  # scenes made in other groups
    small_blocks = create(limit=40)
    assert torch.equal(torch.stack([small_blocks.item(i, scene_model)[1] for i in range(40)]), first)
    assert not torch.equal(create(limit=40, seed=1).scenes(torch.arange(40)), first)


def test_items_are_gray_scenes_with_the_digits_labels(scene_model) -> None:
    data = create(limit=30, copies=2)
    images, labels, _ = _all_digits()
    sample_id, image, label = data.item(5, scene_model)
    assert image.shape == (1, 48, 48) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert sample_id == data.ids[5] and len(set(data.ids)) == len(data.ids) == 30
    digit = int(sample_id.split("-")[2])
    assert label == int(labels[digit])
    # digit-major ids: both copies of a digit, then the next digit
    assert [i.rsplit("-", 1)[1] for i in data.ids[:4]] == ["0", "1", "0", "1"]
    assert data.ids[0].rsplit("-", 1)[0] == data.ids[1].rsplit("-", 1)[0]


def test_train_and_test_never_share_a_digit() -> None:
    train, test = create(split="train"), create(split="test")

    def digits_of(data) -> set[int]:
        return {int(i.split("-")[2]) for i in data.ids}

    assert digits_of(train).isdisjoint(digits_of(test))
    assert len(digits_of(train)) + len(digits_of(test)) == 1797
    # the distractors come from the scene's own part: its source pool is that part's digits
    assert len(test.sources) == len(digits_of(test)) and len(train.sources) == len(digits_of(train))


def test_distractors_come_from_the_pool_dimmed() -> None:
    digits = torch.zeros(4, 16, 16)
    pool = torch.ones(2, 16, 16)
    keys = torch.arange(4)
    scenes = make_scenes(digits, keys, pool, size=48, clutter=0.0, distractors=2, seed=0)
    assert set(scenes.unique().tolist()) == {0.0, FRAGMENT_BRIGHTNESS}
    # half a digit each: at most 2 x 128 bright pixels, at least 128 (they may overlap)
    bright = (scenes > 0).flatten(1).sum(1)
    assert bool(((bright >= 128) & (bright <= 256)).all())
    plain = make_scenes(digits + 1, keys, pool, size=48, clutter=0.0, distractors=0, seed=0)
    assert bool(((plain == 1).flatten(1).sum(1) == 256).all())  # the digit, whole, inside the scene


def test_clutter_bounds_the_background() -> None:
    digits = torch.zeros(8, 16, 16)
    for clutter in (0.0, 0.2, 0.6):
        scenes = make_scenes(digits, torch.arange(8), digits[:0], size=32, clutter=clutter, distractors=0, seed=3)
        assert float(scenes.max()) <= clutter + 1e-6 and float(scenes.min()) >= 0.0
    assert float(scenes.std()) > 0.01  # random, not flat


def test_parameters_are_checked() -> None:
    with pytest.raises(SpecError, match="digit_size 40 is larger than the scene"):
        create(size=32, digit_size=40)
    with pytest.raises(SpecError, match="clutter"):
        create(clutter=1.5)
    with pytest.raises(SpecError, match="split"):
        create(split="validation")


def test_a_model_of_another_size_is_refused_with_the_fix() -> None:
    data = create(limit=2)
    with pytest.raises(TracekitError, match=r"1x48x48 gray scenes but the model takes 1x16x16.*digit-scenes-cnn"):
        data.item(0, tiny_model())
