"""`tracekit.detect`: score single images with a finished run's model, detector and threshold.

`run` writes `detector.json` into the run directory (format, model, detector, calibrated
threshold, target FPR, device) and, for a detector that learns (`StatefulDetector`: LID,
Mahalanobis, KD+BU), `detector_state.pt` with what it learned; `compare` writes the same for
each of its detectors under `detectors/<NN>-<label>/`. `load_run` rebuilds the model and the
fitted detector from them. An image is flagged `adversarial` when its score is above the
threshold (as in calibration).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .bounded import read_json
from .compute import Compute
from .errors import TracekitError, did_you_mean
from .images import ImageInput, read_inputs
from .protocols import Detector, LoadedModel, StatefulDetector

BATCH_SIZE = 64
HOW_TO_FIX = "re-run its spec with `tracekit run` to write a current run directory"


@dataclass
class ScoringSetup:
    """A model and a detector ready to score images, with a threshold where one was calibrated."""

    model: LoadedModel
    detector: Detector
    device: torch.device
    threshold: float | None = None

    def evaluate(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(predicted class [N], softmax probabilities [N,K], scores [N] float64)` of `images`."""
        from .engine.predicting import predict
        from .engine.scoring import score_images

        preds, probs = predict(self.model.module, images, BATCH_SIZE, self.device, "predict")
        scores = score_images(self.detector, self.model, images, BATCH_SIZE, self.device, "score")
        return preds, probs, torch.from_numpy(scores)

    def results(self, inputs: list[ImageInput]) -> list[dict[str, Any]]:
        """One dict per input: image, pred, class, confidence, score, threshold, verdict, error."""
        readable = [item for item in inputs if item.image is not None]
        evaluated = iter([])
        if readable:
            preds, probs, scores = self.evaluate(torch.stack([item.image for item in readable]))
            evaluated = iter(zip(preds.tolist(), probs, scores.tolist()))
        out = []
        for item in inputs:
            row: dict[str, Any] = {"image": item.name, "pred": None, "class": None, "confidence": None,
                                   "score": None, "threshold": self.threshold, "verdict": None, "error": item.error}
            if item.image is not None:
                pred, prob, score = next(evaluated)
                row.update(pred=pred, confidence=float(prob[pred]), score=score)
                row["class"] = self.model.class_names[pred]
                if self.threshold is not None:
                    row["verdict"] = "adversarial" if score > self.threshold else "clean"
            out.append(row)
        return out


def build_setup(model_cfg: dict[str, Any], detector_cfg: dict[str, Any], device: torch.device,
                threshold: float | None = None, fitted: dict[str, Any] | None = None,
                compute: Compute | None = None) -> ScoringSetup:
    """Build the model and the detector of resolved component specs; `fitted`: the detector's
    learned state (`StatefulDetector.state_dict()`), which a detector that learns needs;
    `compute`: the run's compute settings (its model scores as it did in the run)."""
    from .compute import apply as apply_compute
    from .engine.context import build

    model: LoadedModel = build("model", model_cfg)
    model.module.to(device).eval()
    apply_compute(model.module, compute or Compute(), device)
    detector: Detector = build("detector", detector_cfg)
    if isinstance(detector, StatefulDetector) and fitted is not None:
        try:
            detector.load_state_dict(fitted)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise TracekitError(
                f"the fitted state of detector '{detector_cfg.get('name')}' does not fit it ({type(exc).__name__}: "
                f"{exc}); {HOW_TO_FIX}"
            ) from None
    elif isinstance(detector, StatefulDetector) or detector.needs_adversarial_fit:
        raise TracekitError(
            f"detector '{detector_cfg.get('name')}' learns from data, so it scores images only as fitted in a run; "
            "give a run directory (written by `tracekit run`) instead of a spec"
        )
    return ScoringSetup(model, detector, device, threshold)


def read_fitted(run_dir: Path, state: dict[str, Any], device: torch.device) -> dict[str, Any] | None:
    """The detector's learned state named by `detector.json` (None when it names none)."""
    name = state.get("state_file")
    if name is None:
        return None
    path = run_dir / str(name)
    if not isinstance(name, str) or path.name != name or not path.is_file():
        raise TracekitError(f"{run_dir}: the fitted detector {path.name} is missing (a broken run directory); {HOW_TO_FIX}")
    try:
        fitted = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a broken file
        raise TracekitError(f"{path}: cannot read the fitted detector ({type(exc).__name__}); {HOW_TO_FIX}") from None
    if not isinstance(fitted, dict):
        raise TracekitError(f"{path}: expected a dict of the fitted detector's state; {HOW_TO_FIX}")
    return fitted


def _label(state: dict[str, Any]) -> str:
    """A `detector.json`'s detector label (older runs recorded only the detector's spec)."""
    return str(state.get("label") or state["detector"].get("label") or state["detector"].get("name"))


def find_detector(run_dir: str | Path, detector: str | None = None) -> tuple[Path, dict[str, Any]]:
    """The directory whose `detector.json` to use, and that file read: a run's own, or its detector
    `detector` when `run_dir` is a comparison (`tracekit compare SPEC`), which keeps one per detector."""
    from .engine.rundir import DETECTORS_DIR

    path = Path(run_dir)
    if not path.exists():
        raise TracekitError(f"run directory {path} does not exist; give a directory written by `tracekit run`")
    if not path.is_dir():
        raise TracekitError(f"{path} is not a directory; give a run directory written by `tracekit run`")
    if (path / "detector.json").is_file():
        state = read_state(path)
        if detector not in (None, _label(state)):
            raise TracekitError(
                f"run directory {path} has one detector, '{_label(state)}'; leave out --detector (or give its label)"
            )
        return path, state
    compared = {}
    for state_file in sorted((path / DETECTORS_DIR).glob("*/detector.json")):
        state = read_state(state_file.parent)
        compared[_label(state)] = (state_file.parent, state)
    if not compared:
        return path, read_state(path)  # which says what is missing
    if detector is None:
        raise TracekitError(
            f"{path} is a comparison of {len(compared)} detectors; choose one with --detector LABEL "
            f"(one of: {', '.join(compared)})"
        )
    if detector not in compared:
        raise TracekitError(f"{path} has no detector '{detector}'{did_you_mean(detector, compared)}")
    return compared[detector]


def read_state(run_dir: str | Path) -> dict[str, Any]:
    """`detector.json` of `run_dir`, checked: format, model, detector and threshold."""
    from .engine.rundir import DETECTOR_FORMAT

    path = Path(run_dir)
    state_file = path / "detector.json"
    if not state_file.is_file():
        raise TracekitError(
            f"{path} has no detector.json: not a run directory, or one from an older tracekit; {HOW_TO_FIX}"
        )
    try:
        state = read_json(state_file, "detector.json")
    except TracekitError as exc:
        raise TracekitError(f"{exc} (a broken run directory); {HOW_TO_FIX}") from None
    if not isinstance(state, dict):
        raise TracekitError(f"{state_file}: expected a JSON object (a broken run directory); {HOW_TO_FIX}")
    if state.get("format") != DETECTOR_FORMAT:
        raise TracekitError(
            f"{state_file}: format {state.get('format')!r}, but this tracekit reads format {DETECTOR_FORMAT}; {HOW_TO_FIX}"
        )
    threshold = state.get("threshold")
    valid = (
        isinstance(state.get("model"), dict) and isinstance(state.get("detector"), dict)
        and isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and math.isfinite(threshold)
    )  # fmt: skip
    if not valid:
        raise TracekitError(
            f"{state_file}: needs 'model' and 'detector' objects and a finite 'threshold' (a broken run directory); "
            f"{HOW_TO_FIX}"
        )
    return state


def load_run(run_dir: str | Path, device: str | None = None, detector: str | None = None) -> ScoringSetup:
    """The model, fitted detector and calibrated threshold of a run directory (`device` overrides
    the run's); of a comparison's detector `detector` (its label) when `run_dir` is a comparison."""
    from .engine.device import resolve_device

    run_dir, state = find_detector(run_dir, detector)
    dev = resolve_device(device or str(state.get("device") or "auto"))
    fitted = read_fitted(run_dir, state, dev)
    try:
        compute = Compute.model_validate(state.get("compute") or {})
        setup = build_setup(state["model"], state["detector"], dev, float(state["threshold"]), fitted, compute)
    except TracekitError as exc:
        raise TracekitError(f"run directory {run_dir}: {exc}") from None
    expected = state.get("model_fingerprint")
    if expected:
        from .engine.attack_cache import model_fingerprint

        if model_fingerprint(setup.model.module) != expected:
            raise TracekitError(
                f"run directory {run_dir}: the model rebuilt from its spec is not the one the run used "
                "(its weights changed since); its threshold does not apply to this model"
            )
    return setup


def detect(
    run_dir: str | Path, images: Any, device: str | None = None, detector: str | None = None, threads: int | None = None
) -> list[dict[str, Any]]:
    """Score `images` (paths, PIL images, tensors/arrays `[C,H,W]` or `[N,C,H,W]` in [0, 1]) with a
    run's detector (a comparison's: the one labelled `detector`): one dict per image with `image`,
    `pred`, `class`, `confidence`, `score`, `threshold`, `verdict` (`adversarial` when score > threshold, else `clean`) and `error`
    (the reason an input could not be read, else None; its other values are then None). `threads`:
    torch's CPU threads (default auto, `tracekit.threads`)."""
    from .threads import applied, choose

    with applied(choose(override=threads).threads):
        setup = load_run(run_dir, device, detector)
        return setup.results(read_inputs(images, setup.model))
