"""Models from files: TorchScript (`torchscript`) and state-dict checkpoints (`checkpoint`).

Also the weights-file helpers every loader uses: state dicts are read with
`torch.load(weights_only=True)` (or safetensors), never as arbitrary pickles, and every file
a model came from is recorded in `info` with its SHA-256.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import TracekitError
from ..protocols import LoadedModel
from .factories import ClassNames, InputSize, MeanStd
from .normalize import InputSpec, class_names_for, class_names_given, loaded_model

_SHOWN = 3  # keys shown per kind of mismatch


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def existing_file(path: Path | str, where: str, what: str = "file") -> Path:
    """`path` (with `~` expanded) if it is a file, else a clear error."""
    path = Path(path).expanduser()
    if not path.is_file():
        problem = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise TracekitError(f"{where}: {what} {path} {problem}; check the path")
    return path


def weights_load_error(path: Path, exc: Exception, where: str) -> TracekitError:
    """The one message for a weights file that could not be loaded (weights only) into a model."""
    text = str(exc)
    # torch's wording changes between versions ("Unsupported global: GLOBAL x", "unsupported GLOBAL
    # x whose module ... is blocked"); its advice to retry with weights_only=False is never repeated.
    pickled = re.search(r"[Uu]nsupported (?:global: )?GLOBAL (\S+)", text)
    if pickled:
        return TracekitError(
            f"{where}: {path} holds Python objects besides tensors ({pickled.group(1).rstrip('.')}, for example a "
            "whole pickled model), "
            "and tracekit only loads plain weights (torch.load weights_only=True), never arbitrary pickles; "
            "save model.state_dict() instead, or export TorchScript (model: {name: torchscript})"
        )
    advice = ("Weights only load failed", "weights_only", "Check the documentation of torch.load")
    lines = [
        line.strip() for line in text.split("WeightsUnpickler error:")[-1].splitlines()
        if line.strip() and not any(a in line for a in advice)
    ]
    if lines and lines[0].startswith("Error(s) in loading state_dict"):
        detail = " ".join(lines[1:])
        detail = detail if len(detail) <= 300 else detail[:300] + "..."
        return TracekitError(f"{where}: weights file {path} does not fit the model ({detail}); check the architecture")
    reason = lines[0] if lines else type(exc).__name__
    return TracekitError(f"{where}: cannot read {path} as PyTorch weights ({reason}); is it the right file?")


def load_state_dict(path: Path | str, where: str) -> dict[str, torch.Tensor]:
    """A state dict from a `.safetensors` file or a `torch.save` file (weights only).

    A checkpoint dict holding it under `state_dict` or `model` is unwrapped, and a
    `module.` prefix (from DataParallel) is dropped.
    """
    path = existing_file(path, where, "weights file")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure to read the user's file is theirs to fix
        raise weights_load_error(path, exc, where) from None
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not (
        isinstance(obj, Mapping)
        and obj
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        raise TracekitError(
            f"{where}: {path} does not hold a state dict (a mapping of parameter names to tensors, "
            f"found {type(obj).__name__}); save it with torch.save(model.state_dict(), path)"
        )
    if all(k.startswith("module.") for k in obj):
        return {k.removeprefix("module."): v for k, v in obj.items()}
    return dict(obj)


def _listed(label: str, items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN]) + (", ..." if len(items) > _SHOWN else "")
    return f"{len(items)} {label} ({shown})"


def load_weights(module: nn.Module, path: Path | str, where: str) -> dict[str, Any]:
    """Load a state dict file into `module` (all keys, all shapes must match); provenance for `info`."""
    path = existing_file(path, where, "weights file")
    state = load_state_dict(path, where)
    own = module.state_dict()
    mismatched = [
        f"{k}: file {list(v.shape)}, model {list(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    problems = [_listed("size mismatches", mismatched)] if mismatched else []
    if not mismatched:
        result = module.load_state_dict(state, strict=False)
        if result.missing_keys:
            problems.append(_listed("missing keys", list(result.missing_keys)))
        if result.unexpected_keys:
            problems.append(_listed("unexpected keys", list(result.unexpected_keys)))
    if problems:
        raise TracekitError(
            f"{where}: weights file {path} does not fit the model: {'; '.join(problems)}; "
            "check the architecture and num_classes"
        )
    return {"weights_file": str(path), "sha256": sha256(path)}


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
    path: Path, input_size: InputSize, mean: MeanStd, std: MeanStd, class_names: ClassNames
) -> LoadedModel:
    """The model of the factory `torchscript_model` (`tracekit.models.factories`)."""
    where = "torchscript model"
    path = existing_file(path, where, "model file")
    spec = InputSpec(tuple(input_size), mean=None, std=None).override(where, mean=mean, std=std)
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
    spec = spec.override(where, input_size, mean, std)
    info = {"source": "checkpoint", "arch_source": source, "arch": arch, **load_weights(module, path, where)}
    names, wnids, info["class_names"] = class_names_for(outputs, names, where)
    return loaded_model(module, spec, names, wnids, info)
