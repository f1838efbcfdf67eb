"""The built-in scores' factories, each registered under its name where it is defined
(`@scores.register`): its parameters (its signature, checked when a spec loads) and summary. This
module stays light: a factory imports its score (torch) in its body, so that `tracekit validate` and
`tracekit plugins` never import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator, Field

from ..hookspecs import Components

if TYPE_CHECKING:
    from .entropy import LocalEntropy
    from .global_entropy import GlobalEntropy

scores = Components("score")


def _odd(size: int) -> int:
    if size % 2 == 0:
        raise ValueError(f"size must be odd (the window is centred on the pixel), e.g. {size - 1} or {size + 1}")
    return size


@scores.register("local-entropy")
def local_entropy(size: Annotated[int, Field(ge=1, le=15), AfterValidator(_odd)] = 3) -> LocalEntropy:
    """Mean local spatial entropy of the gray feature response map (size x size window)."""
    from .entropy import LocalEntropy

    return LocalEntropy(size)


@scores.register("global-entropy")
def global_entropy() -> GlobalEntropy:
    """Shannon entropy of the whole gray feature response map's 256-bin histogram."""
    from .global_entropy import GlobalEntropy

    return GlobalEntropy()
