"""Built-in executors: where a run's per-image stages happen (`local`, `ray`)."""

from __future__ import annotations

from ..hookspecs import Register
from ..plugins import hookimpl


@hookimpl
def tracekit_register_executors(register: Register) -> None:
    from .factories import executors  # light: each factory imports its executor (the engine, torch, Ray) when called

    executors.into(register)
