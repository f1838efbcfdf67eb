"""Built-in scores, and the public gray conversion and local-entropy map."""

from __future__ import annotations

from ..hookspecs import Register
from ..plugins import hookimpl
from .entropy import local_entropy_map
from .gray import to_gray_u8


@hookimpl
def tracekit_register_scores(register: Register) -> None:
    from . import entropy, global_entropy

    register("local-entropy", entropy.local_entropy)
    register("global-entropy", global_entropy.global_entropy)


__all__ = ["local_entropy_map", "to_gray_u8"]
