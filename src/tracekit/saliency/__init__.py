"""Built-in saliency methods (feature response maps)."""

from __future__ import annotations

from typing import Any

from ..hookspecs import Register
from ..plugins import hookimpl


@hookimpl
def tracekit_register_saliency(register: Register) -> None:
    from .factories import saliency  # light: each factory imports its method (and torch) when called

    saliency.into(register)


def __getattr__(name: str) -> Any:
    """The public checks, imported on first use: they need torch, registering does not."""
    if name in ("check_images", "target_classes"):
        from . import targets

        return getattr(targets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["check_images", "target_classes"]
