"""The parameter types the model factories and their loaders share (a spec gives lists; pydantic
turns them into these). Light, like `tracekit.models.factories`, whose signatures name them: the
loaders (torch) import them from here, never from the factories."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

MeanStd = tuple[float, ...] | None
ClassNames = list[str] | Path | None
InputSize = tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]]
# How image files are prepared for a model (`tracekit.images.Preparation`); None: the model's own,
# the whole frame (1.0) for a module that declares none.
CropPct = Annotated[float, Field(gt=0, le=1)] | None
Interpolation = Literal["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"] | None
