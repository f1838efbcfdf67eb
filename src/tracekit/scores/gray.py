"""The default gray conversion of feature response maps (DESIGN.md, step 2).

`g = sum_c |map_c|`, then per image `g = clip((g - min g) / (p99(g) - min g), 0, 1)` with p99 the
99th percentile (linear interpolation, as `numpy.percentile`), then `u8 = floor(g * 255)`.
Computed in float64 on the input's device.
"""

from __future__ import annotations

import math

import torch

from ..errors import TracekitError

PERCENTILE = 99.0


def percentile_rows(x: torch.Tensor, q: float) -> torch.Tensor:
    """The q-th percentile of each row of `x[N,M]`, exactly as `numpy.percentile` (linear)."""
    m = x.shape[1]
    virtual = (m - 1) * (q / 100)
    lo = math.floor(virtual)
    t = virtual - lo
    # The order statistics lo and lo+1 are the last two of the (m - lo) largest values.
    top = torch.topk(x, m - lo, dim=1, largest=True, sorted=True).values
    a = top[:, -1]
    b = top[:, -2] if m - lo > 1 else a
    diff = b - a
    # numpy's _lerp: a + diff * t, or b - diff * (1 - t) where t >= 0.5
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t


def to_gray_float(maps: torch.Tensor) -> torch.Tensor:
    """`maps[N,C,H,W]` -> gray `Tensor[N,H,W]` in [0, 1] (float64), before 8-bit quantization.

    A pixel of an image whose p99 equals its minimum (e.g. a constant map) is 0 where it is at
    the minimum and 1 above it: the limits of the formula, never NaN.
    """
    if maps.ndim != 4:
        raise TracekitError(f"gray conversion: expected maps of shape [N,C,H,W], got {tuple(maps.shape)}")
    n, _, h, w = maps.shape
    # abs().sum(): torch.linalg.vector_norm(ord=1, dim=1) over channels is 70x slower on a CPU
    g = maps.abs().sum(dim=1, dtype=torch.float64)
    if g.numel() == 0:
        return g
    flat = g.view(n, h * w)
    low = flat.amin(dim=1, keepdim=True)
    span = percentile_rows(flat, PERCENTILE)[:, None] - low
    # In place on g's buffer; where span is 0, x/0 is inf (-> 1) above the minimum, nan (-> 0) at it.
    return flat.sub_(low).div_(span).nan_to_num_(nan=0.0).clamp_(0.0, 1.0).view(n, h, w)


def to_gray_u8(maps: torch.Tensor) -> torch.Tensor:
    """`maps[N,C,H,W]` -> 8-bit gray `Tensor[N,H,W]` (uint8), tracekit's default conversion."""
    return to_gray_float(maps).mul_(255).floor_().to(torch.uint8)
