"""Counter-based random numbers: a number is a hash of (key, seed, site, draw, position), not a
draw from a generator's state, so each image's numbers are the same alone or in any batch, on any
device, and no global random state is touched. The hash is PCG's output permutation on 32-bit
words, computed exactly in int64 (no product exceeds 2**62). Used by MC dropout's per-image masks
and the native one-pixel attack's per-image evolution.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

WORD = 0xFFFFFFFF


def pcg(words: Any) -> Any:
    """PCG's hash of 32-bit words: Python ints, or int64 tensors."""
    state = (words * 747796405 + 2891336453) & WORD
    word = (((state >> ((state >> 28) + 4)) ^ state) * 277803737) & WORD
    return (word >> 22) ^ word


def uniforms(keys: torch.Tensor, size: int, seed: int, site: int, draw: int) -> torch.Tensor:
    """`[N, size]` float64 numbers in [0, 1), a function of (key, seed, site, draw, position) only."""
    return words(keys, size, seed, site, draw).double() / 2.0**32


def words(keys: torch.Tensor, size: int, seed: int, site: int, draw: int) -> torch.Tensor:
    """`[N, size]` random 32-bit words (int64), a function of (key, seed, site, draw, position) only."""
    base = pcg((keys & WORD) ^ pcg((seed & WORD) ^ pcg(site * 65599 + draw)))
    return pcg(base[:, None] ^ _positions(size, keys.device)[None, :])


@functools.lru_cache(maxsize=8)
def _positions(size: int, device: torch.device) -> torch.Tensor:
    """The hashed positions 0..size-1 (the same for every draw: computed once)."""
    return pcg(torch.arange(size, device=device))
