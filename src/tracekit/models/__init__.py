"""Built-in models: the embedded `digits-cnn`, torchvision and timm models by name, files."""

from __future__ import annotations

from ..hookspecs import Register
from ..plugins import hookimpl


@hookimpl
def tracekit_register_models(register: Register) -> None:
    from . import digits_cnn, files, timm_models, torchvision_models

    register("digits-cnn", digits_cnn.digits_cnn)
    register("torchvision", torchvision_models.torchvision_model)
    register("timm", timm_models.timm_model)
    register("torchscript", files.torchscript_model)
    register("checkpoint", files.checkpoint_model)
