"""The default gray conversion of feature response maps (docs/method.md, "The detector, step by
step", step 2).

`g = sum_c |map_c|`, then per image `g = clip((g - min g) / (p99(g) - min g), 0, 1)` with p99 the
99th percentile (linear interpolation, as `numpy.percentile`), then `u8 = floor(g * 255)`.
Computed in float64 on the input's device.
"""

from __future__ import annotations

import math

import torch

from ..errors import TracekitError

PERCENTILE = 99.0
_SMALLEST_DOUBLE = math.ulp(0.0)  # 5e-324, a subnormal


def percentile_rows(x: torch.Tensor, q: float, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The q-th percentile of each row of `x[N,M]`, exactly as `numpy.percentile` (linear) on
    `x` converted to `dtype` (default: its own), without converting `x`."""
    m = x.shape[1]
    virtual = (m - 1) * (q / 100)
    lo = math.floor(virtual)
    t = virtual - lo
    # The order statistics lo and lo+1 are the last two of the (m - lo) largest values.
    top = torch.topk(x, m - lo, dim=1, largest=True, sorted=True).values.to(dtype or x.dtype)
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
    if maps.shape[1] == 1:
        # |map| is exact in the maps' own dtype, so its minimum and order statistics are found
        # there (half the bytes of float64 for float32 maps), and float64 starts at the subtraction.
        g = maps[:, 0].abs().reshape(n, h * w)
    else:
        # abs().sum() rather than torch.linalg.vector_norm(ord=1, dim=1) over channels, whose CPU
        # kernel is far slower for this reduction
        g = maps.abs().sum(dim=1, dtype=torch.float64).view(n, h * w)
    if g.numel() == 0:
        return g.to(torch.float64).view(n, h, w)
    low = g.amin(dim=1, keepdim=True).to(torch.float64)
    # A span of 0 becomes the smallest positive double, which no positive span is below: then
    # x / span >= 1 (-> 1) above the minimum and 0 at it, the formula's limits, without a pass
    # over the pixels to replace NaNs.
    span = (percentile_rows(g, PERCENTILE, torch.float64)[:, None] - low).clamp_(min=_SMALLEST_DOUBLE)
    # Converted first, then subtracted in place: a float32 - float64 `torch.sub` casts through a
    # temporary inside the op, new memory that is slow to touch right after a backward pass on a
    # CPU; the conversion gives the one buffer the in-place steps then reuse.
    gray = g if g.dtype == torch.float64 else g.to(torch.float64)
    return gray.sub_(low).div_(span).clamp_(0.0, 1.0).view(n, h, w)


def quantized(gray: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """`floor(gray * 255)` as uint8 for `gray` from `to_gray_float`, whose buffer it scales in
    place; written into `out` (a uint8 tensor of gray's shape, e.g. the inside of a bordered
    image) where given."""
    # The conversion to uint8 truncates, which is the floor on [0, 255].
    scaled = gray.mul_(255)
    return scaled.to(torch.uint8) if out is None else out.copy_(scaled)


def to_gray_u8(maps: torch.Tensor) -> torch.Tensor:
    """`maps[N,C,H,W]` -> 8-bit gray `Tensor[N,H,W]` (uint8), tracekit's default conversion."""
    return quantized(to_gray_float(maps))
