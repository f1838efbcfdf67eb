"""Built-in detectors: the paper's `feature-response` (saliency -> score -> threshold)."""

from __future__ import annotations

from ..hookspecs import Register
from ..plugins import hookimpl


@hookimpl
def tracekit_register_detectors(register: Register) -> None:
    from . import feature_response, feature_squeezing, kd_bu, lid, mahalanobis

    register("feature-response", feature_response.feature_response)
    register("feature-squeezing", feature_squeezing.feature_squeezing)
    register("lid", lid.lid)
    register("mahalanobis", mahalanobis.mahalanobis)
    register("kd-bu", kd_bu.kd_bu)
