"""Built-in attacks, through adversarial-robustness-toolbox (ART)."""

from __future__ import annotations

from ..hookspecs import Register
from ..plugins import hookimpl


@hookimpl
def tracekit_register_attacks(register: Register) -> None:
    from . import factories  # light: each factory imports its attack (torch, ART) when called

    register("fgsm", factories.fgsm)
    register("gradient", factories.gradient)
    register("pixel", factories.pixel)
    register("deepfool", factories.deepfool)
    register("boundary", factories.boundary)
    register("pgd", factories.pgd)
    register("cw-l2", factories.cw_l2)
    register("autoattack", factories.autoattack)
    register("adaptive-entropy", factories.adaptive_entropy)
