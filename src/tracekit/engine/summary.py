"""`metrics.json` numbers and `scores.csv` rows, computed from the per-sample tables alone.

Only successful adversarials count as positives (the paper's protocol); every number is taken on
the test part. `scores.csv` lists, per detector, the clean test images and then each attack's
adversarials of them, each block in dataset order.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..spec import Spec
from .metrics import bootstrap_ci, detection_metrics
from .predicting import Clean
from .reading import chunks
from .tables import Table

SCORE_COLUMNS = ("sample_id", "attack", "label", "pred", "success", "score")


def _mean(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _confidence(values: np.ndarray) -> float | None:
    """The mean of float32 softmax confidences, to float32 precision: a model's outputs can move
    by a unit in the last place with the batch they were computed in, which must not change a
    reported number (scores.csv and every metric are the same whatever the batch size)."""
    return float(np.float32(np.mean(values))) if len(values) else None


def attack_metrics(
    outcomes: dict[str, np.ndarray], clean_scores: np.ndarray, adv_scores: np.ndarray, threshold: float, spec: Spec
) -> dict[str, Any]:
    """DESIGN.md's per-attack metrics on the test part (`outcomes`: the attack table's test rows,
    `adv_scores` in the same order), plus bootstrap intervals, perturbation sizes and the failed
    adversarials' numbers."""
    ok = outcomes["success"].astype(bool)
    n_attacked = len(ok)
    out: dict[str, Any] = {
        "n_clean": len(clean_scores),
        "n_attacked": int(ok.sum()),
        "success_rate": float(ok.mean()) if n_attacked else None,
        "gt_confidence": _confidence(outcomes["gt_confidence"][ok]),
        "target_confidence": _confidence(outcomes["target_confidence"][ok]),
    }
    out.update(detection_metrics(clean_scores, adv_scores[ok], threshold))
    out.update(bootstrap_ci(clean_scores, adv_scores[ok], spec.evaluation.bootstrap, spec.evaluation.confidence, spec.seed))
    out["perturbation"] = {"l2": _mean(outcomes["l2"][ok]), "linf": _mean(outcomes["linf"][ok])}
    # prediction changed AND not flagged: success against model and detector together
    out["evasion_rate"] = float(np.mean(ok & (adv_scores <= threshold))) if n_attacked else None
    failed = adv_scores[~ok]
    out["failed"] = {
        "n": int(len(failed)),
        "auc": detection_metrics(clean_scores, failed, threshold)["auc"],
        "flag_rate": _mean(failed > threshold),
    }
    out["seconds"] = float(outcomes["seconds"].sum())
    out["cached_images"] = int(outcomes["cached"].sum())  # adversarials read from the attack cache
    return out


def score_rows(clean: Clean, test_part: np.ndarray, attacks: Iterable[tuple[str, dict[str, np.ndarray], np.ndarray]]) -> Iterator[tuple[Any, ...]]:
    """`scores.csv` rows of one detector: the clean test images (`test_part`: their scores in position
    order), then per attack `(key, outcomes of test images, their scores)`."""
    test = clean.part == "test"
    for sample_id, label, pred, score in zip(clean.ids[test], clean.labels[test], clean.preds[test], test_part):
        yield sample_id, "clean", int(label), int(pred), "", repr(float(score))
    for key, outcomes, scores in attacks:
        for sample_id, label, pred, ok, score in zip(
            outcomes["sample_id"], outcomes["label"], outcomes["pred"], outcomes["success"], scores
        ):
            yield sample_id, key, int(label), int(pred), int(ok), repr(float(score))


def write_scores(path: Path, rows: Iterable[tuple[Any, ...]], columns: tuple[str, ...] = SCORE_COLUMNS) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows(rows)


EXAMPLES_FILE = "examples.pt"


def attack_table(run_dir: Path, index: int, tag: str) -> Table:
    """The outcomes table of attack `index` as detector `tag` saw it (a detector-bound attack has
    one per detector)."""
    bound = Table(run_dir, f"attack-{index:02d}-{tag}")
    return bound if bound.exists() else Table(run_dir, f"attack-{index:02d}")


def scores_of_test_part(run_dir: Path, spec: Spec, tag: str) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
    """A detector's clean test scores and, per attack, its test outcomes joined with their scores
    (columns of the attack table plus `score`), read from a run directory's tables."""
    clean = Table(run_dir, f"scores-{tag}-clean").read()
    attacks = {}
    for i in range(len(spec.attacks)):
        table = attack_table(run_dir, i, tag)
        scores = Table(run_dir, f"scores-{tag}-{table.name}").read(["index", "score"])
        outcomes = table.read()
        keep = np.isin(outcomes["index"], scores["index"])
        attacks[spec.attack_key(i)] = {**{k: v[keep] for k, v in outcomes.items()}, "score": scores["score"]}
    return clean, attacks


def save_examples(path: Path, prep: Any, runs: Iterable[Any], n: int = 4) -> None:
    """The originals and adversarials of up to `n` test images per attack (successful
    adversarials first), so the report can draw them from the run directory alone."""
    import torch

    out = {}
    for run in runs:
        rows = run.table.read(["index", "success"])
        test = np.isin(rows["index"], prep.test)
        index, success = rows["index"][test], rows["success"][test]
        positions = np.sort(index[np.lexsort((index, ~success))][:n])
        if not len(positions):
            continue
        originals = [b.images for b in prep.reader.read(chunks(positions, len(positions)))]
        parts = list(run.adversarials(run.pieces(positions)))
        out[run.key] = {
            "index": torch.from_numpy(positions), "ids": [i for p in parts for i in p[2]],
            "original": torch.cat(originals), "adversarial": torch.cat([p[3] for p in parts]),
        }
    torch.save(out, path)
