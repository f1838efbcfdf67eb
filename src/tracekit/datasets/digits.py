"""The embedded dataset: scikit-learn's 8x8 handwritten digits, upscaled to 1x32x32.

1797 real handwritten digits ship with scikit-learn (no download). Each image is scaled from
0..16 to [0, 1] and resized bilinearly to 32x32. A stratified, seeded 70/30 split gives the
`train` part (used to train `digits-cnn`) and the `test` part; sample ids `digits-NNNN` are the
index in `load_digits()` order, so they are stable across runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import torch

from ..errors import TracekitError
from ..protocols import Item, LoadedModel
from .params import Split

IMAGE_SIZE = (1, 32, 32)
TEST_FRACTION = 0.3
SPLIT_SEED = 0


@lru_cache(maxsize=4)
def upscaled(size: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, list[int]]]:
    """Every digit `[1797,1,size,size]` in [0, 1] (the 8x8 scan resized bilinearly), every label,
    and the indices of each split (sorted). `digit-scenes` places them at its `digit_size`."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    raw = load_digits()
    small = torch.as_tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    labels = torch.as_tensor(raw.target, dtype=torch.long)
    indices = list(range(len(labels)))
    train, test = train_test_split(indices, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=raw.target)
    splits = {"train": sorted(train), "test": sorted(test), "all": indices}
    return images.clamp_(0.0, 1.0), labels, splits


def _all_digits() -> tuple[torch.Tensor, torch.Tensor, dict[str, list[int]]]:
    """Every image `[1797,1,32,32]`, every label, and the indices of each split (sorted)."""
    return upscaled(IMAGE_SIZE[1])


def digits_arrays(split: Split) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Ids (sorted), images `[N,1,32,32]` in [0, 1] and labels `[N]` of one split."""
    images, labels, splits = _all_digits()
    if split not in splits:
        raise TracekitError(f"unknown digits split '{split}'; use one of: {', '.join(splits)}")
    index = torch.tensor(splits[split], dtype=torch.long)
    ids = [f"digits-{i:04d}" for i in splits[split]]
    return ids, images[index], labels[index]


class DigitsDataset:
    """One split of the digits (optionally its first `limit` ids), as 1x32x32 images in [0, 1]."""

    def __init__(self, split: Split = "test", limit: int | None = None) -> None:
        ids, images, labels = digits_arrays(split)
        split_size = len(ids)
        if limit is not None:
            ids, images, labels = ids[:limit], images[:limit], labels[:limit]
        self.ids, self.images, self.labels = ids, images, labels
        self.info: dict[str, Any] = {
            "split": split,
            "size": len(ids),
            "split_size": split_size,
            "test_fraction": TEST_FRACTION,
            "split_seed": SPLIT_SEED,
        }

    def __len__(self) -> int:
        return len(self.ids)

    def item(self, index: int, model: LoadedModel) -> Item:
        """`(sample_id, image[1,32,32], label)` of item `index`; the model must take 1x32x32 inputs."""
        if tuple(model.input_size) != IMAGE_SIZE:
            raise TracekitError(
                f"dataset 'digits' has 1x32x32 gray images but the model takes "
                f"{'x'.join(map(str, model.input_size))} inputs; use a model built for digits "
                f"(model: {{name: digits-cnn}}) or a dataset that fits the model (e.g. imagefolder)"
            )
        return self.ids[index], self.images[index].clone(), int(self.labels[index])

    def samples(self, model: LoadedModel) -> Iterator[Item]:
        """Yield `(sample_id, image[1,32,32], label)`; the model must take 1x32x32 inputs."""
        for index in range(len(self)):
            yield self.item(index, model)
