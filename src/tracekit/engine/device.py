"""Device selection: `auto` picks CUDA when present; an unavailable device is bad input."""

from __future__ import annotations

import torch

from ..errors import TracekitError


def resolve_device(name: str) -> torch.device:
    """`auto` | `cpu` | `cuda` | `cuda:N` | `mps` -> an available `torch.device`."""
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
    if name == "mps" and not torch.backends.mps.is_available():
        raise TracekitError("device 'mps' requested but MPS is not available; use --device cpu (or auto)")
    return torch.device(name)
