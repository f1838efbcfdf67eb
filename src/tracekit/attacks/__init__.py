"""Built-in attacks, through adversarial-robustness-toolbox (ART)."""

from __future__ import annotations

from ..hookspecs import Register
from ..plugins import hookimpl


@hookimpl
def tracekit_register_attacks(register: Register) -> None:
    from . import fast_gradient

    register("fgsm", fast_gradient.fgsm)
    register("gradient", fast_gradient.gradient)
