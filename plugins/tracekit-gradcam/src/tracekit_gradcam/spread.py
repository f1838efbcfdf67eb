"""The `cam-spread` score: how widely a map's mass is spread over the image.

With `m(x) = sum_c |map_c(x)|` the map's mass at pixel x and `p = m / sum m` its distribution
over the `P = H*W` pixels, the score is the normalized Shannon entropy
`S = -sum_x p(x) log2 p(x) / log2(P)`, in [0, 1]: 0 when all mass is on one pixel, 1 when it
is uniform. It is invariant to the map's scale (Grad-CAM maps have arbitrary units) and follows
the paper's hypothesis on the map as a whole: adversarial inputs spread the class evidence more
widely, so higher means more likely adversarial. A map without mass (all zeros, e.g. a
Grad-CAM whose ReLU removed everything) shows no localized evidence and counts as uniform (1).
Its picture is each pixel's term `-p(x) log2 p(x) / log2(P)`, which sums to the score.
"""

from __future__ import annotations

import math

import torch
from tracekit.errors import TracekitError


class CamSpread:
    """Normalized entropy of the map's mass distribution over pixels (0 = one pixel, 1 = uniform)."""

    def map(self, maps: torch.Tensor) -> torch.Tensor:
        """Each pixel's share `[N,H,W]` (float64) of the normalized entropy."""
        if maps.ndim != 4:
            raise TracekitError(f"cam-spread: expected maps of shape [N,C,H,W], got {tuple(maps.shape)}")
        mass = torch.linalg.vector_norm(maps, ord=1, dim=1, dtype=torch.float64)
        pixels = mass.shape[1] * mass.shape[2]
        total = mass.sum(dim=(1, 2), keepdim=True)
        p = torch.where(total > 0, mass / total, 1.0 / max(pixels, 1))
        terms = 0.0 - p * torch.log2(torch.where(p > 0, p, 1.0))
        return terms / (math.log2(pixels) if pixels > 1 else 1.0)

    def score(self, maps: torch.Tensor) -> torch.Tensor:
        """Normalized entropy per map, `Tensor[N]` (float64, in [0, 1])."""
        return self.map(maps).sum(dim=(1, 2))
