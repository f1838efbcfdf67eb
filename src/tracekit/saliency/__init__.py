"""Built-in saliency methods (feature response maps)."""

from __future__ import annotations

from ..hookspecs import Register
from ..plugins import hookimpl
from .targets import check_images, target_classes


@hookimpl
def tracekit_register_saliency(register: Register) -> None:
    from . import gradient, guided_backprop, integrated_gradients, smoothgrad

    register("guided-backprop", guided_backprop.guided_backprop)
    register("gradient", gradient.gradient)
    register("integrated-gradients", integrated_gradients.integrated_gradients)
    register("smoothgrad", smoothgrad.smoothgrad)


__all__ = ["check_images", "target_classes"]
