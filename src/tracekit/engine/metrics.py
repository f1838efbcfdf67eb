"""Threshold calibration, detection metrics and bootstrap confidence intervals.

AUC, precision and recall come from scikit-learn. TPR at a fixed FPR is computed in closed
form so that it vectorizes over bootstrap resamples; it equals the best true-positive rate
among the points of scikit-learn's full ROC curve (`drop_intermediate=False`) with
false-positive rate <= the level.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import precision_score, recall_score, roc_auc_score

FPR_LEVELS: tuple[float, ...] = (0.01, 0.05, 0.1)

MIN_PER_CLASS = 20
"""The fewest images of each class (clean test images; an attack's successful adversarials) that
an attack's AUC, TPRs and their bootstrap intervals are read from without a warning. Below it
the numbers are still computed, but `metrics.json` flags the attack (`small_sample`), and the
terminal and the report say that they are too few to conclude anything from: a percentile
bootstrap of three adversarials gives intervals such as [1.00, 1.00], which look certain and are
not (the resamples can only repeat the same three scores)."""


def headline_level(target_fpr: float) -> float:
    """The reported FPR level closest to the calibration's target (the lower one on a tie): the
    level that summary tables headline."""
    return min(FPR_LEVELS, key=lambda level: (abs(level - target_fpr), level))


def calibrate_threshold(clean_scores: np.ndarray, target_fpr: float) -> float:
    """The smallest threshold flagging (score > threshold) at most `target_fpr` of `clean_scores`."""
    scores = np.sort(np.asarray(clean_scores, dtype=np.float64))
    allowed = int(np.floor(target_fpr * len(scores)))  # clean images we may flag
    return float(scores[len(scores) - 1 - allowed])


def _tpr_at(clean: np.ndarray, adversarial: np.ndarray, level: float) -> np.ndarray:
    """Best TPR with FPR <= level, for the last axis (batched over leading axes).

    Flagging `score >= t` flags at most k = floor(level * n_clean) clean images exactly when
    t exceeds the (k+1)-th largest clean score, so the best TPR is the share of adversarial
    scores above that clean score.
    """
    n_clean = clean.shape[-1]
    k = int(np.floor(level * n_clean + 1e-9))
    if k >= n_clean:
        return np.ones(clean.shape[:-1])
    kth = -np.partition(-clean, k, axis=-1)[..., k]
    return (adversarial > kth[..., None]).mean(-1)


def tpr_at_fpr(clean: np.ndarray, adversarial: np.ndarray, levels: tuple[float, ...] = FPR_LEVELS) -> dict[str, float]:
    """Best true-positive rate with false-positive rate <= each level."""
    clean, adversarial = np.asarray(clean, dtype=np.float64), np.asarray(adversarial, dtype=np.float64)
    return {str(level): float(_tpr_at(clean, adversarial, level)) for level in levels}


def _auc(clean: np.ndarray, adversarial: np.ndarray) -> np.ndarray:
    """ROC AUC (Mann-Whitney, ties counted half) over the last axis, batched."""
    n0, n1 = clean.shape[-1], adversarial.shape[-1]
    ranks = rankdata(np.concatenate([clean, adversarial], axis=-1), axis=-1)
    return (ranks[..., n0:].sum(-1) - n1 * (n1 + 1) / 2) / (n0 * n1)


def bootstrap_ci(
    clean: np.ndarray, adversarial: np.ndarray, samples: int, confidence: float, seed: int
) -> dict[str, object]:
    """Percentile bootstrap intervals for AUC and TPR@FPR, resampling clean and adversarial
    scores separately (stratified), with a seeded generator."""
    clean, adversarial = np.asarray(clean, dtype=np.float64), np.asarray(adversarial, dtype=np.float64)
    rng = np.random.default_rng(seed)
    out: dict[str, object] = {"auc_ci": None, "tpr_at_fpr_ci": {str(level): None for level in FPR_LEVELS}}
    if samples <= 0 or len(clean) == 0 or len(adversarial) == 0:
        return out
    alpha = (1 - confidence) / 2
    c = clean[rng.integers(0, len(clean), (samples, len(clean)))]
    a = adversarial[rng.integers(0, len(adversarial), (samples, len(adversarial)))]

    def interval(values: np.ndarray) -> list[float]:
        lo, hi = np.quantile(values, [alpha, 1 - alpha])
        return [float(lo), float(hi)]

    out["auc_ci"] = interval(_auc(c, a))
    out["tpr_at_fpr_ci"] = {str(level): interval(_tpr_at(c, a, level)) for level in FPR_LEVELS}
    return out


def small_sample(n_clean: int, n_adversarial: int) -> bool:
    """Fewer than `MIN_PER_CLASS` clean or adversarial images: too few to conclude from."""
    return min(n_clean, n_adversarial) < MIN_PER_CLASS


def sample_size(n_clean: int, n_adversarial: int) -> dict[str, object]:
    """The `metrics.json` keys that say whether an attack's numbers rest on a small sample:
    `small_sample` (see `small_sample`) and the `min_per_class` it was judged against (the counts
    themselves are `n_clean` and `n_attacked`)."""
    return {"small_sample": small_sample(n_clean, n_adversarial), "min_per_class": MIN_PER_CLASS}


def roc_auc(clean: np.ndarray, adversarial: np.ndarray) -> float | None:
    """ROC AUC of adversarial (positive) against clean scores (scikit-learn); None if either is empty."""
    if len(clean) == 0 or len(adversarial) == 0:
        return None
    y = np.concatenate([np.zeros(len(clean)), np.ones(len(adversarial))])
    return float(roc_auc_score(y, np.concatenate([clean, adversarial])))


def detection_metrics(clean: np.ndarray, adversarial: np.ndarray, threshold: float) -> dict[str, object]:
    """ROC AUC, TPR@FPR (test part), and the calibrated threshold's fpr, precision and recall."""
    clean, adversarial = np.asarray(clean, dtype=np.float64), np.asarray(adversarial, dtype=np.float64)
    out: dict[str, object] = {
        "auc": None,
        "tpr_at_fpr": {str(level): None for level in FPR_LEVELS},
        "threshold": float(threshold),
        "fpr": float(np.mean(clean > threshold)) if len(clean) else None,
        "precision": None,
        "recall": None,
    }
    if len(clean) == 0 or len(adversarial) == 0:
        return out
    y = np.concatenate([np.zeros(len(clean)), np.ones(len(adversarial))])
    s = np.concatenate([clean, adversarial])
    flagged = (s > threshold).astype(int)
    out.update(
        auc=roc_auc(clean, adversarial),
        tpr_at_fpr=tpr_at_fpr(clean, adversarial),
        precision=float(precision_score(y, flagged, zero_division=0)),
        recall=float(recall_score(y, flagged, zero_division=0)),
    )
    return out
