"""Built-in saliency methods (feature response maps)."""

from __future__ import annotations

from ..hookspecs import Register
from ..plugins import hookimpl


@hookimpl
def tracekit_register_saliency(register: Register) -> None:
    from . import guided_backprop

    register("guided-backprop", guided_backprop.guided_backprop)
