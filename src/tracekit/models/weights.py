"""The weights-file helpers every model loader uses: state dicts are read with
`torch.load(weights_only=True)` (or safetensors), never as arbitrary pickles, and every file a
model came from is recorded in `info` with its SHA-256.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import TracekitError

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
        line.strip()
        for line in text.split("WeightsUnpickler error:")[-1].splitlines()
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
