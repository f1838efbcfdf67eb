"""Device selection: `auto` picks CUDA when present; an unavailable device is bad input."""

from __future__ import annotations

import torch

from ..errors import TracekitError
from ..spec import check_device


def resolve_device(name: str) -> torch.device:
    """`auto` | `cpu` | `cuda` | `cuda:N` -> an available `torch.device`."""
    try:
        check_device(name)
    except ValueError as exc:
        raise TracekitError(str(exc)) from None
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TracekitError(
                f"device '{name}' requested but no CUDA GPU is available to torch {torch.__version__}; "
                "use --device cpu (or auto)"
            )
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise TracekitError(
                f"device '{name}' requested but only {torch.cuda.device_count()} CUDA device(s) exist; "
                f"use cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
    return torch.device(name)
