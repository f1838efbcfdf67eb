"""Score distributions for the figures, gathered in bounded memory however many rows a run has.

The report's ROC curves and score histograms need every score of the clean test images and of
each attack's successful adversarials, which for a large run are millions of rows. They are
gathered as histograms instead (two streamed passes: the range, then the counts) on `FINE_BINS`
bins spanning all of a detector's scores and its threshold. The histogram figure's `HIST_BINS`
bins are whole groups of fine bins (the same bins `np.histogram_bin_edges(..., 30)` would give),
and a ROC curve from them is exact at `FINE_BINS` thresholds: at a figure's resolution, the exact
curve. The AUCs the figures print come from `metrics.json`, computed from the exact scores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

HIST_BINS = 30
FINE_BINS = HIST_BINS * 512


@dataclass
class Distribution:
    """Counts of scores on the shared `edges` (`FINE_BINS` bins)."""

    counts: np.ndarray
    edges: np.ndarray

    @classmethod
    def spanning(cls, low: float, high: float) -> Distribution:
        """An empty distribution on `FINE_BINS` bins from `low` to `high` (as numpy widens an empty range)."""
        if not (np.isfinite(low) and np.isfinite(high)):
            low, high = 0.0, 1.0
        return cls(np.zeros(FINE_BINS, dtype=np.int64), np.histogram_bin_edges([low, high], bins=FINE_BINS))

    def add(self, values: np.ndarray) -> None:
        self.counts += np.histogram(values, self.edges)[0]

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def hist(self) -> tuple[np.ndarray, np.ndarray]:
        """`(counts, edges)` on the figure's `HIST_BINS` bins."""
        return self.counts.reshape(HIST_BINS, -1).sum(1), self.edges[:: FINE_BINS // HIST_BINS]


def roc(clean: Distribution, adversarial: Distribution) -> tuple[np.ndarray, np.ndarray]:
    """`(fpr, tpr)` of flagging scores above each fine bin's edge, from the highest threshold down
    (as `sklearn.metrics.roc_curve` orders them), starting at (0, 0)."""
    fpr = np.r_[0.0, np.cumsum(clean.counts[::-1]) / max(clean.n, 1)]
    tpr = np.r_[0.0, np.cumsum(adversarial.counts[::-1]) / max(adversarial.n, 1)]
    keep = np.r_[True, (np.diff(fpr) > 0) | (np.diff(tpr) > 0)]  # drop thresholds that move nothing
    return fpr[keep], tpr[keep]


Batches = Callable[[], Iterable[np.ndarray]]


def gather(sources: list[Batches], extra: Sequence[float] = ()) -> list[Distribution]:
    """Each source's `Distribution` on bins shared by all of them and spanning `extra` too (the
    threshold); a source is a callable yielding batches of scores, called once per pass."""
    low, high = min(extra, default=np.inf), max(extra, default=-np.inf)
    for batches in sources:
        for values in batches():
            if len(values):
                low, high = min(low, float(values.min())), max(high, float(values.max()))
    out = []
    for batches in sources:
        found = Distribution.spanning(low, high)
        for values in batches():
            found.add(values)
        out.append(found)
    return out


def of_arrays(arrays: Sequence[np.ndarray], extra: Sequence[float] = ()) -> list[Distribution]:
    """`gather` of scores already in memory."""
    return gather([lambda a=a: [np.asarray(a, dtype=float)] for a in arrays], extra)
