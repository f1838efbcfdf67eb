"""Models from files: TorchScript (`torchscript`) and state-dict checkpoints (`checkpoint`) of a
torchvision or timm architecture or of any `nn.Module` a Python callable builds (`source: python`).

Weights files are read with the helpers every loader uses (`tracekit.models.weights`): always
`torch.load(weights_only=True)`. A `source: python` callable is imported from the user's
environment (an installed package, or a folder on PYTHONPATH), never from the current directory
by accident: Python's implicit `''` entry of `python -c`/`-m` is left out of the search. Code named
by a run directory is imported only when the user says so (`detect --trust-code`).
"""

from __future__ import annotations

import importlib
import sys
import warnings
from pathlib import Path
from typing import Any

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


def build_python(arch: str, kwargs: dict[str, Any], where: str) -> nn.Module:
    """The `nn.Module` that `package.module:Callable` (imported from the user's environment) builds
    when called with `kwargs`; one clear error for each way it can fail."""
    module_name, sep, attribute = arch.partition(":")
    if not sep or not module_name or not attribute:
        raise TracekitError(f"{where}: with source: python, arch is 'package.module:Callable', got {arch!r}")
    implicit = [entry for entry in sys.path if entry == ""]  # the current directory of `python -c`/`-m`
    for entry in implicit:
        sys.path.remove(entry)
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raises while it loads
        raise TracekitError(
            f"{where}: cannot import {module_name} ({_first_line(exc)}); install the package that defines it, "
            "or put its folder on PYTHONPATH"
        ) from None
    finally:
        sys.path[:0] = implicit
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise TracekitError(f"{where}: {module_name} has no '{attribute}'")
        target = getattr(target, part)
    if not callable(target):
        raise TracekitError(f"{where}: {arch} is a {type(target).__name__}, not a callable that builds the model")
    try:
        module = target(**kwargs)
    except Exception as exc:  # the user's constructor
        raise TracekitError(f"{where}: {arch}(**kwargs) failed ({_first_line(exc)}); check kwargs") from None
    if not isinstance(module, nn.Module):
        raise TracekitError(f"{where}: {arch} returned a {type(module).__name__}, not a torch.nn.Module")
    return module


def _python_checkpoint(
    arch: str, kwargs: dict[str, Any], path: Path, input_size: InputSize | None, where: str
) -> tuple[nn.Module, InputSpec, int, dict[str, Any]]:
    """A `source: python` model with its weights, its input spec (no normalization unless the spec
    gives mean and std) and output count, and its provenance."""
    if input_size is None:
        raise TracekitError(f"{where}: with source: python, give input_size (channels, height, width)")
    module = build_python(arch, kwargs, where)
    info = {"source": "checkpoint", "arch_source": "python", "arch": arch, "kwargs": kwargs}
    info.update(load_weights(module, path, where))
    spec = InputSpec(tuple(input_size), mean=None, std=None)  # type: ignore[arg-type]
    return module.eval(), spec, _num_outputs(module.eval(), spec, where), info


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
    kwargs: dict[str, Any] | None = None,
) -> LoadedModel:
    """The model of the factory `checkpoint_model` (`tracekit.models.factories`)."""
    from . import timm_models, torchvision_models

    where = f"checkpoint model '{arch}'"
    path = existing_file(path, where, "weights file")
    names = class_names_given(class_names, where)
    if source == "python":
        module, spec, outputs, info = _python_checkpoint(arch, dict(kwargs or {}), path, input_size, where)
        spec = spec.override(where, None, mean, std, crop_pct, interpolation)
        names, wnids, info["class_names"] = class_names_for(outputs, names, where)
        return loaded_model(module, spec, names, wnids, info)
    if kwargs:
        raise TracekitError(f"{where}: kwargs are for source: python; {source} architectures take num_classes")
    if num_classes is None and names is not None:
        num_classes = len(names)
    build = torchvision_models.build if source == "torchvision" else timm_models.build
    module, spec, outputs = build(arch, num_classes)
    spec = spec.override(where, input_size, mean, std, crop_pct, interpolation)
    info = {"source": "checkpoint", "arch_source": source, "arch": arch, **load_weights(module, path, where)}
    names, wnids, info["class_names"] = class_names_for(outputs, names, where)
    return loaded_model(module, spec, names, wnids, info)
