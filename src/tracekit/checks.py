"""Checks of what components return: the engine never lets a wrong type, shape or a NaN from a
model, attack, saliency method, score or detector turn into a meaningless number. A violation is
a `TracekitError` (exit 2) naming the component, its kind and the distribution it comes from,
and what it returned; work finished before it stays in the cache and the run's tables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .errors import TracekitError


def component(kind: str, name: str) -> str:
    """`kind 'name' (distribution version)`, for messages."""
    from .plugins import distribution_versions, registry

    try:
        source = registry(kind).get(name).source
    except TracekitError:
        return f"{kind} '{name}'"
    version = distribution_versions().get(source, "")
    return f"{kind} '{name}' (from {source}{' ' + version if version else ''})"


def checked(value: object, who: str, shape: Sequence[int | None], what: str = "") -> torch.Tensor:
    """`value` if it is a floating tensor of `shape` (None: any size there) with finite values."""
    what = f" {what}" if what else ""
    if not isinstance(value, torch.Tensor):
        raise TracekitError(f"{who} returned a {type(value).__name__}{what}, not a torch tensor")
    if len(value.shape) != len(shape) or any(e is not None and g != e for g, e in zip(value.shape, shape)):
        expected = "x".join("*" if e is None else str(e) for e in shape)
        raise TracekitError(
            f"{who} returned{what} of shape {'x'.join(map(str, value.shape)) or 'scalar'}, expected {expected}"
        )
    if not value.is_floating_point():
        raise TracekitError(f"{who} returned{what} of dtype {value.dtype}, expected floating point")
    if value.numel() and not _finite(value.detach()):
        bad = ~torch.isfinite(value.detach())
        first = int(bad.flatten(1).any(1).nonzero()[0]) if value.ndim > 1 else int(bad.nonzero()[0])
        raise TracekitError(f"{who} returned NaN or infinite values{what} (the first for item {first} of the batch)")
    return value


def _finite(value: torch.Tensor) -> bool:
    """Whether every value of non-empty floating `value` is finite, in one reduction: a NaN
    makes the minimum and maximum NaN, an infinity shows at one end; the two ends are read as
    Python floats, which takes no further kernels. (`torch.isfinite(x).all()` takes four
    elementwise passes and a bool tensor.)"""
    low, high = torch.aminmax(value)
    return math.isfinite(low.item()) and math.isfinite(high.item())
