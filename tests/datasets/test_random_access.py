"""Every built-in dataset's random access: `item(i)` is the i-th sample, also after pickling."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import tracekit
from tracekit.errors import TracekitError
from tracekit.protocols import LoadedModel, RandomAccessDataset
from tracekit.testing import tiny_model


def _imagefolder(tmp_path):
    rng = np.random.default_rng(0)
    for i, folder in enumerate(["class0", "class1", "class1", "class2", "class0"]):
        (tmp_path / folder).mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)).save(tmp_path / folder / f"{i}.png")
    return tracekit.create("dataset", "imagefolder", root=tmp_path)


def _npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "arrays.npz"
    np.savez(path, images=rng.integers(0, 256, (7, 16, 16, 3), dtype=np.uint8), labels=np.arange(7) % 3)
    return tracekit.create("dataset", "npz", path=path, limit=6)


DATASETS = {
    "digits": (lambda tmp_path: tracekit.create("dataset", "digits", limit=40), tiny_model(channels=1, size=32)),
    "imagefolder": (_imagefolder, tiny_model(channels=3, size=16)),
    "npz": (_npz, tiny_model(channels=1, size=16)),
    "synthetic": (
        lambda tmp_path: tracekit.create("dataset", "synthetic", n=9, size=24),
        tiny_model(channels=3, size=24),
    ),
}


def placeholder(model: LoadedModel) -> LoadedModel:
    """What a worker process gets: the input spec, classes and info, but no real module."""
    return LoadedModel(torch.nn.Identity(), model.input_size, model.class_names, model.wnids, dict(model.info))


@pytest.mark.parametrize("name", DATASETS)
def test_item_is_the_sample_at_its_position_also_after_pickling(tmp_path, name):
    make, model = DATASETS[name]
    dataset = make(tmp_path)
    assert isinstance(dataset, RandomAccessDataset)
    samples = list(dataset.samples(model))
    assert len(dataset) == len(samples) > 1
    copy = pickle.loads(pickle.dumps(dataset))
    for reader in (dataset, copy):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            items = [reader.item(i, placeholder(model)) for i in reversed(range(len(reader)))][::-1]
        assert [i[0] for i in items] == [s[0] for s in samples]
        assert [i[2] for i in items] == [s[2] for s in samples]
        assert all(type(i[2]) is int for i in items)
        for item, sample in zip(items, samples):
            assert torch.equal(item[1], sample[1]) and item[1].shape == model.input_size, item[0]


@pytest.mark.parametrize("name", DATASETS)
def test_a_model_that_does_not_fit_is_refused_by_item_too(tmp_path, name):
    make, model = DATASETS[name]
    channels, size, _ = model.input_size
    wrong = tiny_model(channels=2, size=size) if name == "imagefolder" else tiny_model(channels=channels, size=8)
    with pytest.raises(TracekitError):
        make(tmp_path).item(0, wrong)
