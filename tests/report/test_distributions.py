"""Score distributions gathered in bounded memory: the histogram figure's bins are numpy's, and
the ROC curve is scikit-learn's at the bins' resolution."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from tracekit.report.distributions import FINE_BINS, HIST_BINS, gather, of_arrays, roc


def test_the_histogram_bins_are_numpys_over_the_scores_and_the_threshold():
    rng = np.random.default_rng(0)
    clean, adversarial, threshold = rng.normal(size=500), rng.normal(0.7, size=80), 4.2
    found_clean, found_adv = of_arrays([clean, adversarial], [threshold])
    edges = np.histogram_bin_edges(np.r_[clean, adversarial, threshold], bins=HIST_BINS)
    for found, values in [(found_clean, clean), (found_adv, adversarial)]:
        counts, coarse = found.hist()
        assert np.allclose(coarse, edges)
        assert np.array_equal(counts, np.histogram(values, edges)[0])
        assert found.n == len(values)


@pytest.mark.parametrize("seed", range(3))
def test_the_roc_curve_is_sklearns_at_the_bins_resolution(seed):
    rng = np.random.default_rng(seed)
    clean, adversarial = rng.normal(size=400), rng.normal(0.8, size=150)
    found_clean, found_adv = of_arrays([clean, adversarial])
    fpr, tpr = roc(found_clean, found_adv)
    assert (np.diff(fpr) >= 0).all() and (np.diff(tpr) >= 0).all()
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    y = np.r_[np.zeros(len(clean)), np.ones(len(adversarial))]
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_score(y, np.r_[clean, adversarial]), abs=1e-3)
    exact_fpr, exact_tpr, _ = roc_curve(y, np.r_[clean, adversarial], drop_intermediate=False)
    exact = set(zip(np.round(exact_fpr, 12), np.round(exact_tpr, 12)))
    binned = list(zip(np.round(fpr, 12), np.round(tpr, 12)))
    assert all(point in exact for point in binned)  # every point drawn is a point of the exact curve
    assert len(binned) > 0.9 * len(exact_fpr)  # and nearly all of them are drawn


def test_sources_are_streamed_twice_and_never_collected():
    calls = []

    def batches():
        calls.append(1)
        rng = np.random.default_rng(1)
        for _ in range(10):
            yield rng.normal(size=1000)

    (found,) = gather([batches])
    assert len(calls) == 2 and found.n == 10_000 and len(found.counts) == FINE_BINS


def test_no_scores_at_all_is_an_empty_distribution():
    (found,) = of_arrays([np.zeros(0)])
    assert found.n == 0 and found.hist()[0].sum() == 0
