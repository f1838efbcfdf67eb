"""The `global-entropy` score: Shannon entropy of the whole 8-bit gray map's histogram.

The paper scores the *local* (3x3) entropy; this is the global alternative: with `p_v` the
fraction of the map's pixels whose gray value (tracekit's default conversion) is `v`, the score
is `H = -sum_v p_v log2 p_v` bits, as `skimage.measure.shannon_entropy(u8)`. Its picture is the
surprisal `-log2 p_v` of each pixel's value, whose mean over the pixels is `H`.
"""

from __future__ import annotations

import torch

from .gray import to_gray_u8

LEVELS = 256


def _pixels(u8: torch.Tensor) -> int:
    return max(u8.shape[1] * u8.shape[2], 1)


def value_histograms(u8: torch.Tensor) -> torch.Tensor:
    """Counts `[N,256]` (int64) of each gray value in each image of `u8[N,H,W]`, in one bincount."""
    n = u8.shape[0]
    offsets = torch.arange(n, device=u8.device).view(n, 1) * LEVELS
    flat = (u8.flatten(1).long() + offsets).flatten()
    return torch.bincount(flat, minlength=n * LEVELS).view(n, LEVELS)


def histogram_entropy(u8: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (bits, float64) `[N]` of each image's gray-value histogram in `u8[N,H,W]`."""
    p = value_histograms(u8).to(torch.float64) / _pixels(u8)
    return 0.0 - (p * torch.log2(torch.where(p > 0, p, 1.0))).sum(1)  # +0.0 for a constant map


class GlobalEntropy:
    """Entropy of the histogram of the whole gray feature response map."""

    def map(self, maps: torch.Tensor) -> torch.Tensor:
        """Surprisal `-log2 p(value)` (bits, float64) of each pixel's gray value, `[N,H,W]`."""
        u8 = to_gray_u8(maps)
        counts = value_histograms(u8).to(torch.float64)
        p = counts.gather(1, u8.flatten(1).long()) / _pixels(u8)
        return (0.0 - torch.log2(p)).view(u8.shape)

    def score(self, maps: torch.Tensor) -> torch.Tensor:
        """Histogram entropy per map, `Tensor[N]` (float64, bits, in [0, 8])."""
        return histogram_entropy(to_gray_u8(maps))

    def score_for_attack(self, maps: torch.Tensor) -> torch.Tensor:
        """The histogram entropy with linear binning of the soft gray map
        (`tracekit.scores.entropy_surrogate.soft_histogram_entropy`), differentiable in `maps`
        (`DifferentiableMapScore`)."""
        from .entropy_surrogate import soft_gray, soft_histogram_entropy

        return soft_histogram_entropy(soft_gray(maps))
