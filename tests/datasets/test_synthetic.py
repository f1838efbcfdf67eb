"""synthetic: seeded smooth images computed from (seed, index) alone, at the model's input size."""

from __future__ import annotations

import pickle

import pytest
import torch

import tracekit
from tracekit.datasets.factories import synthetic
from tracekit.errors import SpecError, TracekitError
from tracekit.testing import tiny_model


def test_images_are_deterministic_distinct_smooth_and_in_range() -> None:
    model = tiny_model(channels=3, size=32)
    dataset = synthetic(n=6, seed=3)
    samples = list(dataset.samples(model))
    assert [s[0] for s in samples] == [f"synthetic-{i:06d}" for i in range(6)]
    assert [s[2] for s in samples] == [0] * 6 and dataset.info["labels"] == "predicted"
    images = torch.stack([s[1] for s in samples])
    assert images.shape == (6, 3, 32, 32) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1 and images.std() > 0.05
    assert all(not torch.equal(images[i], images[j]) for i in range(6) for j in range(i))
    # image-like: neighbouring pixels are far closer than unrelated ones
    assert (images[..., 1:] - images[..., :-1]).abs().mean() < 0.3 * (images[0] - images[1]).abs().mean()

    again = pickle.loads(pickle.dumps(synthetic(n=6, seed=3)))
    assert torch.equal(again.item(4, model)[1], images[4])  # from (seed, index) alone, in any order
    assert not torch.equal(synthetic(n=6, seed=4).item(4, model)[1], images[4])
    assert synthetic(n=1).item(0, tiny_model(channels=1, size=8))[1].shape == (1, 8, 8)


def test_size_and_channels_must_match_the_model() -> None:
    model = tiny_model(channels=3, size=16)
    assert len(synthetic(n=3, size=16, channels=3)) == 3
    assert synthetic(size=16, channels=3).item(0, model)[1].shape == (3, 16, 16)
    with pytest.raises(TracekitError, match=r"synthetic: images of 1x16x16 .* model takes 3x16x16"):
        synthetic(channels=1).item(0, model)
    with pytest.raises(TracekitError, match=r"images of 3x32x32 .* model takes 3x16x16"):
        next(synthetic(size=32).samples(model))
    with pytest.raises(IndexError):
        synthetic(n=3).item(3, model)


def test_registered_with_checked_parameters() -> None:
    assert len(tracekit.create("dataset", "synthetic")) == 64
    for bad in ({"n": 0}, {"size": 0}, {"channels": 0}):
        with pytest.raises(SpecError):
            tracekit.create("dataset", "synthetic", **bad)
