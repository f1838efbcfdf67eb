"""Built-in executors: where a run's per-image stages happen (`local`, `ray`)."""

from __future__ import annotations

from ..hookspecs import Register
from ..plugins import hookimpl


@hookimpl
def tracekit_register_executors(register: Register) -> None:
    from . import local, ray_executor

    register("local", local.local)
    register("ray", ray_executor.ray)
