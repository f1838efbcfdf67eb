import numpy as np
import pytest
from sklearn.metrics import precision_score, recall_score, roc_auc_score, roc_curve

from tracekit.engine.metrics import _auc, bootstrap_ci, calibrate_threshold, detection_metrics, tpr_at_fpr


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


@pytest.mark.parametrize("seed", range(6))
def test_tpr_at_fpr_matches_full_roc_curve(seed):
    rng = np.random.default_rng(seed)
    n0, n1 = rng.integers(5, 300, 2)
    # few distinct values on some seeds, to exercise ties
    clean = rng.normal(0, 1, n0).round(seed % 3)
    adv = rng.normal(1, 1, n1).round(seed % 3)
    fpr, tpr, _ = roc_curve(np.r_[np.zeros(n0), np.ones(n1)], np.r_[clean, adv], drop_intermediate=False)
    out = tpr_at_fpr(clean, adv, levels=(0.0, 0.01, 0.05, 0.1, 0.5, 1.0))
    for level in (0.0, 0.01, 0.05, 0.1, 0.5, 1.0):
        assert out[str(level)] == pytest.approx(tpr[fpr <= level + 1e-12].max())


def test_batched_auc_matches_sklearn(scores):
    clean, adv = scores
    y = np.r_[np.zeros(len(clean)), np.ones(len(adv))]
    assert _auc(clean, adv) == pytest.approx(roc_auc_score(y, np.r_[clean, adv]))
    assert _auc(clean.round(), adv.round()) == pytest.approx(roc_auc_score(y, np.r_[clean.round(), adv.round()]))


def test_bootstrap_ci_covers_estimate_and_shrinks_with_more_samples():
    rng = np.random.default_rng(1)
    widths = []
    for n in (50, 800):
        clean, adv = rng.normal(0, 1, n), rng.normal(0.8, 1, n)
        m = detection_metrics(clean, adv, calibrate_threshold(clean, 0.05))
        ci = bootstrap_ci(clean, adv, samples=500, confidence=0.95, seed=0)
        lo, hi = ci["auc_ci"]
        assert lo <= m["auc"] <= hi
        for level, (tlo, thi) in ci["tpr_at_fpr_ci"].items():
            assert tlo <= m["tpr_at_fpr"][level] <= thi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2


def test_bootstrap_is_seeded():
    rng = np.random.default_rng(2)
    clean, adv = rng.normal(0, 1, 100), rng.normal(1, 1, 100)
    assert bootstrap_ci(clean, adv, 200, 0.95, 7) == bootstrap_ci(clean, adv, 200, 0.95, 7)
    assert bootstrap_ci(clean, adv, 200, 0.95, 7) != bootstrap_ci(clean, adv, 200, 0.95, 8)


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


def test_headline_level_is_the_reported_level_nearest_the_target() -> None:
    from tracekit.engine.metrics import headline_level

    assert [headline_level(t) for t in (0.001, 0.01, 0.02, 0.05, 0.075, 0.08, 0.1, 0.5)] == [
        0.01, 0.01, 0.01, 0.05, 0.05, 0.1, 0.1, 0.1,
    ]  # fmt: skip


def test_small_samples_are_flagged_below_min_per_class_images_of_either_class() -> None:
    from tracekit.engine.metrics import MIN_PER_CLASS, sample_size, small_sample

    assert MIN_PER_CLASS == 20
    assert small_sample(200, 3) and small_sample(3, 200) and small_sample(19, 19) and small_sample(50, 0)
    assert not small_sample(20, 20) and not small_sample(500, 400)
    assert sample_size(20, 3) == {"small_sample": True, "min_per_class": 20}
    assert sample_size(20, 20) == {"small_sample": False, "min_per_class": 20}


def test_a_tiny_sample_gives_a_certain_looking_interval_which_is_why_it_is_flagged() -> None:
    """Three adversarials all above every clean score: AUC 1 with the interval [1, 1]."""
    from tracekit.engine.metrics import small_sample

    clean, adv = np.arange(20.0), np.array([100.0, 101.0, 102.0])
    ci = bootstrap_ci(clean, adv, samples=200, confidence=0.95, seed=0)
    assert ci["auc_ci"] == [1.0, 1.0]
    assert small_sample(len(clean), len(adv))


def test_attack_metrics_records_the_flag_beside_the_counts_it_rests_on() -> None:
    from tracekit.engine.summary import attack_metrics
    from tracekit.spec import validate_spec

    spec = validate_spec({
        "name": "x", "model": {"name": "digits-cnn"}, "data": {"name": "digits"},
        "attacks": [{"name": "fgsm", "eps": 0.1}], "detector": {"name": "feature-response"},
    })  # fmt: skip

    def outcomes(success: list[bool]) -> dict[str, np.ndarray]:
        n = len(success)
        return {
            "success": np.array(success), "gt_confidence": np.full(n, 0.1), "target_confidence": np.full(n, 0.9),
            "l2": np.ones(n), "linf": np.full(n, 0.1), "seconds": np.zeros(n), "cached": np.zeros(n, dtype=bool),
        }  # fmt: skip

    clean = np.arange(40.0)
    few = attack_metrics(outcomes([True] * 3 + [False] * 37), clean, np.full(40, 100.0), 35.0, spec)
    assert few["small_sample"] is True and few["min_per_class"] == 20
    assert few["n_attacked"] == 3 and few["n_clean"] == 40 and few["auc"] == 1.0  # the counts, kept as they were
    enough = attack_metrics(outcomes([True] * 30 + [False] * 10), clean, np.full(40, 100.0), 35.0, spec)
    assert enough["small_sample"] is False and enough["n_attacked"] == 30
