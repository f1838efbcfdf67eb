"""The built-in models' factories, each registered under its name where it is defined
(`@models.register`): its parameters (its signature, checked when a spec loads) and summary. This
module stays light: a factory imports its loader (torch, torchvision, timm) in its body, so that
`tracekit validate` and `tracekit plugins` never import torch. The parameter types the loaders
share are in `tracekit.models.params`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from ..hookspecs import Components
from .params import ClassNames, CropPct, InputSize, Interpolation, MeanStd

if TYPE_CHECKING:
    from ..protocols import LoadedModel

models = Components("model")


@models.register("digits-cnn")
def digits_cnn(weights: Path | None = None) -> LoadedModel:
    """Small CNN for the embedded digits, trained on first use and cached (or a weights file)."""
    from .digits_cnn import load_model

    return load_model(weights)


@models.register("digit-scenes-cnn")
def digit_scenes_cnn(weights: Path | None = None) -> LoadedModel:
    """VGG-style CNN for the embedded digit-scenes, trained on first use and cached (or a weights file)."""
    from .scenes_cnn import load_model

    return load_model(weights)


@models.register("torchvision")
def torchvision_model(
    arch: str,
    weights: str | None = None,
    num_classes: Annotated[int, Field(gt=0)] | None = None,
) -> LoadedModel:
    """A torchvision classifier; weights: a name like IMAGENET1K_V1 (from the local cache) or a file."""
    from .torchvision_models import load_model

    return load_model(arch, weights, num_classes)


@models.register("timm")
def timm_model(arch: str, pretrained: bool = False, weights: Path | None = None) -> LoadedModel:
    """A timm classifier; pretrained weights only from the local cache, or from a weights file."""
    from .timm_models import load_model

    return load_model(arch, pretrained, weights)


@models.register("torchscript")
def torchscript_model(
    path: Path,
    input_size: InputSize = (3, 224, 224),
    mean: MeanStd = None,
    std: MeanStd = None,
    class_names: ClassNames = None,
    crop_pct: CropPct = None,
    interpolation: Interpolation = None,
) -> LoadedModel:
    """A TorchScript classifier file (mean/std: its normalization, if not built in; crop_pct and
    interpolation: how image files are resized and cropped, default the whole frame, bilinear)."""
    from .files import load_torchscript

    return load_torchscript(path, input_size, mean, std, class_names, crop_pct, interpolation)


@models.register("checkpoint")
def checkpoint_model(
    path: Path,
    arch: str,
    source: Literal["torchvision", "timm", "python"] = "torchvision",
    num_classes: Annotated[int, Field(gt=0)] | None = None,
    input_size: InputSize | None = None,
    mean: MeanStd = None,
    std: MeanStd = None,
    class_names: ClassNames = None,
    crop_pct: CropPct = None,
    interpolation: Interpolation = None,
    kwargs: dict[str, Any] | None = None,
) -> LoadedModel:
    """A state-dict file of a torchvision or timm architecture, or of any nn.Module that a Python
    callable builds (source: python, arch: 'package.module:Callable', kwargs: its keyword arguments,
    input_size required); crop_pct and interpolation: how image files are resized and cropped."""
    from .files import load_checkpoint

    return load_checkpoint(
        path, arch, source, num_classes, input_size, mean, std, class_names, crop_pct, interpolation, kwargs
    )
