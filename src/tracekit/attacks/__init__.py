"""Built-in attacks, through adversarial-robustness-toolbox (ART)."""

from __future__ import annotations

from ..hookspecs import Register
from ..plugins import hookimpl


@hookimpl
def tracekit_register_attacks(register: Register) -> None:
    from . import adaptive_entropy, autoattack, boundary, carlini, deepfool, fast_gradient, pgd, pixel

    register("fgsm", fast_gradient.fgsm)
    register("gradient", fast_gradient.gradient)
    register("pixel", pixel.pixel)
    register("deepfool", deepfool.deepfool)
    register("boundary", boundary.boundary)
    register("pgd", pgd.pgd)
    register("cw-l2", carlini.cw_l2)
    register("autoattack", autoattack.autoattack)
    register("adaptive-entropy", adaptive_entropy.adaptive_entropy)
