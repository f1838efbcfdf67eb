"""Built-in datasets: the embedded `digits`, an `imagefolder` of your own images, `npz` arrays,
seeded `synthetic` images.

All of them offer random access (`tracekit.protocols.RandomAccessDataset`: `len` and `item`).
"""

from __future__ import annotations

from ..hookspecs import Register
from ..plugins import hookimpl


@hookimpl
def tracekit_register_datasets(register: Register) -> None:
    from . import digits, imagefolder, npz, synthetic

    register("digits", digits.digits)
    register("imagefolder", imagefolder.imagefolder)
    register("npz", npz.npz)
    register("synthetic", synthetic.synthetic)
