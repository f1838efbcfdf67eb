"""Wall-clock timing shared by the benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall time of one run of `fn` (CUDA synchronized before and after)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def median_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median wall time of `fn` over `repeats` runs, after one warm-up run (CUDA synchronized)."""
    fn()
    return statistics.median(_timed(fn, device) for _ in range(repeats))


def paired_seconds(
    fn: Callable[[], object], reference: Callable[[], object], repeats: int, device: torch.device
) -> tuple[float, float]:
    """`fn`'s median wall time and the median ratio of its time to `reference`'s over `repeats`
    pairs of runs, after one warm-up each. The two alternate, so that a machine's slow phases
    weigh on both sides of each ratio."""
    reference()
    fn()
    pairs = [(_timed(reference, device), _timed(fn, device)) for _ in range(repeats)]
    return statistics.median(mine for _, mine in pairs), statistics.median(mine / ref for ref, mine in pairs)
