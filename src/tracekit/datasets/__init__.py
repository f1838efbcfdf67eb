"""Built-in datasets: the embedded `digits` and `digit-scenes`, an `imagefolder` of your own images, `npz` arrays,
seeded `synthetic` images.

All of them offer random access (`tracekit.protocols.RandomAccessDataset`: `len` and `item`).
"""

from __future__ import annotations

from ..hookspecs import Register
from ..plugins import hookimpl


@hookimpl
def tracekit_register_datasets(register: Register) -> None:
    from .factories import datasets  # light: each factory imports its dataset (and torch) when called

    datasets.into(register)
