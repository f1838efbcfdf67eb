"""The built-in datasets' factories: each one's parameters (its signature, checked when a spec
loads) and summary. This module stays light: a factory imports its dataset (torch) in its body,
so that `tracekit validate` and `tracekit plugins` never import torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

if TYPE_CHECKING:
    from .digits import DigitsDataset
    from .imagefolder import ImageFolder
    from .npz import NpzImages
    from .synthetic import Synthetic

Split = Literal["train", "test", "all"]


def digits(split: Split = "test", limit: Annotated[int, Field(gt=0)] | None = None) -> DigitsDataset:
    """scikit-learn's handwritten digits at 1x32x32 (embedded, no download)."""
    from .digits import DigitsDataset

    return DigitsDataset(split, limit)


def imagefolder(
    root: Path,
    size: Annotated[int, Field(gt=0)] | None = None,
    limit: Annotated[int, Field(gt=0)] | None = None,
) -> ImageFolder:
    """Your images in ROOT/<class>/*.png|jpg, resized and center-cropped for the model."""
    from .imagefolder import ImageFolder

    return ImageFolder(root, size, limit)


def npz(
    path: Path,
    limit: Annotated[int, Field(gt=0)] | None = None,
    images_key: str = "images",
    labels_key: str = "labels",
    ids_key: str | None = None,
) -> NpzImages:
    """Images and labels from a NumPy .npz file or a folder of .npy files (uint8 or [0,1] floats; not resized)."""
    from .npz import NpzImages

    return NpzImages(path, limit, images_key, labels_key, ids_key)


def synthetic(
    n: Annotated[int, Field(gt=0)] = 64,
    size: Annotated[int, Field(gt=0)] | None = None,
    channels: Annotated[int, Field(gt=0)] | None = None,
    seed: int = 0,
) -> Synthetic:
    """Seeded smooth random images at the model's input size, for `labels: predicted` (no files)."""
    from .synthetic import Synthetic

    return Synthetic(n, size, channels, seed)
