"""One detector, evaluated: fit and calibrate, run the attacks bound to it, score the test part and
every attack's adversarials, run the spec's controls; every score goes to a table first.

Tables of detector `tag` (`d00` for a run's detector, `d<NN>` for a comparison's): `scores-<tag>-fit`,
`-clean` (the test part), `-<attack table>` (adversarials of test images), the noise controls'
`-<attack table>-noise-<kind>`, and `<tag>-random...` / `<tag>-transfer<NN>...` for the randomized
model and transfer controls.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ..errors import TracekitError
from ..protocols import Detector, LoadedModel
from .attacking import AttackRun
from .controls import randomized_copy
from .fitting import fit, fit_and_calibrate
from .metrics import detection_metrics, roc_auc
from .predicting import Clean, by_position, probabilities
from .preparing import Prepared, build
from .scoring import NOISE_KINDS, clean_images, noisy_images, score_into
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
    spec, model = prep.spec, prep.model
    prefix = f"{label}: " if label else ""
    threshold = fit_and_calibrate(prep, detector, model, prep.runs, tag, prefix)
    clean = _score_clean(prep, detector, model, tag, prefix)
    adaptive = {
        i: prep.attack(i, prep.test, f"attack-{i:02d}-{tag}", (detector, dict(detector_cfg), threshold))
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
        adversarial = _score_adversarials(prep, detector, model, run, prep.test, f"{tag}-{run.table.name}", prefix)
        m = attack_metrics(outcomes, clean, adversarial, threshold, spec)
        if "noise" in spec.controls:
            m["noise"] = _noise_control(prep, detector, run, outcomes, clean, threshold, tag, prefix)
        per_attack[run.key] = m
        attack_rows.append((run.key, outcomes, adversarial))
    extra: dict[str, Any] = {}
    if "randomized-model" in spec.controls:
        extra["randomized_model"] = _randomized_model(prep, detector_cfg, runs, per_attack, tag, prefix)
    if detector.needs_adversarial_fit and spec.evaluation.transfer and len(prep.runs) > 1:
        extra["transfer"] = _transfer(prep, detector_cfg, tag, prefix)
    return Evaluation(detector, threshold, per_attack, runs, clean, attack_rows, extra)


def _score_clean(prep: Prepared, detector: Detector, model: LoadedModel, tag: str, prefix: str) -> np.ndarray:
    test = prep.test
    return score_into(
        prep.table(f"scores-{tag}-clean"), clean_images(prep.reader, test, prep.spec.batch_size), detector, model,
        prep.device, f"{prefix}score clean test", len(test),
    )["score"]


def _score_adversarials(
    prep: Prepared, detector: Detector, model: LoadedModel, run: AttackRun, positions: np.ndarray, table: str, prefix: str
) -> np.ndarray:
    """Scores of `run`'s adversarials of the images at `positions`, in position order."""
    return score_into(
        prep.table(f"scores-{table}"), lambda skip: run.adversarials(positions, skip), detector, model, prep.device,
        f"{prefix}score {run.key}", len(positions),
    )["score"]


def _noise_control(
    prep: Prepared, detector: Detector, run: AttackRun, outcomes: dict[str, np.ndarray], clean: np.ndarray,
    threshold: float, tag: str, prefix: str,
) -> dict[str, Any]:
    """Flag rate at the threshold, AUC against clean, and how often the prediction changed, for
    noise of each test image's adversarial size (sign noise: its L-inf, Gaussian: its L2)."""
    positions, size = outcomes["index"], int(prep.clean.index.max()) + 1
    l2, linf = (by_position(positions, outcomes[key], size) for key in ("l2", "linf"))
    labels = prep.clean.by_position(prep.clean.labels)
    out = {}
    for kind in NOISE_KINDS:
        rows = score_into(
            prep.table(f"scores-{tag}-{run.table.name}-noise-{kind}"),
            noisy_images(clean_images(prep.reader, positions, prep.spec.batch_size), kind, l2, linf, prep.spec.seed),
            detector, prep.model, prep.device, f"{prefix}score {run.key} {kind} noise", len(positions),
            extra=lambda images: {"pred": probabilities(prep.model.module, images, prep.device).argmax(1).numpy()},
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
    module, layers = randomized_copy(prep.model.module, prep.spec.seed)
    model = dataclasses.replace(prep.model, module=module)
    detector: Detector = build("detector", detector_cfg)
    prefix, tag = f"{prefix}randomized model: ", f"{tag}-random"
    threshold = fit_and_calibrate(prep, detector, model, prep.runs, tag, prefix)
    clean = _score_clean(prep, detector, model, tag, prefix)
    for run in runs:
        adversarial = _score_adversarials(
            prep, detector, model, run, _successful_test(run, prep.test), f"{tag}-{run.table.name}", prefix
        )
        m = detection_metrics(clean, adversarial, threshold)
        per_attack[run.key]["randomized_model"] = {"auc": m["auc"], "tpr_at_fpr": m["tpr_at_fpr"]}
    return {"layers": layers, "threshold": threshold}


def _transfer(prep: Prepared, detector_cfg: Mapping[str, Any], tag: str, prefix: str) -> dict[str, dict[str, float | None]]:
    """AUC of a learned detector fitted on one attack's adversarials and tested on each attack's."""
    matrix: dict[str, dict[str, float | None]] = {}
    everything = np.ones(len(prep.fit_subset), dtype=bool)
    for k, source in enumerate(prep.runs):
        detector: Detector = build("detector", detector_cfg)
        here, where = f"{prefix}fit on {source.key}: ", f"{tag}-transfer{k:02d}"
        try:
            fit(prep, detector, prep.model, [source], here, everything)  # AUC only: no threshold needed
        except TracekitError:
            matrix[source.key] = {target.key: None for target in prep.runs}  # no fit adversarials
            continue
        clean = _score_clean(prep, detector, prep.model, where, here)
        matrix[source.key] = {
            target.key: roc_auc(clean, _score_adversarials(
                prep, detector, prep.model, target, _successful_test(target, prep.test), f"{where}-{target.table.name}", here,
            ))
            for target in prep.runs
        }  # fmt: skip
    return matrix
