"""`tracekit.run`: model and data -> attacks -> detector -> calibration -> metrics and files.

The engine only knows kinds: every component is built from the spec through its registry.
Splits follow DESIGN.md: correctly classified clean images are shuffled (seeded) into a fit
part (threshold calibration, learned detectors) and a test part (ROC and realized metrics);
fit images are attacked only when the detector needs adversarial fit data.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import SpecError, TracekitError
from ..plugins import registry
from ..progress import progress
from ..protocols import Detector, LoadedModel
from ..report import write_report
from ..spec import Spec, load_spec, validate_spec
from . import rundir
from .attack_cache import AttackCache, model_fingerprint
from .attacking import Generated, generate, seed_everything
from .data import Samples, collect, predict, split_fit_test
from .device import resolve_device
from .metrics import bootstrap_ci, calibrate_threshold, detection_metrics


@dataclass
class AttackResult:
    """One attack's adversarials of the attacked images and their predictions."""

    key: str
    indices: torch.Tensor  # into the dataset's samples
    labels: torch.Tensor
    generated: Generated

    @property
    def adversarial(self) -> torch.Tensor:
        return self.generated.adversarial

    @property
    def preds(self) -> torch.Tensor:
        return self.generated.preds

    @property
    def probs(self) -> torch.Tensor:
        return self.generated.probs

    @property
    def success(self) -> torch.Tensor:
        """The prediction changed (originals were all correctly classified)."""
        return self.preds != self.labels

    def perturbation(self, originals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image L2 and L-inf norms of `adversarial - originals`."""
        delta = (self.adversarial - originals).flatten(1)
        return delta.norm(dim=1), delta.abs().amax(dim=1)


@dataclass
class RunArtifacts:
    """Everything a run computed, in memory, for figures and reports."""

    model: LoadedModel
    samples: Samples
    clean_preds: torch.Tensor
    clean_probs: torch.Tensor
    fit_idx: torch.Tensor
    test_idx: torch.Tensor
    attacks: list[AttackResult]
    detector: Detector
    threshold: float
    device: torch.device


@dataclass
class RunResult:
    """What `run` produced: the run directory, the metrics and the resolved spec."""

    out_dir: Path
    metrics: dict[str, Any]
    spec: Spec
    scores: list[dict[str, Any]] = field(repr=False, default_factory=list)
    artifacts: RunArtifacts | None = field(repr=False, default=None)


def as_spec(spec: Spec | str | Path | Mapping[str, Any]) -> Spec:
    """Accept a `Spec`, a path to a YAML spec, or a plain dict."""
    if isinstance(spec, Spec):
        return spec
    if isinstance(spec, Mapping):
        return validate_spec(spec, source="spec")
    return load_spec(spec)


def build(kind: str, cfg: Mapping[str, Any]) -> Any:
    """Build a resolved component spec through its registry."""
    params = {k: v for k, v in cfg.items() if k not in ("name", "label")}
    return registry(kind).create(str(cfg["name"]), **params)


def load_model(spec: Spec, device: torch.device) -> LoadedModel:
    model: LoadedModel = build("model", spec.model)
    model.module.to(device).eval()
    return model


def attack_all(
    spec: Spec, model: LoadedModel, samples: Samples, indices: torch.Tensor, device: torch.device, use_cache: bool = True
) -> list[AttackResult]:
    """Every attack of the spec on the images at `indices` (all correctly classified), cached."""
    results = []
    ids = [samples.ids[i] for i in indices.tolist()]
    images, labels = samples.images[indices], samples.labels[indices]
    fingerprint = model_fingerprint(model.module)
    for i, cfg in enumerate(spec.attacks):
        key = spec.attack_key(i)
        cache = AttackCache(fingerprint, dict(cfg), spec.seed, enabled=use_cache)
        attack = build("attack", cfg)
        generated = generate(
            attack, model.module, ids, images, labels, spec.batch_size, device, spec.seed, cache, f"attack {key}"
        )
        if cache.corrupt:
            from ..progress import console

            console.print(f"[yellow]warning:[/] {cache.corrupt} corrupt cache entr(y/ies) of {key} recomputed")
        results.append(AttackResult(key, indices, labels, generated))
    return results


def score_images(
    detector: Detector, model: LoadedModel, images: torch.Tensor, batch_size: int, device: torch.device, description: str
) -> np.ndarray:
    """Detector scores of `images`, one device batch at a time."""
    out = []
    with progress(description, total=len(images)) as advance:
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size].to(device)
            out.append(detector.score(model.module, batch).detach().double().cpu())
            advance(len(batch))
    return torch.cat(out).numpy() if out else np.zeros(0)


@dataclass
class Prepared:
    """The shared part of a run or a comparison: model, data, honest split, attacks."""

    spec: Spec
    device: torch.device
    model: LoadedModel
    dataset: Any
    samples: Samples
    clean_preds: torch.Tensor
    clean_probs: torch.Tensor
    correct: torch.Tensor
    fit_idx: torch.Tensor
    test_idx: torch.Tensor
    attacks: list[AttackResult]


@dataclass
class Evaluation:
    """One detector fitted on the fit part and scored on the test part."""

    detector: Detector
    threshold: float
    per_attack: dict[str, Any]
    rows: list[dict[str, Any]]


def prepare(spec: Spec, device: torch.device, use_cache: bool, adversarial_fit: bool) -> Prepared:
    """Load model and data, split clean images, run (or load cached) attacks."""
    seed_everything(spec.seed)
    model = load_model(spec, device)
    dataset = build("dataset", spec.data)
    samples = collect(dataset, model)
    clean_preds, clean_probs = predict(model.module, samples.images, spec.batch_size, device, "predict clean")
    correct = torch.nonzero(clean_preds == samples.labels).flatten()
    fit_idx, test_idx = split_fit_test(correct, spec.calibration.fit_fraction, spec.seed)
    attacked = torch.cat([fit_idx, test_idx]).sort().values if adversarial_fit else test_idx
    attacks = attack_all(spec, model, samples, attacked, device, use_cache)
    return Prepared(spec, device, model, dataset, samples, clean_preds, clean_probs, correct, fit_idx, test_idx, attacks)


def evaluate(prep: Prepared, detector: Detector, label: str = "") -> Evaluation:
    """Fit `detector` (clean fit images, and adversarials of fit images if it needs them),
    calibrate its threshold on the clean fit part, score the test part and every attack."""
    spec, samples, model, dev, bs = prep.spec, prep.samples, prep.model, prep.device, prep.spec.batch_size
    prefix = f"{label}: " if label else ""
    adversarial_fit = None
    if detector.needs_adversarial_fit:
        parts = [a.adversarial[torch.isin(a.indices, prep.fit_idx) & a.success] for a in prep.attacks]
        adversarial_fit = torch.cat(parts)
        if len(adversarial_fit) == 0:
            raise TracekitError(
                f"{prefix or 'detector: '}needs adversarial fit data, but no attack succeeded on a fit-part image; "
                "use stronger attacks or more images"
            )
    detector.fit(model.module, samples.images[prep.fit_idx], adversarial_fit)
    fit_scores = score_images(detector, model, samples.images[prep.fit_idx], bs, dev, f"{prefix}score fit")
    threshold = calibrate_threshold(fit_scores, spec.calibration.target_fpr)
    test_scores = score_images(detector, model, samples.images[prep.test_idx], bs, dev, f"{prefix}score clean test")
    rows = [
        _row(samples.ids[i], "clean", samples.labels[i], prep.clean_preds[i], "", s)
        for i, s in zip(prep.test_idx.tolist(), test_scores)
    ]
    per_attack: dict[str, Any] = {}
    for result in prep.attacks:
        in_test = torch.isin(result.indices, prep.test_idx)
        adv_scores = score_images(detector, model, result.adversarial[in_test], bs, dev, f"{prefix}score {result.key}")
        success = result.success[in_test]
        rows += [
            _row(samples.ids[i], result.key, samples.labels[i], p, int(ok), s)
            for i, p, ok, s in zip(result.indices[in_test].tolist(), result.preds[in_test], success.tolist(), adv_scores)
        ]
        l2, linf = result.perturbation(samples.images[result.indices])
        per_attack[result.key] = _attack_metrics(
            result, in_test, test_scores, adv_scores, threshold, (l2[in_test], linf[in_test]), spec
        )
    return Evaluation(detector, threshold, per_attack, rows)


def data_summary(prep: Prepared) -> dict[str, Any]:
    return {
        "n_images": len(prep.samples),
        "n_correct": len(prep.correct),
        "clean_accuracy": len(prep.correct) / len(prep.samples),
        "n_fit": len(prep.fit_idx),
        "n_test": len(prep.test_idx),
    }


def start(
    spec: Spec | str | Path | Mapping[str, Any], out: str | Path | None, device: str | None
) -> tuple[Spec, torch.device, Path]:
    """Validate the spec (with a `--device` override), check the device, make the run directory."""
    spec = as_spec(spec)
    if device is not None:
        spec = validate_spec({**spec.model_dump(exclude_none=True), "device": device}, source="--device")
    dev = resolve_device(spec.device)
    return spec, dev, rundir.make_run_dir(out, spec.name)


def record_provenance(prep: Prepared) -> None:
    spec = prep.spec
    dists = {registry(kind).get(cfg["name"]).source for kind, cfg in _components(spec)}
    spec.provenance = rundir.provenance(
        spec, prep.device, dists, {"model": prep.model.info, "data": getattr(prep.dataset, "info", {})}
    )


def run(
    spec: Spec | str | Path | Mapping[str, Any],
    out: str | Path | None = None,
    device: str | None = None,
    use_cache: bool = True,
) -> RunResult:
    """Run the detection spec; write `spec.resolved.yaml`, `metrics.json`, `scores.csv`,
    `detector.json`, figures and `report.html`.

    `use_cache=False` recomputes every attack and leaves the attack cache untouched.
    """
    spec = as_spec(spec)
    if spec.detector is None:
        raise SpecError("this spec lists `detectors:`; run it with `tracekit compare`, or give one `detector:`")
    spec, dev, run_dir = start(spec, out, device)
    started = time.perf_counter()
    detector: Detector = build("detector", spec.detector)
    prep = prepare(spec, dev, use_cache, detector.needs_adversarial_fit)
    ev = evaluate(prep, detector)
    metrics = {
        "attacks": ev.per_attack,
        "data": data_summary(prep),
        "threshold": ev.threshold,
        "target_fpr": spec.calibration.target_fpr,
        "seconds": time.perf_counter() - started,
    }
    record_provenance(prep)
    rundir.write_resolved_spec(run_dir, spec)
    rundir.write_metrics(run_dir, metrics)
    rundir.write_scores(run_dir, ev.rows)
    rundir.write_detector(run_dir, spec, ev.threshold, model_fingerprint(prep.model.module))
    artifacts = RunArtifacts(
        prep.model, prep.samples, prep.clean_preds, prep.clean_probs, prep.fit_idx, prep.test_idx,
        prep.attacks, detector, ev.threshold, dev,
    )
    result = RunResult(run_dir, metrics, spec, ev.rows, artifacts)
    write_report(run_dir, result)  # figures and report.html (tracekit.report)
    return result


def _components(spec: Spec) -> list[tuple[str, Mapping[str, Any]]]:
    parts: list[tuple[str, Mapping[str, Any]]] = [("model", spec.model), ("dataset", spec.data)]
    parts += [("attack", a) for a in spec.attacks]
    for detector in [spec.detector] if spec.detector else (spec.detectors or []):
        parts.append(("detector", detector))
        parts += [(kind, detector[kind]) for kind in ("saliency", "score") if isinstance(detector.get(kind), Mapping)]
    return parts


def _row(sample_id: str, attack: str, label: Any, pred: Any, success: Any, score: float) -> dict[str, Any]:
    return {
        "sample_id": sample_id,
        "attack": attack,
        "label": int(label),
        "pred": int(pred),
        "success": success,
        "score": repr(float(score)),
    }


def _attack_metrics(
    result: AttackResult,
    in_test: torch.Tensor,
    clean_scores: np.ndarray,
    adv_scores: np.ndarray,
    threshold: float,
    norms: tuple[torch.Tensor, torch.Tensor],
    spec: Spec,
) -> dict[str, Any]:
    """DESIGN.md's per-attack metrics on the test part (only successful adversarials count),
    plus bootstrap intervals, perturbation sizes and the failed adversarials' numbers."""
    ok = result.success[in_test]
    labels, preds, probs = result.labels[in_test][ok], result.preds[in_test][ok], result.probs[in_test][ok]
    n_success, n_attacked_images = int(ok.sum()), int(in_test.sum())
    ok_np = ok.numpy()
    out: dict[str, Any] = {
        "n_clean": len(clean_scores),
        "n_attacked": n_success,
        "success_rate": n_success / n_attacked_images if n_attacked_images else None,
        "gt_confidence": float(probs.gather(1, labels[:, None]).mean()) if n_success else None,
        "target_confidence": float(probs.gather(1, preds[:, None]).mean()) if n_success else None,
    }
    out.update(detection_metrics(clean_scores, adv_scores[ok_np], threshold))
    out.update(
        bootstrap_ci(
            clean_scores, adv_scores[ok_np], spec.evaluation.bootstrap, spec.evaluation.confidence, spec.seed
        )
    )
    l2, linf = norms
    out["perturbation"] = {
        "l2": float(l2[ok].mean()) if n_success else None,
        "linf": float(linf[ok].mean()) if n_success else None,
    }
    failed = adv_scores[~ok_np]
    out["failed"] = {
        "n": int(len(failed)),
        "auc": detection_metrics(clean_scores, failed, threshold)["auc"],
        "flag_rate": float(np.mean(failed > threshold)) if len(failed) else None,
    }
    out["seconds"] = result.generated.seconds
    out["cached_batches"] = result.generated.cached_batches
    return out
