"""Built-in datasets: the embedded `digits`, an `imagefolder` of your own images, `npz` arrays."""

from __future__ import annotations

from ..hookspecs import Register
from ..plugins import hookimpl


@hookimpl
def tracekit_register_datasets(register: Register) -> None:
    from . import digits, imagefolder, npz

    register("digits", digits.digits)
    register("imagefolder", imagefolder.imagefolder)
    register("npz", npz.npz)
