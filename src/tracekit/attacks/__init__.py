"""Built-in attacks, through adversarial-robustness-toolbox (ART)."""

from __future__ import annotations

from ..hookspecs import Register
from ..plugins import hookimpl


@hookimpl
def tracekit_register_attacks(register: Register) -> None:
    from .factories import attacks  # light: each factory imports its attack (torch, ART) when called

    attacks.into(register)
