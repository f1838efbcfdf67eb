"""Built-in models: the embedded `digits-cnn` and `digit-scenes-cnn`, torchvision and timm models by name, files."""

from __future__ import annotations

from ..hookspecs import Register
from ..plugins import hookimpl


@hookimpl
def tracekit_register_models(register: Register) -> None:
    from .factories import models  # light: each factory imports its loader (torch, torchvision, timm) when called

    models.into(register)
