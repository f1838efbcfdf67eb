"""Built-in detectors: the paper's `feature-response` (saliency -> score -> threshold)."""

from __future__ import annotations

from ..hookspecs import Register
from ..plugins import hookimpl


@hookimpl
def tracekit_register_detectors(register: Register) -> None:
    from . import factories  # light: each factory imports its detector (and torch) when called

    register("feature-response", factories.feature_response)
    register("feature-squeezing", factories.feature_squeezing)
    register("lid", factories.lid)
    register("mahalanobis", factories.mahalanobis)
    register("kd-bu", factories.kd_bu)
