"""Built-in detectors: the paper's `feature-response` (saliency -> score -> threshold)."""

from __future__ import annotations

from ..hookspecs import Register
from ..plugins import hookimpl


@hookimpl
def tracekit_register_detectors(register: Register) -> None:
    from .factories import detectors  # light: each factory imports its detector (and torch) when called

    detectors.into(register)
