"""One detector, evaluated: fit and calibrate, run the attacks bound to it, score the test part and
every attack's adversarials, run the spec's controls; every score goes to a table first.

Tables of detector `tag` (`d00` for a run's detector, `d<NN>` for a comparison's): `scores-<tag>-fit`,
`-clean` (the test part), `-<attack table>` (adversarials of test images), the noise controls'
`-<attack table>-noise-<kind>`, and `<tag>-random...` / `<tag>-transfer<NN>...` for the randomized
model and transfer controls.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import TracekitError
from ..protocols import Detector
from .attacking import AttackRun
from .context import RANDOMIZED, TRAINED, DetectorHandle, build
from .controls import randomized_layers
from .fitting import fit, fit_and_calibrate
from .metrics import detection_metrics, roc_auc
from .predicting import Clean
from .preparing import Prepared
from .scoring import (
    NOISE_KINDS,
    Adversarials,
    CleanImages,
    NoisyImages,
    ScoreStage,
    Source,
    score_into,
)
from .summary import attack_metrics, score_rows


@dataclass
class Evaluation:
    """One detector fitted on the fit part and scored on the test part."""

    detector: Detector
    threshold: float
    per_attack: dict[str, Any]
    runs: list[AttackRun]  # every attack, detector-bound (adaptive) ones included, in spec order
    clean_scores: np.ndarray  # of the test part, in position order
    attack_rows: list[tuple[str, dict[str, np.ndarray], np.ndarray]]  # (key, test outcomes, their scores)
    extra: dict[str, Any] = field(default_factory=dict)  # controls beyond per-attack numbers

    def rows(self, clean: Clean) -> Iterator[tuple[Any, ...]]:
        """This detector's `scores.csv` rows."""
        return score_rows(clean, self.clean_scores, self.attack_rows)


def evaluate(prep: Prepared, detector: Detector, detector_cfg: Mapping[str, Any], tag: str, label: str = "") -> Evaluation:
    """Fit `detector` (clean fit images, and adversarials of fit images if it needs them),
    calibrate its threshold on the clean fit part, run the adaptive attacks against it, score
    the test part and every attack, and run the spec's controls."""
    spec = prep.spec
    prefix = f"{label}: " if label else ""
    threshold, handle = fit_and_calibrate(prep, detector, detector_cfg, TRAINED, prep.runs, tag, prefix)
    clean = _score_clean(prep, handle, prefix)
    adaptive = {
        i: prep.attack(i, prep.test, f"attack-{i:02d}-{tag}", (handle, dict(detector_cfg), threshold))
        for i in prep.bound
    }
    unbound = iter(prep.runs)
    runs = [adaptive[i] if i in adaptive else next(unbound) for i in range(len(spec.attacks))]
    per_attack: dict[str, Any] = {}
    attack_rows = []
    for run in runs:
        outcomes = run.table.read()
        in_test = np.isin(outcomes["index"], prep.test)
        outcomes = {k: v[in_test] for k, v in outcomes.items()}
        adversarial = _score_adversarials(prep, handle, run, prep.test, prefix)
        m = attack_metrics(outcomes, clean, adversarial, threshold, spec)
        if "noise" in spec.controls:
            m["noise"] = _noise_control(prep, handle, run, outcomes, clean, threshold, prefix)
        per_attack[run.key] = m
        attack_rows.append((run.key, outcomes, adversarial))
    extra: dict[str, Any] = {}
    if "randomized-model" in spec.controls:
        extra["randomized_model"] = _randomized_model(prep, detector_cfg, runs, per_attack, tag, prefix)
    if detector.needs_adversarial_fit and spec.evaluation.transfer and len(prep.runs) > 1:
        extra["transfer"] = _transfer(prep, detector_cfg, tag, prefix)
    return Evaluation(detector, threshold, per_attack, runs, clean, attack_rows, extra)


def _score(prep: Prepared, handle: DetectorHandle, name: str, source: Source, description: str, predictions: bool = False) -> dict[str, np.ndarray]:
    """Scores of `handle`'s detector of `source`, in table `scores-<tag>-<name>`."""
    table = prep.table(f"scores-{handle.tag}-{name}")
    return score_into(prep.executor, ScoreStage(table, source, handle, description, predictions))


def _score_clean(prep: Prepared, handle: DetectorHandle, prefix: str) -> np.ndarray:
    source = CleanImages(prep.test, prep.spec.batch_size)
    return _score(prep, handle, "clean", source, f"{prefix}score clean test")["score"]


def _score_adversarials(prep: Prepared, handle: DetectorHandle, run: AttackRun, positions: np.ndarray, prefix: str) -> np.ndarray:
    """Scores of `run`'s adversarials of the images at `positions`, in position order."""
    return _score(prep, handle, run.table.name, Adversarials(run, positions), f"{prefix}score {run.key}")["score"]


def _noise_control(
    prep: Prepared, handle: DetectorHandle, run: AttackRun, outcomes: dict[str, np.ndarray], clean: np.ndarray,
    threshold: float, prefix: str,
) -> dict[str, Any]:
    """Flag rate at the threshold, AUC against clean, and how often the prediction changed, for
    noise of each test image's adversarial size (sign noise: its L-inf, Gaussian: its L2)."""
    images = CleanImages(outcomes["index"], prep.spec.batch_size)
    labels = prep.clean.by_position(prep.clean.labels)
    out = {}
    for kind in NOISE_KINDS:
        rows = _score(
            prep, handle, f"{run.table.name}-noise-{kind}", NoisyImages(images, kind, run.table, prep.spec.seed),
            f"{prefix}score {run.key} {kind} noise", predictions=True,
        )
        out[kind] = {
            "flag_rate": float(np.mean(rows["score"] > threshold)),
            "auc": detection_metrics(clean, rows["score"], threshold)["auc"],
            "prediction_changed": float(np.mean(rows["pred"] != labels[rows["index"]])),
        }
    return out


def _successful_test(run: AttackRun, test: np.ndarray) -> np.ndarray:
    rows = run.table.read(["index", "success"])
    return rows["index"][rows["success"] & np.isin(rows["index"], test)]


def _randomized_model(
    prep: Prepared, detector_cfg: Mapping[str, Any], runs: list[AttackRun], per_attack: dict[str, Any], tag: str,
    prefix: str,
) -> dict[str, Any]:
    """Fit, calibrate and score a fresh detector on a cascading-randomized copy of the model;
    each attack's AUC goes beside the real one (`per_attack[key]["randomized_model"]`)."""
    detector: Detector = build("detector", detector_cfg)
    prefix = f"{prefix}randomized model: "
    threshold, handle = fit_and_calibrate(prep, detector, detector_cfg, RANDOMIZED, prep.runs, f"{tag}-random", prefix)
    clean = _score_clean(prep, handle, prefix)
    for run in runs:
        adversarial = _score_adversarials(prep, handle, run, _successful_test(run, prep.test), prefix)
        m = detection_metrics(clean, adversarial, threshold)
        per_attack[run.key]["randomized_model"] = {"auc": m["auc"], "tpr_at_fpr": m["tpr_at_fpr"]}
    return {"layers": randomized_layers(prep.model.module), "threshold": threshold}


def _transfer(prep: Prepared, detector_cfg: Mapping[str, Any], tag: str, prefix: str) -> dict[str, dict[str, float | None]]:
    """AUC of a learned detector fitted on one attack's adversarials and tested on each attack's."""
    matrix: dict[str, dict[str, float | None]] = {}
    everything = np.ones(len(prep.fit_subset), dtype=bool)
    for k, source in enumerate(prep.runs):
        detector: Detector = build("detector", detector_cfg)
        here = f"{prefix}fit on {source.key}: "
        try:
            fit(prep, detector, prep.model, [source], here, everything)  # AUC only: no threshold needed
        except TracekitError:
            matrix[source.key] = {target.key: None for target in prep.runs}  # no fit adversarials
            continue
        handle = prep.share(detector, detector_cfg, f"{tag}-transfer{k:02d}")
        clean = _score_clean(prep, handle, here)
        matrix[source.key] = {
            target.key: roc_auc(clean, _score_adversarials(prep, handle, target, _successful_test(target, prep.test), here))
            for target in prep.runs
        }
    return matrix
