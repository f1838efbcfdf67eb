"""torchvision classifiers by name (`torchvision`), with weights from the local cache or a file.

`weights` is a torchvision weights name (`IMAGENET1K_V1`, `DEFAULT`, ...), whose file must
already be in the torch hub cache (tracekit never downloads), or a path to a state dict.
Normalization, input size and class names come from the weights' metadata.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from torch import nn

from ..datasets.imagenet_classes import imagenet_classes
from ..errors import TracekitError, did_you_mean
from ..protocols import LoadedModel
from .normalize import InputSpec, class_names_for, loaded_model
from .weights import existing_file, load_weights, sha256, weights_load_error

_WEIGHTS_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")


def _is_path(weights: str) -> bool:
    """Whether a `weights` value that is no weights name means a file."""
    return (
        Path(weights).expanduser().exists()
        or weights.lower().endswith(_WEIGHTS_FILE_SUFFIXES)
        or any(sep in weights for sep in ("/", os.sep))
    )


def _check_arch(arch: str) -> None:
    import torchvision.models as tvm

    known = tvm.list_models(module=tvm)
    if arch not in known:
        raise TracekitError(
            f"unknown torchvision architecture '{arch}'{did_you_mean(arch, known)}; "
            "torchvision.models.list_models() lists them"
        )


def _weights_enum(arch: str) -> Any | None:
    import torchvision.models as tvm

    try:
        return tvm.get_model_weights(arch)
    except (KeyError, ValueError):
        return None


def _input_spec(weights: Any) -> InputSpec:
    """Input size, normalization and resize ratio from a weights entry's evaluation transforms."""
    transforms = weights.transforms()
    crop, resize = int(transforms.crop_size[0]), int(transforms.resize_size[0])
    return InputSpec(
        (3, crop, crop),
        tuple(transforms.mean),
        tuple(transforms.std),
        crop_pct=crop / resize,
        interpolation=transforms.interpolation.value,
    )


def build(arch: str, num_classes: int | None = None) -> tuple[nn.Module, InputSpec, int]:
    """A randomly initialized `arch`, the input spec of its default weights, and its output count."""
    import torchvision.models as tvm

    _check_arch(arch)
    num_classes = num_classes or 1000
    module = tvm.get_model(arch, weights=None, num_classes=num_classes)
    enum = _weights_enum(arch)
    spec = _input_spec(enum.DEFAULT) if enum is not None and hasattr(enum, "DEFAULT") else InputSpec((3, 224, 224))
    return module, spec, num_classes


@contextmanager
def _weights_only_loads() -> Iterator[None]:
    """Every `torch.load` inside (torchvision's own too) refuses anything but plain weights."""
    key = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
    before = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def cached_weights_file(weights: Any) -> Path:
    """Where torchvision keeps `weights` in the local torch hub cache (it may not be there)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def _from_weights_entry(arch: str, weights: Any, num_classes: int | None, where: str) -> LoadedModel:
    import torchvision.models as tvm

    categories = list(weights.meta["categories"])
    if num_classes is not None and num_classes != len(categories):
        raise TracekitError(
            f"{where}: weights {weights} predict {len(categories)} classes, not num_classes={num_classes}; "
            "leave num_classes out, or give a state dict file of your own as weights"
        )
    file = cached_weights_file(weights)
    if not file.is_file():
        raise TracekitError(
            f"{where}: weights {weights} are not in the local torch hub cache: {file} does not exist, "
            f"and tracekit never downloads. Copy the file there (it is {weights.url}), set TORCH_HOME "
            f"to a cache that has it, or give its path: weights: /path/to/{file.name}"
        )
    try:
        with _weights_only_loads():
            module = tvm.get_model(arch, weights=weights)  # torchvision's builder reads the cached file
    except Exception as exc:  # the cached file is unreadable or not plain weights
        raise weights_load_error(file, exc, where) from None
    imagenet = imagenet_classes()
    wnids = imagenet[1] if imagenet is not None and categories == imagenet[0] else None
    info = {
        "source": "torchvision",
        "arch": arch,
        "weights": weights.name,
        "weights_file": str(file),
        "sha256": sha256(file),
        "url": weights.url,
    }
    return loaded_model(module, _input_spec(weights), categories, wnids, info)


def load_model(arch: str, weights: str | None, num_classes: int | None) -> LoadedModel:
    """The model of the factory `torchvision_model` (`tracekit.models.factories`)."""
    where = f"torchvision model '{arch}'"
    _check_arch(arch)
    enum = _weights_enum(arch)
    names = list(enum.__members__) if enum is not None else []
    if weights is not None and weights in names:
        return _from_weights_entry(arch, enum[weights], num_classes, where)
    if weights is not None and not _is_path(weights):
        offer = did_you_mean(weights, names) if names else " (this architecture has no published weights)"
        raise TracekitError(
            f"{where}: unknown weights '{weights}'{offer}; give a torchvision weights name "
            "or a path to a state dict file"
        )
    file = None if weights is None else existing_file(weights, where, "weights file")
    module, spec, outputs = build(arch, num_classes)
    info: dict[str, Any] = {"source": "torchvision", "arch": arch, "weights": weights}
    if file is None:
        info["random_init"] = True
    else:
        info.update(load_weights(module, file, where))
    class_names, wnids, info["class_names"] = class_names_for(outputs, None, where)
    return loaded_model(module, spec, class_names, wnids, info)
