"""The built-in datasets' factories, each registered under its name where it is defined
(`@datasets.register`): its parameters (its signature, checked when a spec loads) and summary. This
module stays light: a factory imports its dataset (torch) in its body, so that `tracekit validate`
and `tracekit plugins` never import torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from ..errors import SpecError
from ..hookspecs import Components
from .params import Split

if TYPE_CHECKING:
    from .digits import DigitsDataset
    from .imagefolder import ImageFolder
    from .npz import NpzImages
    from .scenes import DigitScenes
    from .synthetic import Synthetic

datasets = Components("dataset")

# digit-scenes' defaults (the scenes digit-scenes-cnn is trained on)
SCENE_SIZE, DIGIT_SIZE, CLUTTER, DISTRACTORS = 48, 16, 0.3, 3


@datasets.register("digits")
def digits(split: Split = "test", limit: Annotated[int, Field(gt=0)] | None = None) -> DigitsDataset:
    """scikit-learn's handwritten digits at 1x32x32 (embedded, no download)."""
    from .digits import DigitsDataset

    return DigitsDataset(split, limit)


@datasets.register("digit-scenes")
def digit_scenes(
    split: Split = "test",
    limit: Annotated[int, Field(gt=0)] | None = None,
    size: Annotated[int, Field(ge=8, le=256)] = SCENE_SIZE,
    digit_size: Annotated[int, Field(ge=4, le=256)] = DIGIT_SIZE,
    clutter: Annotated[float, Field(ge=0.0, le=1.0)] = CLUTTER,
    distractors: Annotated[int, Field(ge=0, le=16)] = DISTRACTORS,
    copies: Annotated[int, Field(ge=1, le=64)] = 1,
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0,
) -> DigitScenes:
    """Handwritten digits placed in larger cluttered scenes, 1 x size x size (embedded, no download)."""
    if digit_size > size:
        raise SpecError(
            f"dataset 'digit-scenes': digit_size {digit_size} is larger than the scene (size {size}); "
            "use digit_size <= size"
        )
    from .scenes import DigitScenes

    return DigitScenes(split, limit, size, digit_size, clutter, distractors, range(copies), seed)


@datasets.register("imagefolder")
def imagefolder(
    root: Path,
    size: Annotated[int, Field(gt=0)] | None = None,
    limit: Annotated[int, Field(gt=0)] | None = None,
) -> ImageFolder:
    """Your images in ROOT/<class>/*.png|jpg, resized and center-cropped for the model."""
    from .imagefolder import ImageFolder

    return ImageFolder(root, size, limit)


@datasets.register("npz")
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


@datasets.register("synthetic")
def synthetic(
    n: Annotated[int, Field(gt=0)] = 64,
    size: Annotated[int, Field(gt=0)] | None = None,
    channels: Annotated[int, Field(gt=0)] | None = None,
    seed: int = 0,
) -> Synthetic:
    """Seeded smooth random images at the model's input size, for `labels: predicted` (no files)."""
    from .synthetic import Synthetic

    return Synthetic(n, size, channels, seed)
