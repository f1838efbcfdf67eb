"""Built-in scores, and the public gray conversion and local-entropy map."""

from __future__ import annotations

from typing import Any

from ..hookspecs import Register
from ..plugins import hookimpl


@hookimpl
def tracekit_register_scores(register: Register) -> None:
    from .factories import scores  # light: each factory imports its score (and torch) when called

    scores.into(register)


def __getattr__(name: str) -> Any:
    """The public functions, imported on first use: they need torch, registering does not."""
    if name == "local_entropy_map":
        from .entropy import local_entropy_map

        return local_entropy_map
    if name == "to_gray_u8":
        from .gray import to_gray_u8

        return to_gray_u8
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["local_entropy_map", "to_gray_u8"]
