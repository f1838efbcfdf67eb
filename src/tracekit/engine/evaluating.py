"""One detector, evaluated: fit and calibrate, run the attacks bound to it, score the test part and
every attack's adversarials, run the spec's controls; every score goes to a table first.

Its tables are named by `tracekit.layout.TableNames`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import TracekitError
from ..layout import TableNames
from ..protocols import Detector
from .attacking import AttackRun
from .context import RANDOMIZED, TRAINED, DetectorHandle, build
from .controls import randomized_layers
from .driver import Driver
from .fitting import fit, fit_and_calibrate
from .metrics import detection_metrics, roc_auc
from .predicting import Clean
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
    runs: list[AttackRun]  # every attack it faced, detector-bound (adaptive) ones included, in spec order
    clean_scores: np.ndarray  # of the test part, in position order
    attack_rows: list[tuple[str, dict[str, np.ndarray], np.ndarray]]  # (key, test outcomes, their scores)
    extra: dict[str, Any] = field(default_factory=dict)  # controls beyond per-attack numbers

    def rows(self, clean: Clean) -> Iterator[tuple[Any, ...]]:
        """This detector's `scores.csv` rows."""
        return score_rows(clean, self.clean_scores, self.attack_rows)


def evaluate(
    driver: Driver, detector: Detector, detector_cfg: Mapping[str, Any], tag: str, label: str = ""
) -> Evaluation:
    """Fit `detector` (clean fit images, and adversarials of fit images if it needs them),
    calibrate its threshold on the clean fit part, run the adaptive attacks against it, score
    the test part and every attack, and run the spec's controls."""
    spec, plan = driver.context.spec, driver.plan
    prefix = f"{label}: " if label else ""
    started = time.perf_counter()
    threshold, handle = fit_and_calibrate(driver, detector, detector_cfg, TRAINED, plan.runs, tag, prefix)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    clean = _score_clean(driver, handle, prefix)
    score_seconds = time.perf_counter() - started
    adaptive = {
        i: driver.attack(i, plan.test, TableNames.attack(i, tag), (handle, dict(detector_cfg), threshold))
        for i in plan.bound
        if (i, tag) not in plan.unavailable  # a comparison's detector it cannot attack: said, not run
    }
    unbound = iter(plan.runs)
    runs = [
        adaptive[i] if i in adaptive else next(unbound)
        for i in range(len(spec.attacks))
        if i in adaptive or i not in plan.bound
    ]
    per_attack: dict[str, Any] = {}
    attack_rows = []
    for run in runs:
        outcomes = run.outcomes(plan.test)
        started = time.perf_counter()
        adversarial = _score_adversarials(driver, handle, run, plan.test, prefix)
        score_seconds += time.perf_counter() - started
        m = attack_metrics(outcomes, clean, adversarial, threshold, spec)
        if "noise" in spec.controls:
            m["noise"] = _noise_control(driver, handle, run, outcomes, clean, threshold, prefix)
        per_attack[run.key] = m
        attack_rows.append((run.key, outcomes, adversarial))
    # What the detector itself costs, attacks aside: fit and calibration (cross-fitted copies
    # included), and scoring the test part and its adversarials (chunks already in the tables of a
    # resumed run cost nothing here).
    extra: dict[str, Any] = {
        "cost": {
            "fit_seconds": fit_seconds,
            "score_seconds": score_seconds,
            "scored_images": len(clean) + sum(len(rows[2]) for rows in attack_rows),
        }
    }
    if "randomized-model" in spec.controls:
        extra["randomized_model"] = _randomized_model(driver, detector_cfg, runs, per_attack, tag, prefix)
    if detector.needs_adversarial_fit and spec.evaluation.transfer and len(plan.runs) > 1:
        extra["transfer"] = _transfer(driver, detector_cfg, tag, prefix)
    missing = {spec.attack_key(i): why for (i, of), why in plan.unavailable.items() if of == tag}
    if missing:  # metrics.json: `no_adaptive_attack`, attack label -> why (tables and report say so)
        extra["no_adaptive_attack"] = missing
    return Evaluation(detector, threshold, per_attack, runs, clean, attack_rows, extra)


def _score(
    driver: Driver, handle: DetectorHandle, name: str, source: Source, description: str, predictions: bool = False
) -> dict[str, np.ndarray]:
    """Scores of `handle`'s detector of `source`, in its table of `name`."""
    table = driver.context.table(TableNames.scores(handle.tag, name))
    return score_into(driver.executor, ScoreStage(table, source, handle, description, predictions))


def _score_clean(driver: Driver, handle: DetectorHandle, prefix: str) -> np.ndarray:
    source = CleanImages(driver.plan.test, driver.context.spec.batch_size)
    return _score(driver, handle, "clean", source, f"{prefix}score clean test")["score"]


def _score_adversarials(
    driver: Driver, handle: DetectorHandle, run: AttackRun, positions: np.ndarray, prefix: str
) -> np.ndarray:
    """Scores of `run`'s adversarials of the images at `positions`, in position order."""
    return _score(driver, handle, run.table.name, Adversarials(run, positions), f"{prefix}score {run.key}")["score"]


def _noise_control(
    driver: Driver,
    handle: DetectorHandle,
    run: AttackRun,
    outcomes: dict[str, np.ndarray],
    clean: np.ndarray,
    threshold: float,
    prefix: str,
) -> dict[str, Any]:
    """Flag rate at the threshold, AUC against clean, and how often the prediction changed, for
    noise of each test image's adversarial size (sign noise: its L-inf, Gaussian: its L2)."""
    spec, plan = driver.context.spec, driver.plan
    images = CleanImages(outcomes["index"], spec.batch_size)
    labels = plan.clean.by_position(plan.clean.labels)
    out = {}
    for kind in NOISE_KINDS:
        rows = _score(
            driver,
            handle,
            TableNames.noise(run.table.name, kind),
            NoisyImages(images, kind, run.table, spec.seed),
            f"{prefix}score {run.key} {kind} noise",
            predictions=True,
        )
        out[kind] = {
            "flag_rate": float(np.mean(rows["score"] > threshold)),
            "auc": detection_metrics(clean, rows["score"], threshold)["auc"],
            "prediction_changed": float(np.mean(rows["pred"] != labels[rows["index"]])),
        }
    return out


def _randomized_model(
    driver: Driver,
    detector_cfg: Mapping[str, Any],
    runs: list[AttackRun],
    per_attack: dict[str, Any],
    tag: str,
    prefix: str,
) -> dict[str, Any]:
    """Fit, calibrate and score a fresh detector on a cascading-randomized copy of the model;
    each attack's AUC goes beside the real one (`per_attack[key]["randomized_model"]`)."""
    detector: Detector = build("detector", detector_cfg)
    prefix = f"{prefix}randomized model: "
    plan = driver.plan
    threshold, handle = fit_and_calibrate(
        driver, detector, detector_cfg, RANDOMIZED, plan.runs, TableNames.randomized(tag), prefix
    )
    clean = _score_clean(driver, handle, prefix)
    for run in runs:
        adversarial = _score_adversarials(driver, handle, run, run.successful(plan.test), prefix)
        m = detection_metrics(clean, adversarial, threshold)
        per_attack[run.key]["randomized_model"] = {"auc": m["auc"], "tpr_at_fpr": m["tpr_at_fpr"]}
    return {"layers": randomized_layers(driver.context.model.module), "threshold": threshold}


def _transfer(
    driver: Driver, detector_cfg: Mapping[str, Any], tag: str, prefix: str
) -> dict[str, dict[str, float | None]]:
    """AUC of a learned detector fitted on one attack's adversarials and tested on each attack's."""
    matrix: dict[str, dict[str, float | None]] = {}
    plan = driver.plan
    everything = np.ones(len(plan.fit_subset), dtype=bool)
    for k, source in enumerate(plan.runs):
        detector: Detector = build("detector", detector_cfg)
        here = f"{prefix}fit on {source.key}: "
        try:
            fit(driver, detector, driver.context.model, [source], here, everything)  # AUC only: no threshold needed
        except TracekitError:
            matrix[source.key] = {target.key: None for target in plan.runs}  # no fit adversarials
            continue
        handle = driver.share(detector, detector_cfg, TableNames.transfer(tag, k))
        clean = _score_clean(driver, handle, here)
        matrix[source.key] = {
            target.key: roc_auc(clean, _score_adversarials(driver, handle, target, target.successful(plan.test), here))
            for target in plan.runs
        }
    return matrix
