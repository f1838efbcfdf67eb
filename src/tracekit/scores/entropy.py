"""Local spatial entropy of 8-bit gray maps (DESIGN.md, step 3) and the `local-entropy` score.

For a pixel with `n` neighbours inside the image, the entropy of its window's histogram `h` is
`log2(n) - (1/n) * sum_v h_v log2(h_v)`, and `sum_v h_v log2(h_v) = sum_i log2(c_i)` where `c_i`
counts the window entries equal to entry `i`. The counts come from equality tests between the
image and shifted copies of itself, so the whole batch is a handful of vectorized tensor
operations, on whatever device the input is on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import AfterValidator, Field

from ..errors import TracekitError
from .gray import to_gray_u8

# Bytes of equality masks per chunk of images: within a CPU's cache; on an accelerator, large
# enough to keep kernel launches few.
_CPU_CHUNK_BYTES = 1 << 21
_ACCELERATOR_CHUNK_BYTES = 1 << 28
_MAPS_PER_CHUNK = 64  # bounds the float64 gray conversion's memory in `LocalEntropy`


def _as_u8(images: torch.Tensor) -> torch.Tensor:
    """`images[N,H,W]` as uint8, or an error saying why they are not 8-bit gray images."""
    if images.ndim != 3:
        raise TracekitError(f"local entropy: expected 8-bit images of shape [N,H,W], got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images
    values = images.to(torch.float64)
    if not ((values == values.round()) & (values >= 0) & (values <= 255)).all():
        raise TracekitError(
            "local entropy: image values must be integers in [0, 255]; convert maps with "
            "tracekit.scores.to_gray_u8 first"
        )
    return values.to(torch.uint8)


def _window_sums(x: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """Sums of every `size` consecutive slices of uint8 `x` along `dim` (wrap-arounds cancel).

    Few windows (the offset axes): slide, adding the slice that enters and removing the one
    that leaves. Many windows (the image axes): add `size` shifted views.
    """
    count = x.shape[dim] - size + 1
    if count > size:
        out = x.narrow(dim, 0, count).clone()
        for k in range(1, size):
            out += x.narrow(dim, k, count)
        return out
    shape = list(x.shape)
    shape[dim] = count
    out = torch.empty(shape, dtype=x.dtype, device=x.device)
    torch.sum(x.narrow(dim, 0, size), dim, keepdim=True, dtype=x.dtype, out=out.narrow(dim, 0, 1))
    for k in range(1, count):
        current = out.narrow(dim, k, 1)
        torch.add(out.narrow(dim, k - 1, 1), x.narrow(dim, k + size - 1, 1), out=current)
        current.sub_(x.narrow(dim, k - 1, 1))
    return out


def _sum_log2_counts(images: torch.Tensor, size: int) -> torch.Tensor:
    """`sum_i log2(c_i)` over the entries of each pixel's window, with outside entries read as 0.

    With r = size // 2 and the image padded by 3r, `same[a, b](q) = [P(q) == P(q + d)]` is
    computed once for every offset d = (a, b) - 2r in [-2r, 2r]^2 on the grid q in
    [-r, H - 1 + r]^2. The count of window entry p + e is the sum of `same[d](p + e)` over the
    window's offsets d = e' - e: a size x size box sum over (a, b), evaluated at q = p + e.
    """
    n, h, w = images.shape
    r = size // 2
    span = 4 * r + 1
    hq, wq = h + 2 * r, w + 2 * r
    padded = F.pad(images, (3 * r,) * 4)
    s_n, s_h, s_w = padded.stride()
    center = padded[:, 2 * r : 2 * r + hq, 2 * r : 2 * r + wq]
    shifted = padded.as_strided((span, span, n, hq, wq), (s_h, s_w, s_n, s_h, s_w))
    same = torch.empty((span, span, n, hq, wq), dtype=torch.bool, device=images.device)
    torch.eq(center, shifted, out=same)
    # boxes[k, l] holds the count of window entry e = (k - r, l - r), on the grid q = p + e.
    boxes = _window_sums(_window_sums(same.view(torch.uint8), 1, size), 0, size).flip((0, 1))
    s = boxes.stride()
    counts = boxes.as_strided((size, size, n, h, w), (s[0] + s[3], s[1] + s[4], s[2], s[3], s[4]))
    # Products of a row's counts (at most (size^2)^size: exact in int32 up to size 5, and
    # within float64's range up to size 15), then one log each.
    exact = torch.int32 if (size * size) ** size < 2**31 else torch.float64
    return counts.prod(1, dtype=exact).to(torch.float64).log2_().sum(0)


def _x_log2_x(x: torch.Tensor) -> torch.Tensor:
    return x * torch.log2(x.clamp(min=1))


def _outside_counts(h: int, w: int, size: int, device: torch.device) -> torch.Tensor:
    """How many entries of each pixel's window fall outside the image (float64 `[H,W]`)."""
    r = size // 2

    def inside(length: int) -> torch.Tensor:
        i = torch.arange(length, device=device, dtype=torch.float64)
        return (i + r).clamp(max=length - 1) - (i - r).clamp(min=0) + 1

    return size * size - inside(h)[:, None] * inside(w)[None, :]


def local_entropy_map(u8: torch.Tensor, size: int = 3) -> torch.Tensor:
    """Local entropy (bits, float64) of each pixel's `size` x `size` neighbourhood in `u8[N,H,W]`.

    Neighbours outside the image are not counted; equals
    `skimage.filters.rank.entropy(image, footprint_rectangle((size, size)))` for each image.
    """
    if not (isinstance(size, int) and size >= 1 and size % 2 == 1):
        raise TracekitError(f"local entropy: size must be a positive odd integer (3, 5, 7, ...), got {size!r}")
    images = _as_u8(u8)
    n, h, w = images.shape
    out = torch.empty((n, h, w), dtype=torch.float64, device=images.device)
    if out.numel() == 0:
        return out
    r = size // 2
    # The k entries outside the image read as 0, so near the border the z zero pixels of a
    # window and its k outside entries form one group: sum_i log2(c_i) over the inside entries
    # is the sum over all entries - (k + z) log2(k + z) + z log2(z).
    outside = _outside_counts(h, w, size, images.device)
    inside = size * size - outside
    log2_n, inv_n = torch.log2(inside), 1 / inside
    border = (outside > 0).flatten().nonzero().squeeze(1)
    k = outside.flatten()[border]
    budget = _CPU_CHUNK_BYTES if images.device.type == "cpu" else _ACCELERATOR_CHUNK_BYTES
    chunk = max(1, budget // ((4 * r + 1) ** 2 * (h + 2 * r) * (w + 2 * r)))
    for start in range(0, n, chunk):
        part = images[start : start + chunk]
        logs = _sum_log2_counts(part, size)
        zeros = F.pad((part == 0).view(torch.uint8), (r,) * 4)
        z = _window_sums(_window_sums(zeros, 1, size), 2, size).flatten(1)[:, border].to(torch.float64)
        logs.flatten(1)[:, border] -= _x_log2_x(z + k) - _x_log2_x(z)
        torch.addcmul(log2_n, logs, inv_n, value=-1, out=out[start : start + chunk])
    return out.clamp_(min=0.0)  # a uniform window can round to -1e-16


@dataclass(frozen=True)
class LocalEntropy:
    """The paper's score: mean local entropy of the 8-bit gray feature response map."""

    size: int = 3

    def map(self, maps: torch.Tensor) -> torch.Tensor:
        """`maps[N,C,H,W]` -> local entropy `Tensor[N,H,W]` of their default gray conversion."""
        parts = maps.split(_MAPS_PER_CHUNK)
        return torch.cat([local_entropy_map(to_gray_u8(part), self.size) for part in parts])

    def score(self, maps: torch.Tensor) -> torch.Tensor:
        """Mean local entropy per map, `Tensor[N]` (float64)."""
        return self.map(maps).mean(dim=(1, 2))


def _odd(size: int) -> int:
    if size % 2 == 0:
        raise ValueError(f"size must be odd (the window is centred on the pixel), e.g. {size - 1} or {size + 1}")
    return size


def local_entropy(size: Annotated[int, Field(ge=1, le=15), AfterValidator(_odd)] = 3) -> LocalEntropy:
    """Mean local spatial entropy of the gray feature response map (size x size window)."""
    return LocalEntropy(size)
