"""The embedded `digits` dataset: ids, split, images and labels against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.transform import resize
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import tracekit
from tracekit.datasets.digits import DigitsDataset, digits_arrays
from tracekit.datasets.factories import digits
from tracekit.errors import SpecError, TracekitError
from tracekit.protocols import Dataset
from tracekit.testing import tiny_model

RAW = load_digits()


def test_ids_follow_load_digits_order_and_are_unique() -> None:
    ids, _, labels = digits_arrays("all")
    assert ids == [f"digits-{i:04d}" for i in range(1797)]
    assert len(set(ids)) == len(ids) == len(labels)
    assert digits_arrays("all")[0] == ids  # stable from call to call


def test_split_is_sklearns_stratified_split_sorted() -> None:
    train_ids, _, _ = digits_arrays("train")
    test_ids, _, _ = digits_arrays("test")
    ref_train, ref_test = train_test_split(np.arange(1797), test_size=0.3, random_state=0, stratify=RAW.target)
    assert train_ids == [f"digits-{i:04d}" for i in sorted(ref_train)]
    assert test_ids == [f"digits-{i:04d}" for i in sorted(ref_test)]
    assert (len(train_ids), len(test_ids)) == (1257, 540)
    assert not set(train_ids) & set(test_ids)
    assert sorted(train_ids + test_ids) == digits_arrays("all")[0]


@pytest.mark.parametrize("split", ["train", "test", "all"])
def test_images_and_labels_match_sklearn(split: str) -> None:
    ids, images, labels = digits_arrays(split)
    index = [int(i.removeprefix("digits-")) for i in ids]
    assert images.shape == (len(ids), 1, 32, 32) and images.dtype == torch.float32
    assert labels.dtype == torch.long
    assert labels.tolist() == RAW.target[index].tolist()
    assert images.min() >= 0 and images.max() <= 1
    # Independent reference: scikit-image's bilinear (order 1) resize with edge padding is the
    # same half-pixel-centred interpolation as torch's align_corners=False.
    reference = np.stack(
        [resize(RAW.images[i] / 16, (32, 32), order=1, mode="edge", anti_aliasing=False) for i in index[:50]]
    )
    np.testing.assert_allclose(images[:50, 0].numpy(), reference, atol=1e-5)


def test_dataset_yields_split_samples_for_a_1x32x32_model() -> None:
    dataset = digits(split="test")
    assert isinstance(dataset, Dataset)
    samples = list(dataset.samples(tiny_model(channels=1, size=32)))
    ids, images, labels = digits_arrays("test")
    assert [s[0] for s in samples] == ids
    assert all(type(s[2]) is int for s in samples)
    assert [s[2] for s in samples] == labels.tolist()
    assert torch.equal(torch.stack([s[1] for s in samples]), images)
    assert dataset.info["split"] == "test" and dataset.info["size"] == 540


def test_limit_keeps_the_first_ids_in_sorted_order() -> None:
    dataset = tracekit.create("dataset", "digits", split="train", limit=7)
    assert isinstance(dataset, DigitsDataset)
    ids = [s[0] for s in dataset.samples(tiny_model(channels=1, size=32))]
    assert ids == digits_arrays("train")[0][:7]
    assert (dataset.info["size"], dataset.info["split_size"]) == (7, 1257)
    with pytest.raises(SpecError, match="limit"):
        tracekit.create("dataset", "digits", limit=0)
    with pytest.raises(SpecError, match="split"):
        tracekit.create("dataset", "digits", split="validation")


def test_model_with_another_input_size_is_refused(tiny) -> None:
    with pytest.raises(TracekitError, match=r"1x32x32.*1x16x16"):
        next(digits().samples(tiny))
