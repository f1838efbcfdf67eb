"""Models from files: TorchScript (`torchscript`) and state-dict checkpoints (`checkpoint`).

Weights files are read with the helpers every loader uses (`tracekit.models.weights`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import TracekitError
from ..protocols import LoadedModel
from .normalize import InputSpec, class_names_for, class_names_given, loaded_model
from .params import ClassNames, InputSize, MeanStd
from .weights import existing_file, load_weights, sha256


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _num_outputs(module: nn.Module, spec: InputSpec, where: str) -> int:
    """Classes the module predicts, from one forward pass on a blank input of `spec.input_size`."""
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, *spec.input_size))
    except Exception as exc:  # the user's module failed on the declared input
        raise TracekitError(
            f"{where}: the model fails on a 1x{'x'.join(map(str, spec.input_size))} input ({_first_line(exc)}); "
            "set input_size to the (channels, height, width) it takes"
        ) from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 1:
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise TracekitError(f"{where}: the model must return logits [N, classes], returned {shape}")
    return int(out.shape[1])


def load_torchscript(
    path: Path,
    input_size: InputSize,
    mean: MeanStd,
    std: MeanStd,
    class_names: ClassNames,
    crop_pct: float | None = None,
    interpolation: str | None = None,
) -> LoadedModel:
    """The model of the factory `torchscript_model` (`tracekit.models.factories`)."""
    where = "torchscript model"
    path = existing_file(path, where, "model file")
    bare = InputSpec(tuple(input_size), mean=None, std=None)
    spec = bare.override(where, mean=mean, std=std, crop_pct=crop_pct, interpolation=interpolation)
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated upstream, yet still the common format
            warnings.filterwarnings("ignore", message=".*torch.jit.* is deprecated", category=FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # not a TorchScript archive
        raise TracekitError(
            f"{where}: {path} is not a TorchScript file ({_first_line(exc)}); save one with "
            "torch.jit.save(torch.jit.script(model), path), or load a state dict with "
            "model: {name: checkpoint, path: ..., arch: ...}"
        ) from None
    module.eval()
    names, wnids, names_from = class_names_for(_num_outputs(module, spec, where), class_names, where)
    info = {"source": "torchscript", "path": str(path), "sha256": sha256(path), "class_names": names_from}
    return loaded_model(module, spec, names, wnids, info)


def load_checkpoint(
    path: Path,
    arch: str,
    source: str,
    num_classes: int | None,
    input_size: InputSize | None,
    mean: MeanStd,
    std: MeanStd,
    class_names: ClassNames,
    crop_pct: float | None = None,
    interpolation: str | None = None,
) -> LoadedModel:
    """The model of the factory `checkpoint_model` (`tracekit.models.factories`)."""
    from . import timm_models, torchvision_models

    where = f"checkpoint model '{arch}'"
    path = existing_file(path, where, "weights file")
    names = class_names_given(class_names, where)
    if num_classes is None and names is not None:
        num_classes = len(names)
    build = torchvision_models.build if source == "torchvision" else timm_models.build
    module, spec, outputs = build(arch, num_classes)
    spec = spec.override(where, input_size, mean, std, crop_pct, interpolation)
    info = {"source": "checkpoint", "arch_source": source, "arch": arch, **load_weights(module, path, where)}
    names, wnids, info["class_names"] = class_names_for(outputs, names, where)
    return loaded_model(module, spec, names, wnids, info)
