"""What every model loader shares: normalization folded into the module, the input spec,
the `mean`/`std`/`class_names` options, and assembling the `LoadedModel`.

Loaders build a bare module, describe its expected input with an `InputSpec`, and hand both to
`loaded_model`, which wraps the module in `Normalized` so that it takes [0, 1] pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..bounded import loads_json
from ..errors import TracekitError
from ..images import WHOLE_FRAME
from ..protocols import LoadedModel
from .params import ClassNames, MeanStd

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalized(nn.Module):
    """`model((x - mean) / std)`: takes [0, 1] pixels; `mean` and `std` are [1,C,1,1] buffers."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


@dataclass(frozen=True)
class InputSpec:
    """What a bare module expects: input size, normalization (None = takes [0, 1] pixels as is),
    and how evaluation images are prepared (`crop_pct`: crop size / resize size; the whole frame
    unless the module's source declares ImageNet-style preprocessing, as torchvision's and timm's do)."""

    input_size: tuple[int, int, int]
    mean: tuple[float, ...] | None = IMAGENET_MEAN
    std: tuple[float, ...] | None = IMAGENET_STD
    crop_pct: float = WHOLE_FRAME
    interpolation: str = "bilinear"

    def override(
        self,
        where: str,
        input_size: tuple[int, int, int] | None = None,
        mean: MeanStd = None,
        std: MeanStd = None,
        crop_pct: float | None = None,
        interpolation: str | None = None,
    ) -> InputSpec:
        """This spec with the user's `input_size`, `mean`, `std`, `crop_pct` and `interpolation`
        where given (checked)."""
        if crop_pct is not None or interpolation is not None:
            prepared = replace(
                self, crop_pct=crop_pct or self.crop_pct, interpolation=interpolation or self.interpolation
            )
            return prepared.override(where, input_size, mean, std)
        if (mean is None) != (std is None):
            raise TracekitError(f"{where}: give both mean and std (one per channel), or neither")
        size = tuple(int(v) for v in input_size) if input_size is not None else self.input_size
        if len(size) != 3 or min(size) < 1:
            raise TracekitError(f"{where}: input_size must be (channels, height, width), got {list(size)}")
        given = mean is not None
        mean, std = (mean, std) if given else (self.mean, self.std)
        if mean is None or std is None:
            return replace(self, input_size=size)  # type: ignore[arg-type]
        channels = size[0]
        for label, values in (("mean", mean), ("std", std)):
            if len(values) not in (1, channels):
                whose = "" if given else "the default "
                raise TracekitError(
                    f"{where}: {whose}{label} has {len(values)} values but the input has {channels} "
                    "channel(s); give mean and std with one value per channel (or one for all)"
                )
        if min(std) <= 0:
            raise TracekitError(f"{where}: std must be positive, got {list(std)}")
        return replace(
            self,
            input_size=size,  # type: ignore[arg-type]
            mean=tuple(float(m) for m in mean) * (channels if len(mean) == 1 else 1),
            std=tuple(float(s) for s in std) * (channels if len(std) == 1 else 1),
        )


def read_class_names(path: Path, where: str) -> list[str]:
    """Class names from a text file (one per line, blank lines ignored) or a JSON list."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TracekitError(f"{where}: cannot read class names file {path}: {exc.strerror or exc}") from None
    if path.suffix.lower() != ".json":
        return [line.strip() for line in text.splitlines() if line.strip()]
    names = loads_json(text, f"{where}: class names file {path}")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise TracekitError(f"{where}: class names file {path} must hold a JSON list of strings")
    return names


def class_names_given(class_names: ClassNames, where: str) -> list[str] | None:
    """The user's class names (a list, or a file read with `read_class_names`), if any."""
    if class_names is None:
        return None
    return read_class_names(class_names, where) if isinstance(class_names, Path) else list(class_names)


def class_names_for(num_classes: int, class_names: ClassNames, where: str) -> tuple[list[str], list[str] | None, str]:
    """`(names, wnids, where they came from)` for a classifier with `num_classes` outputs.

    The user's names win; otherwise a 1000-way model gets the ImageNet-1k names (and WordNet
    ids where known), anything else `class0`, `class1`, ...
    """
    from ..datasets.imagenet_classes import imagenet_classes

    given = class_names_given(class_names, where)
    if given is not None:
        if len(given) != num_classes:
            raise TracekitError(
                f"{where}: {len(given)} class names given but the model has {num_classes} outputs; "
                "give one name per output, in output order"
            )
        return given, None, "given"
    imagenet = imagenet_classes() if num_classes == 1000 else None
    if imagenet is not None:
        return imagenet[0], imagenet[1], "imagenet-1k (assumed from 1000 outputs)"
    return [f"class{i}" for i in range(num_classes)], None, "generic"


def loaded_model(
    module: nn.Module,
    spec: InputSpec,
    class_names: list[str],
    wnids: list[str] | None,
    info: dict[str, Any],
) -> LoadedModel:
    """Fold `spec`'s normalization into `module` (eval mode, CPU) and record the input spec in `info`."""
    module = module.cpu().eval()
    if spec.mean is not None and spec.std is not None:
        module = Normalized(module, spec.mean, spec.std).eval()
    info = {
        **info,
        "input_size": list(spec.input_size),
        "mean": None if spec.mean is None else list(spec.mean),
        "std": None if spec.std is None else list(spec.std),
        "crop_pct": spec.crop_pct,
        "interpolation": spec.interpolation,
    }
    return LoadedModel(module, spec.input_size, list(class_names), None if wnids is None else list(wnids), info)
