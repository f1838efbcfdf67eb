"""The parameter types the dataset factories and their datasets share. Light, like
`tracekit.datasets.factories`, whose signatures name them: the datasets (torch) import them from
here, never from the factories."""

from __future__ import annotations

from typing import Literal

Split = Literal["train", "test", "all"]  # a part of the embedded digits (`digits`, `digit-scenes`)
