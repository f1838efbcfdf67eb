"""Built-in models: the embedded `digits-cnn` and `digit-scenes-cnn`, torchvision and timm models by name, files."""

from __future__ import annotations

from ..hookspecs import Register
from ..plugins import hookimpl


@hookimpl
def tracekit_register_models(register: Register) -> None:
    from . import factories  # light: each factory imports its loader (torch, torchvision, timm) when called

    register("digits-cnn", factories.digits_cnn)
    register("digit-scenes-cnn", factories.digit_scenes_cnn)
    register("torchvision", factories.torchvision_model)
    register("timm", factories.timm_model)
    register("torchscript", factories.torchscript_model)
    register("checkpoint", factories.checkpoint_model)
