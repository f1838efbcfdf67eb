"""`metrics.json` numbers and `scores.csv` rows, computed from the per-sample tables alone.

Only successful adversarials count as positives (the paper's protocol); every number is taken on
the test part. `scores.csv` lists, per detector, the clean test images and then each attack's
adversarials of them, each block in dataset order.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..spec import Spec
from .metrics import bootstrap_ci, detection_metrics, sample_size
from .reading import chunks

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..protocols import Detector
    from .attacking import AttackRun
    from .driver import Driver
    from .predicting import Clean

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
    """The per-attack metrics of docs/method.md on the test part (`outcomes`: the attack table's test rows,
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
    out.update(
        bootstrap_ci(clean_scores, adv_scores[ok], spec.evaluation.bootstrap, spec.evaluation.confidence, spec.seed)
    )
    out.update(sample_size(out["n_clean"], out["n_attacked"]))  # too few images to conclude from?
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


def score_rows(
    clean: Clean, test_part: np.ndarray, attacks: Iterable[tuple[str, dict[str, np.ndarray], np.ndarray]]
) -> Iterator[tuple[Any, ...]]:
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


MAPS_BATCH = 64


def pictures(
    detector: Detector, module: nn.Module, images: torch.Tensor, device: torch.device
) -> tuple[np.ndarray, np.ndarray | None] | None:
    """`(gray u8 [N,H,W], score map [N,H,W] float32 or None)` of the detector's feature response
    maps of `images` (the gray map is tracekit's default conversion, the score map its score's own
    `ScoreMap.map`); None for a detector without maps (`MapsDetector`)."""
    import torch

    from ..protocols import MapsDetector
    from ..scores import to_gray_u8

    if not isinstance(detector, MapsDetector):
        return None
    grays, score_maps = [], []
    for start in range(0, len(images), MAPS_BATCH):
        maps = detector.maps(module, images[start : start + MAPS_BATCH].to(device)).detach()
        grays.append(to_gray_u8(maps).cpu())
        score_map = detector.score_map(maps)
        if score_map is not None:
            score_maps.append(score_map.detach().float().cpu())
    if not grays:
        return None
    gray = torch.cat(grays).numpy()
    return gray, torch.cat(score_maps).numpy() if score_maps else None


def map_title(detector_cfg: Mapping[str, Any]) -> str:
    """What a detector's score map shows, from its resolved spec: `local-entropy map (size 3)`."""
    score = detector_cfg.get("score")
    if not isinstance(score, Mapping):
        return "score map"
    params = ", ".join(f"{k} {v}" for k, v in score.items() if k not in ("name", "label"))
    return f"{score.get('label') or score.get('name')} map" + (f" ({params})" if params else "")


def save_examples(
    path: Path,
    driver: Driver,
    runs: Iterable[AttackRun],
    detector: Detector,
    detector_cfg: Mapping[str, Any],
    n: int = 4,
) -> None:
    """The originals and adversarials of up to `n` test images per attack (successful
    adversarials first) and the detector's pictures of both (`pictures`), as arrays in one
    `.npz` file, so the report draws them from the run directory alone (no torch, no model)."""
    import torch

    context, test = driver.context, driver.plan.test
    out: dict[str, np.ndarray] = {
        "classes": np.asarray(context.model.class_names, dtype=str),
        "map_title": np.asarray(map_title(detector_cfg)),
    }
    keys = []
    for run in runs:
        rows = run.outcomes(test)
        index, success = rows["index"], rows["success"]
        positions = np.sort(index[np.lexsort((index, ~success))][:n])
        if not len(positions):
            continue
        originals = torch.cat([b.images for b in context.reader.read(chunks(positions, len(positions)))])
        parts = list(run.adversarials(run.pieces(positions)))
        adversarials = torch.cat([p[3] for p in parts])
        k = f"a{len(keys)}"
        keys.append(run.key)
        out.update({
            f"{k}.index": positions, f"{k}.ids": np.asarray([i for p in parts for i in p[2]], dtype=str),
            f"{k}.original": originals.numpy(), f"{k}.adversarial": adversarials.numpy(),
        })  # fmt: skip
        drawn = pictures(detector, context.model.module, torch.cat([originals, adversarials]), context.device)
        if drawn is not None:
            out[f"{k}.gray"] = drawn[0]
            if drawn[1] is not None:
                out[f"{k}.score_map"] = drawn[1]
    out["attacks"] = np.asarray(keys, dtype=str)
    with open(path, "wb") as fh:
        np.savez_compressed(fh, **out)
