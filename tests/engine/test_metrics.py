import numpy as np
import pytest
from sklearn.metrics import precision_score, recall_score, roc_auc_score, roc_curve

from tracekit.engine.metrics import calibrate_threshold, detection_metrics, tpr_at_fpr


@pytest.fixture
def scores():
    rng = np.random.default_rng(0)
    return rng.normal(0, 1, 400), rng.normal(1.5, 1, 300)


def test_auc_precision_recall_match_sklearn(scores):
    clean, adv = scores
    threshold = calibrate_threshold(clean, 0.05)
    m = detection_metrics(clean, adv, threshold)
    y = np.r_[np.zeros(len(clean)), np.ones(len(adv))]
    s = np.r_[clean, adv]
    assert m["auc"] == pytest.approx(roc_auc_score(y, s))
    assert m["precision"] == pytest.approx(precision_score(y, s > threshold))
    assert m["recall"] == pytest.approx(recall_score(y, s > threshold))
    assert m["fpr"] == pytest.approx(np.mean(clean > threshold))


def test_tpr_at_fpr_matches_roc_curve(scores):
    clean, adv = scores
    fpr, tpr, _ = roc_curve(np.r_[np.zeros(len(clean)), np.ones(len(adv))], np.r_[clean, adv])
    out = tpr_at_fpr(clean, adv)
    for level in (0.01, 0.05, 0.1):
        assert out[str(level)] == pytest.approx(tpr[fpr <= level].max())
    assert out["0.01"] <= out["0.05"] <= out["0.1"]


@pytest.mark.parametrize("target", [0.01, 0.05, 0.1, 0.3])
def test_calibrated_threshold_respects_target_fpr(scores, target):
    clean, _ = scores
    threshold = calibrate_threshold(clean, target)
    assert np.mean(clean > threshold) <= target
    # the next lower clean score would exceed the target: the threshold is as low as allowed
    lower = np.sort(clean)[np.sort(clean) < threshold].max()
    assert np.mean(clean > lower) > target


def test_perfect_and_random_separation():
    clean = np.arange(100.0)
    assert detection_metrics(clean, clean + 1000, calibrate_threshold(clean, 0.05))["auc"] == 1.0
    assert detection_metrics(clean, clean, 50.0)["auc"] == pytest.approx(0.5)


def test_no_adversarials_gives_nulls():
    m = detection_metrics(np.arange(10.0), np.zeros(0), 5.0)
    assert m["auc"] is None and m["tpr_at_fpr"]["0.05"] is None and m["fpr"] == pytest.approx(0.4)
