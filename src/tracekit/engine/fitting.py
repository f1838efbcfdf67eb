"""Fitting and calibration: the global step that turns a detector and the fit part into a threshold.

A detector is fitted on a bounded, seeded subset of the clean fit part (`Plan.fit_subset`:
at most `calibration.fit_images` images, chosen by a seeded hash of their ids) and, if it needs
them, the successful adversarials of those images; only that subset is ever held in memory.
The threshold comes from the clean scores of the whole fit part, streamed.

A detector that learns scores its own training images as cleaner than new ones, so a threshold
taken on them misses the target FPR on the test part (0.43 instead of 0.05 for Mahalanobis on
300 digits). The scores of its training subset are therefore cross-fitted: the subset is cut
into `calibration.folds` seeded folds and a copy fitted on all the others scores each fold; the
rest of the fit part is scored by the detector fitted on the whole subset, for which it is
unseen data too.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..errors import TracekitError
from ..layout import TableNames
from ..progress import progress
from ..protocols import Detector, LoadedModel, StatefulDetector
from .attacking import AttackRun, seed_everything
from .context import DetectorHandle
from .driver import Driver
from .metrics import calibrate_threshold
from .predicting import FIT
from .scoring import CleanImages, ScoreStage, score_images, score_into


def learns(detector: Detector) -> bool:
    """Whether `detector` learns from its fit images (a `StatefulDetector`)."""
    return isinstance(detector, StatefulDetector)


def adversarial_fit(runs: list[AttackRun], positions: np.ndarray, prefix: str) -> torch.Tensor:
    """Successful adversarials of the images at `positions`, from every attack of `runs`."""
    parts = [adv for run in runs for *_, adv in run.adversarials(run.pieces(run.successful(positions)))]
    if not parts:
        raise TracekitError(
            f"{prefix or 'detector: '}needs adversarial fit data, but no attack succeeded on a fit-part image; "
            "use stronger attacks or more images"
        )
    return torch.cat(parts)


def fit(
    driver: Driver, detector: Detector, model: LoadedModel, runs: list[AttackRun], prefix: str, select: np.ndarray
) -> None:
    """Fit on the subset's images where `select` (a mask over the plan's fit subset) holds. A
    detector that neither learns nor needs adversarial fit data (the paper's) gets an empty
    batch: reading the subset for it would only cost time and memory."""
    subset = driver.plan.fit_subset
    adversarial = adversarial_fit(runs, subset[select], prefix) if detector.needs_adversarial_fit else None
    seed = driver.context.spec.seed
    if not (learns(detector) or detector.needs_adversarial_fit):
        seed_everything(seed)
        detector.fit(model.module, torch.zeros(0, *model.input_size), adversarial)
        return
    clean = driver.fit_images()[torch.from_numpy(select)]
    n = len(clean) + (0 if adversarial is None else len(adversarial))
    # One step a user waits on (KD+BU: minutes on a CPU): a kept bar with its elapsed time.
    with progress(f"{prefix}fit detector", total=n, keep=True) as advance:
        seed_everything(seed)
        detector.fit(model.module, clean, adversarial)
        advance(n)


def fit_and_calibrate(
    driver: Driver,
    detector: Detector,
    cfg: Mapping[str, Any],
    variant: str,
    runs: list[AttackRun],
    tag: str,
    prefix: str,
) -> tuple[float, DetectorHandle]:
    """Fit `detector` to the model `variant` (trained or randomized), hand it to the executor's
    workers (as `tag`); return the threshold at the spec's target FPR of its clean fit-part
    scores, and the fitted detector's handle."""
    context, plan = driver.context, driver.plan
    model = context.model_for(variant)
    subset = plan.fit_subset
    everything = np.ones(len(subset), dtype=bool)
    held = _cross_fitted(driver, detector, model, runs, tag, prefix) if learns(detector) else np.zeros(0)
    fit(driver, detector, model, runs, prefix, everything)
    handle = driver.share(detector, cfg, tag, variant)
    fit_part = plan.clean.positions(FIT)
    rest = np.setdiff1d(fit_part, subset) if learns(detector) else fit_part
    streamed = score_into(driver.executor, ScoreStage(
        context.table(TableNames.scores(tag, "fit")), CleanImages(rest, context.spec.batch_size), handle,
        f"{prefix}score fit",
    ))["score"]  # fmt: skip
    scores = np.concatenate([held, streamed])
    target = context.spec.calibration.target_fpr
    if len(scores) * target < 1:
        warnings.warn(
            f"{prefix}the threshold for a {target:.0%} FPR comes from only {len(scores)} clean fit scores "
            f"(the highest one, in effect); use at least {math.ceil(1 / target)} "
            "(data.limit, calibration.fit_fraction)",
            stacklevel=2,
        )
    return calibrate_threshold(scores, target), handle


def _cross_fitted(
    driver: Driver, detector: Detector, model: LoadedModel, runs: list[AttackRun], tag: str, prefix: str
) -> np.ndarray:
    """Scores of the fit subset, each from a copy of the unfitted `detector` fitted on the other
    seeded folds (`calibration.folds` of them; kept in a table, so a resumed run does not fit the
    folds again)."""
    context, subset = driver.context, driver.plan.fit_subset
    table = context.table(TableNames.scores(tag, "fit-subset"))
    if table.exists():
        return table.read()["score"]
    n = len(subset)
    if n < 2:
        raise TracekitError(f"{prefix}a detector that learns needs at least 2 fit images to cross-fit its threshold")
    folds = min(context.spec.calibration.folds, n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(context.spec.seed)).numpy()
    fold_of = np.empty(n, dtype=np.int64)
    fold_of[order] = np.arange(n) * folds // n
    scores = np.zeros(n)
    for k in range(folds):
        held = fold_of == k
        copy_k = copy.deepcopy(detector)
        fit(driver, copy_k, model, runs, f"{prefix}fold {k + 1}/{folds}: ", ~held)
        images = driver.fit_images()[torch.from_numpy(held)]
        description = f"{prefix}score fold {k + 1}/{folds}"
        scores[held] = score_images(copy_k, model, images, context.spec.batch_size, context.device, description)
    table.write("folds", {"index": subset, "score": scores})
    return scores
