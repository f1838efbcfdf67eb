"""Threshold calibration and detection metrics (scikit-learn's ROC, precision and recall)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_score, recall_score, roc_auc_score, roc_curve

FPR_LEVELS: tuple[float, ...] = (0.01, 0.05, 0.1)


def calibrate_threshold(clean_scores: np.ndarray, target_fpr: float) -> float:
    """The smallest threshold flagging (score > threshold) at most `target_fpr` of `clean_scores`."""
    scores = np.sort(np.asarray(clean_scores, dtype=np.float64))
    allowed = int(np.floor(target_fpr * len(scores)))  # clean images we may flag
    return float(scores[len(scores) - 1 - allowed])


def tpr_at_fpr(clean: np.ndarray, adversarial: np.ndarray, levels: tuple[float, ...] = FPR_LEVELS) -> dict[str, float]:
    """Best true-positive rate with false-positive rate <= each level, from the ROC curve."""
    y, s = _labelled(clean, adversarial)
    fpr, tpr, _ = roc_curve(y, s)
    return {str(level): float(tpr[fpr <= level + 1e-12].max()) for level in levels}


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
    y, s = _labelled(clean, adversarial)
    flagged = (s > threshold).astype(int)
    out.update(
        auc=float(roc_auc_score(y, s)),
        tpr_at_fpr=tpr_at_fpr(clean, adversarial),
        precision=float(precision_score(y, flagged, zero_division=0)),
        recall=float(recall_score(y, flagged, zero_division=0)),
    )
    return out


def _labelled(clean: np.ndarray, adversarial: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.concatenate([np.zeros(len(clean)), np.ones(len(adversarial))])
    return y, np.concatenate([clean, adversarial]).astype(np.float64)
