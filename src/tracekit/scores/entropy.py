"""Local spatial entropy of 8-bit gray maps and the `local-entropy` score (docs/method.md, "The
detector, step by step", step 3).

For a pixel with `n` neighbours inside the image, the entropy of its window's histogram `h` is
`log2(n) - (1/n) * S` with `S = sum_v h_v log2(h_v)`. Everything is vectorized over the batch,
on whatever device the input is on; two ways to get `S`:

- 3x3 (the paper's window, the hot path): the nine shifted views of the image go through a
  sorting network (elementwise min/max), so equal values become neighbours; the 8 "equals the
  next" bits of a pixel's sorted window are a byte that, with the count of the window's entries
  outside the image, indexes a table of entropies: 25 min/max pairs and 8 equality tests of
  uint8 planes, where the general way tests and box-sums all 25 offsets and takes logs
  (`benchmarks/entropy.py` times them).
- Other sizes: `S = sum_i log2(c_i)` where `c_i` counts the window entries equal to entry `i`,
  the counts from equality tests between the image and shifted copies of itself.

scikit-image's `rank.entropy` is the reference (tests), not the implementation: it runs image
by image on a CPU with a sliding histogram.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import TracekitError
from .gray import quantized, to_gray_float

# Bytes of equality masks per chunk of images: within a CPU's cache; on an accelerator, large
# enough to keep kernel launches few.
_CPU_CHUNK_BYTES = 1 << 21
_ACCELERATOR_CHUNK_BYTES = 1 << 28
# Pixels per chunk of the 3x3 way (nine uint8 planes of them stay within a CPU's L2/L3 cache)
# and of `LocalEntropy`'s float64 gray conversion (bounds its memory).
_CPU_CHUNK_PIXELS = 1 << 18
_ACCELERATOR_CHUNK_PIXELS = 1 << 24


def _chunk(device: torch.device, pixels: int) -> int:
    """Images of `pixels` pixels per chunk on `device`."""
    return max(1, (_CPU_CHUNK_PIXELS if device.type == "cpu" else _ACCELERATOR_CHUNK_PIXELS) // max(pixels, 1))


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


@functools.lru_cache(maxsize=32)
def _geometry(h: int, w: int, size: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Per image shape (cached; read only): `log2(n)` and `1/n` of each pixel's window of n
    entries inside the image (float64 `[H,W]`), the flat indices of the border pixels, which
    have entries outside, and their counts of outside entries (float64)."""
    outside = _outside_counts(h, w, size, device)
    inside = size * size - outside
    border = (outside > 0).flatten().nonzero().squeeze(1)
    return torch.log2(inside), 1 / inside, border, outside.flatten()[border]


@functools.lru_cache(maxsize=32)
def _table_offsets(h: int, w: int, device: torch.device) -> torch.Tensor:
    """`256 k` for each pixel (int32 `[H*W]`) whose 3x3 window has k entries outside the image:
    its row of `_entropy_table`. Cached; read only."""
    return (_outside_counts(h, w, 3, device).flatten() * 256).int()


# A sorting network for 9 inputs with 25 comparators in 7 layers, the fewest possible (Codish,
# Cruz-Filipe, Frank and Schneider-Kamp 2014), from Bert Dobbelaere's list of best known sorting
# networks; Batcher's odd-even merge sort needs 28. Checked by the 0-1 principle in the tests.
_SORT_9 = (
    (0, 3), (1, 7), (2, 5), (4, 8),
    (0, 7), (2, 4), (3, 8), (5, 6),
    (0, 2), (1, 3), (4, 5), (7, 8),
    (1, 4), (3, 6), (5, 7),
    (0, 1), (2, 4), (3, 5), (6, 8),
    (2, 3), (4, 5), (6, 7),
    (1, 2), (3, 4), (5, 6),
)  # fmt: skip


@functools.cache
def _entropy_table(device: torch.device) -> torch.Tensor:
    """The entropy of a 3x3 window with k entries outside the image (read as 0), at `256 k + c`
    (float64), where bit i of the byte c says "sorted entry i+1 equals entry i".

    With the run lengths of the sorted window, `S = sum over runs of c log2 c`. The k outside
    entries, 0 and the smallest values, lie in the first run with the window's z zeros: its
    `(k + z) log2(k + z)` in `S` is replaced by `z log2 z`, and the window has `9 - k` entries.
    Rows for impossible (k, c) pairs (a first run shorter than k) are never read.
    """
    bits = (torch.arange(256)[:, None] >> torch.arange(8)) & 1
    s = torch.zeros(256, dtype=torch.float64)
    run = torch.ones(256, dtype=torch.float64)
    first = torch.ones(256, dtype=torch.float64)
    in_first = torch.ones(256, dtype=torch.bool)
    for i in range(8):
        same = bits[:, i] == 1
        s += torch.where(same, 0.0, _x_log2_x(run))
        run = torch.where(same, run + 1, 1.0)
        in_first &= same
        first += in_first
    s += _x_log2_x(run)
    k = torch.arange(9, dtype=torch.float64)[:, None]
    inside = 9 - k
    entropy = torch.log2(inside) - (s - (_x_log2_x(first) - _x_log2_x(first - k))) / inside
    return entropy.clamp_(min=0.0).flatten().to(device)


def _bordered(n: int, h: int, w: int, device: torch.device) -> torch.Tensor:
    """A uint8 `[N,H+2,W+2]` buffer of zeros: images of `[N,H,W]` go inside its one-pixel border."""
    return torch.zeros((n, h + 2, w + 2), dtype=torch.uint8, device=device)


def _sorted_windows(padded: torch.Tensor, pool: list[torch.Tensor]) -> list[torch.Tensor]:
    """The nine entries of each pixel's 3x3 window in `padded` (images inside a zero border, so
    outside entries are 0) in ascending order, as nine uint8 planes `[N,H,W]`. The planes start
    as strided views of `padded` and each gets its own buffer at its first comparator, so no
    window is copied first: a buffer from `pool` (uint8 `[N,H,W]` planes it may overwrite, used
    up from the end; a plane no longer needed goes back), a new one when the pool is empty."""
    n, h, w = padded.shape[0], padded.shape[1] - 2, padded.shape[2] - 2
    s_n, s_h, s_w = padded.stride()
    windows = padded.as_strided((3, 3, n, h, w), (s_h, s_w, s_n, s_h, s_w))
    planes = [plane for row in windows for plane in row]  # views (flattening the offsets would copy)
    owned: set[int] = set()
    for a, b in _SORT_9:
        low = torch.minimum(planes[a], planes[b], out=pool.pop() if pool else None)
        if b in owned:
            torch.maximum(planes[a], planes[b], out=planes[b])
        else:
            planes[b] = torch.maximum(planes[a], planes[b], out=pool.pop() if pool else None)
            owned.add(b)
        if a in owned:
            pool.append(planes[a])
        planes[a] = low
        owned.add(a)
    return planes


def _local_entropy_3x3(padded: torch.Tensor, out: torch.Tensor) -> None:
    """Local entropy of each pixel's 3x3 window into `out` (float64 `[N,H,W]`, contiguous), for
    the images inside the zero border of `padded` (`_bordered`): the equalities of neighbours in
    its sorted window make a byte, which with the count of its window's entries outside the
    image indexes `_entropy_table`."""
    n, h, w = out.shape
    # `out` is not read before the last step: its bytes hold eight of the planes, which saves
    # the sorting most of its new memory, which matters right after a backward pass on a CPU,
    # when newly allocated memory is out of cache.
    pool = list(out.view(-1).view(torch.uint8).view(8, n, h, w))
    planes = _sorted_windows(padded, pool)
    code = torch.eq(planes[1], planes[0], out=pool.pop().view(torch.bool) if pool else None).view(torch.uint8)
    same = pool.pop().view(torch.bool) if pool else torch.empty_like(code, dtype=torch.bool)
    for k in range(1, 8):
        torch.eq(planes[k + 1], planes[k], out=same)
        code.add_(same.view(torch.uint8), alpha=1 << k)
    index = code.view(n, h * w) + _table_offsets(h, w, padded.device)  # int32
    torch.index_select(_entropy_table(padded.device), 0, index.view(-1), out=out.view(-1))


def local_entropy_map(u8: torch.Tensor, size: int = 3, out: torch.Tensor | None = None) -> torch.Tensor:
    """Local entropy (bits, float64) of each pixel's `size` x `size` neighbourhood in `u8[N,H,W]`.

    Neighbours outside the image are not counted; equals
    `skimage.filters.rank.entropy(image, footprint_rectangle((size, size)))` for each image.
    `out`: a contiguous float64 `[N,H,W]` tensor to write it into (e.g. the gray conversion's
    own buffer, still in cache), else a new one.
    """
    if not (isinstance(size, int) and size >= 1 and size % 2 == 1):
        raise TracekitError(f"local entropy: size must be a positive odd integer (3, 5, 7, ...), got {size!r}")
    images = _as_u8(u8)
    n, h, w = images.shape
    if out is None:
        out = torch.empty((n, h, w), dtype=torch.float64, device=images.device)
    elif not (
        out.shape == images.shape and out.dtype == torch.float64 and out.device == images.device and out.is_contiguous()
    ):
        raise TracekitError(
            f"local entropy: out must be a contiguous float64 tensor of shape {tuple(images.shape)} on {images.device}"
        )
    if out.numel() == 0:
        return out
    if size == 3:
        chunk = _chunk(images.device, h * w)
        for start in range(0, n, chunk):
            _local_entropy_3x3(F.pad(images[start : start + chunk], (1,) * 4), out[start : start + chunk])
        return out
    r = size // 2
    # The k entries outside the image read as 0, so near the border the z zero pixels of a
    # window and its k outside entries form one group: its (k + z) log2(k + z) in the sum over
    # all entries is replaced by z log2 z.
    log2_n, inv_n, border, k = _geometry(h, w, size, images.device)
    budget = _CPU_CHUNK_BYTES if images.device.type == "cpu" else _ACCELERATOR_CHUNK_BYTES
    chunk = max(1, budget // ((4 * r + 1) ** 2 * (h + 2 * r) * (w + 2 * r)))
    for start in range(0, n, chunk):
        part = images[start : start + chunk]
        sums = _sum_log2_counts(part, size)
        zeros = F.pad((part == 0).view(torch.uint8), (r,) * 4)
        z = _window_sums(_window_sums(zeros, 1, size), 2, size).flatten(1)[:, border].to(torch.float64)
        sums.flatten(1)[:, border] -= _x_log2_x(z + k) - _x_log2_x(z)
        torch.addcmul(log2_n, sums, inv_n, value=-1, out=out[start : start + chunk])
        out[start : start + chunk].clamp_(min=0.0)  # a uniform window can round to -1e-16
    return out


@dataclass(frozen=True)
class LocalEntropy:
    """The paper's score: mean local entropy of the 8-bit gray feature response map."""

    size: int = 3

    def map(self, maps: torch.Tensor) -> torch.Tensor:
        """`maps[N,C,H,W]` -> local entropy `Tensor[N,H,W]` of their default gray conversion."""
        parts = maps.split(_chunk(maps.device, maps.shape[-2] * maps.shape[-1])) if maps.ndim == 4 else [maps]
        entropy = []
        for part in parts:
            gray = to_gray_float(part)  # float64 [N,H,W], in cache: the entropy is written over it
            if self.size == 3:  # quantized straight into the bordered image the 3x3 way reads
                padded = _bordered(*gray.shape, gray.device)
                quantized(gray, out=padded[:, 1:-1, 1:-1])
                _local_entropy_3x3(padded, out=gray)
            else:
                local_entropy_map(quantized(gray), self.size, out=gray)
            entropy.append(gray)
        return entropy[0] if len(entropy) == 1 else torch.cat(entropy)

    def score(self, maps: torch.Tensor) -> torch.Tensor:
        """Mean local entropy per map, `Tensor[N]` (float64)."""
        # The map in inference mode: each op skips autograd's dispatch and bookkeeping, which
        # nothing here needs. Its mean, taken outside, is an ordinary tensor that callers may
        # modify.
        with torch.inference_mode():
            entropy = self.map(maps)
        return entropy.mean(dim=(1, 2))

    def score_for_attack(self, maps: torch.Tensor) -> torch.Tensor:
        """The surrogate's mean local entropy (`tracekit.scores.entropy_surrogate`: soft gray
        conversion, Gaussian-kernel window counts), differentiable in `maps` (`DifferentiableMapScore`)."""
        from .entropy_surrogate import soft_gray, soft_local_entropy_map

        return soft_local_entropy_map(soft_gray(maps), self.size).mean(dim=(1, 2))
