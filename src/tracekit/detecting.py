"""`tracekit.detect`: score single images with a finished run's model, detector and threshold.

`run` writes `detector.json` into the run directory (format, model, detector, calibrated
threshold, target FPR, device) and, for a detector that learns (`StatefulDetector`: LID,
Mahalanobis, KD+BU), `detector_state.pt` with what it learned; `compare` writes the same for
each of its detectors under `detectors/<NN>-<label>/`. `load_run` rebuilds the fitted detector
and the run context (`tracekit.engine.context.build_context`, as a run and its workers build it)
from them. An image is flagged `adversarial` when its score is above the threshold (as in
calibration).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pydantic import ValidationError

from .compute import Compute
from .errors import TracekitError, did_you_mean
from .images import ImageInput, Preparation, read_inputs
from .layout import DETECTOR, DETECTOR_FORMAT, DETECTORS, RunLayout
from .readback import DetectorState, describe, read_document
from .protocols import Detector, LoadedModel, ModelChecked, StatefulDetector
from .spec import Spec

if TYPE_CHECKING:
    from .engine.context import RunContext

BATCH_SIZE = 64
HOW_TO_FIX = "re-run its spec with `tracekit run` to write a current run directory"


@dataclass
class ScoringSetup:
    """A run context (its model) and a detector ready to score images, with a threshold where one
    was calibrated."""

    context: RunContext
    detector: Detector
    detector_cfg: dict[str, Any]  # its resolved spec
    threshold: float | None = None
    preparation: Preparation | None = None  # how image files become inputs: the run's, else the model's own

    def inputs(self, images: Any) -> list[ImageInput]:
        """`images` (paths, PIL images, tensors, arrays) read for this model as its run read files."""
        return read_inputs(images, self.model, self.preparation)

    @property
    def model(self) -> LoadedModel:
        return self.context.model

    @property
    def device(self) -> torch.device:
        return self.context.device

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
            row: dict[str, Any] = {
                "image": item.name,
                "pred": None,
                "class": None,
                "confidence": None,
                "score": None,
                "threshold": self.threshold,
                "verdict": None,
                "error": item.error,
            }
            if item.image is not None:
                pred, prob, score = next(evaluated)
                row.update(pred=pred, confidence=float(prob[pred]), score=score)
                row["class"] = self.model.class_names[pred]
                if self.threshold is not None:
                    row["verdict"] = "adversarial" if score > self.threshold else "clean"
            out.append(row)
        return out


def scoring_spec(
    model_cfg: dict[str, Any], detector_cfg: dict[str, Any], compute: Compute | None = None, device: str = "auto"
) -> Spec:
    """The spec of scoring single images with a model and a detector (resolved component specs,
    checked again when they are built): no data and no attacks, which scoring never builds."""
    return Spec.model_construct(
        name="detect",
        model=model_cfg,
        data={},
        attacks=[],
        detector=detector_cfg,
        compute=compute or Compute(),
        device=device,
    )


def build_setup(
    spec: Spec,
    detector_cfg: dict[str, Any],
    device: torch.device,
    threshold: float | None = None,
    fitted: dict[str, Any] | None = None,
) -> ScoringSetup:
    """The run context of `spec` (its model, as `compute:` says) and the detector of
    `detector_cfg`; `fitted`: the detector's learned state (`StatefulDetector.state_dict()`),
    which a detector that learns needs."""
    from .engine.context import build, build_context
    from .plugins import registry

    context = build_context(spec, device)
    detector_cfg = registry("detector").resolve(detector_cfg, "detector")
    detector: Detector = build("detector", detector_cfg)
    if isinstance(detector, ModelChecked):
        try:
            detector.check_model(context.model)
        except TracekitError as exc:
            raise TracekitError(
                f"detector '{detector_cfg['name']}' cannot work with model '{spec.model['name']}': {exc}"
            ) from None
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
    return ScoringSetup(context, detector, detector_cfg, threshold)


def read_fitted(run_dir: Path, state: dict[str, Any], device: torch.device) -> dict[str, Any] | None:
    """The detector's learned state named by `detector.json` (None when it names none)."""
    name = state.get("state_file")
    if name is None:
        return None
    path = run_dir / str(name)
    if not isinstance(name, str) or path.name != name or not path.is_file():
        raise TracekitError(
            f"{run_dir}: the fitted detector {path.name} is missing (a broken run directory); {HOW_TO_FIX}"
        )
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
    path = Path(run_dir)
    if not path.exists():
        raise TracekitError(f"run directory {path} does not exist; give a directory written by `tracekit run`")
    if not path.is_dir():
        raise TracekitError(f"{path} is not a directory; give a run directory written by `tracekit run`")
    if RunLayout(path).detector.is_file():
        state = read_state(path)
        if detector not in (None, _label(state)):
            raise TracekitError(
                f"run directory {path} has one detector, '{_label(state)}'; leave out --detector (or give its label)"
            )
        return path, state
    compared = {}
    for state_file in sorted((path / DETECTORS).glob(f"*/{DETECTOR}")):
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
    """`detector.json` of `run_dir`, checked (`tracekit.readback.DetectorState`): format, model,
    detector, a finite threshold and a valid `compute` block."""
    path = Path(run_dir)
    state_file = RunLayout(path).detector
    if not state_file.is_file():
        raise TracekitError(
            f"{path} has no detector.json: not a run directory, or one from an older tracekit; {HOW_TO_FIX}"
        )
    state = read_document(state_file, DetectorState, DETECTOR_FORMAT)
    try:
        Compute.model_validate(state.get("compute") or {})
    except ValidationError as exc:
        raise TracekitError(f"{state_file}: compute block: {describe(exc)}; {HOW_TO_FIX}") from None
    return state


def code_named(model_cfg: Any) -> str | None:
    """The Python callable a model spec imports to build its module (`checkpoint` with
    `source: python`), else None."""
    if isinstance(model_cfg, dict) and model_cfg.get("name") == "checkpoint" and model_cfg.get("source") == "python":
        return str(model_cfg.get("arch"))
    return None


def require_trust(model_cfg: Any, run_dir: Path, trust_code: bool) -> None:
    """Refuse to build a run directory's model whose module Python code builds, unless the user
    trusts the directory (importing a module runs its code; run directories are shared)."""
    code = code_named(model_cfg)
    if code is not None and not trust_code:
        raise TracekitError(
            f"run directory {run_dir}: its model is built by Python code ({code}), which is imported only when you "
            "trust the run directory: add --trust-code (trust_code=True), with that code installed"
        )


def load_run(
    run_dir: str | Path, device: str | None = None, detector: str | None = None, trust_code: bool = False
) -> ScoringSetup:
    """The model, fitted detector and calibrated threshold of a run directory (`device` overrides
    the run's); of a comparison's detector `detector` (its label) when `run_dir` is a comparison.
    A run directory is something people share: the Python code its model names is imported only
    with `trust_code`."""
    from .engine.device import resolve_device

    run_dir, state = find_detector(run_dir, detector)
    require_trust(state.get("model"), run_dir, trust_code)
    dev = resolve_device(device or str(state.get("device") or "auto"))
    fitted = read_fitted(run_dir, state, dev)
    try:
        compute = Compute.model_validate(state.get("compute") or {})
        spec = scoring_spec(state["model"], state["detector"], compute)
        setup = build_setup(spec, state["detector"], dev, float(state["threshold"]), fitted)
    except TracekitError as exc:
        raise TracekitError(f"run directory {run_dir}: {exc}") from None
    if "preparation" in state:  # older run directories have none: files are read as the model now says
        try:
            setup.preparation = Preparation.from_record(state["preparation"], setup.model)
        except TracekitError as exc:
            detector_json = RunLayout(run_dir).detector
            raise TracekitError(f"{detector_json}: {exc} (a broken run directory); {HOW_TO_FIX}") from None
    expected = state.get("model_fingerprint")
    if expected:
        if setup.context.fingerprint != expected:
            raise TracekitError(
                f"run directory {run_dir}: the model rebuilt from its spec is not the one the run used "
                "(its weights changed since); its threshold does not apply to this model"
            )
    return setup


def detect(
    run_dir: str | Path,
    images: Any,
    device: str | None = None,
    detector: str | None = None,
    threads: int | None = None,
    trust_code: bool = False,
) -> list[dict[str, Any]]:
    """Score `images` (paths, PIL images, tensors/arrays `[C,H,W]` or `[N,C,H,W]` in [0, 1]) with a
    run's detector (a comparison's: the one labelled `detector`): one dict per image with `image`,
    `pred`, `class`, `confidence`, `score`, `threshold`, `verdict` (`adversarial` when score > threshold,
    else `clean`) and `error`
    (the reason an input could not be read, else None; its other values are then None). `threads`:
    torch's CPU threads (default auto, `tracekit.threads`). `trust_code`: import the Python code the
    run's model names (`checkpoint` with `source: python`); only for run directories you trust."""
    from .threads import applied, choose

    with applied(choose(override=threads).threads):
        setup = load_run(run_dir, device, detector, trust_code)
        return setup.results(setup.inputs(images))
