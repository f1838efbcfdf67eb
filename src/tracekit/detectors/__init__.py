"""Built-in detectors: the paper's `feature-response` (saliency -> score -> threshold)."""

from __future__ import annotations

from ..hookspecs import Register
from ..plugins import hookimpl


@hookimpl
def tracekit_register_detectors(register: Register) -> None:
    from . import feature_response

    register("feature-response", feature_response.feature_response)
