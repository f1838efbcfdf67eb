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
from .metrics import calibrate_threshold, detection_metrics


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


def run(
    spec: Spec | str | Path | Mapping[str, Any],
    out: str | Path | None = None,
    device: str | None = None,
    use_cache: bool = True,
) -> RunResult:
    """Run the detection spec; write `spec.resolved.yaml`, `metrics.json` and `scores.csv`.

    `use_cache=False` recomputes every attack and leaves the attack cache untouched.
    """
    spec = as_spec(spec)
    if device is not None:
        spec = validate_spec({**spec.model_dump(exclude_none=True), "device": device}, source="--device")
    if spec.detector is None:
        from ..errors import SpecError

        raise SpecError("this spec lists `detectors:`; run it with `tracekit compare`, or give one `detector:`")
    dev = resolve_device(spec.device)
    run_dir = rundir.make_run_dir(out, spec.name)
    seed_everything(spec.seed)
    started = time.perf_counter()

    model = load_model(spec, dev)
    dataset = build("dataset", spec.data)
    samples = collect(dataset, model)
    clean_preds, clean_probs = predict(model.module, samples.images, spec.batch_size, dev, "predict clean")
    correct = torch.nonzero(clean_preds == samples.labels).flatten()
    fit_idx, test_idx = split_fit_test(correct, spec.calibration.fit_fraction, spec.seed)

    detector: Detector = build("detector", spec.detector)
    attacked = torch.cat([fit_idx, test_idx]).sort().values if detector.needs_adversarial_fit else test_idx
    attacks = attack_all(spec, model, samples, attacked, dev, use_cache)

    adversarial_fit = None
    if detector.needs_adversarial_fit:
        in_fit = torch.isin(attacked, fit_idx)
        adversarial_fit = torch.cat([a.adversarial[in_fit & a.success] for a in attacks])
    detector.fit(model.module, samples.images[fit_idx], adversarial_fit)
    fit_scores = score_images(detector, model, samples.images[fit_idx], spec.batch_size, dev, "score fit")
    threshold = calibrate_threshold(fit_scores, spec.calibration.target_fpr)
    test_scores = score_images(detector, model, samples.images[test_idx], spec.batch_size, dev, "score clean test")

    rows = [
        _row(samples.ids[i], "clean", samples.labels[i], clean_preds[i], "", s)
        for i, s in zip(test_idx.tolist(), test_scores)
    ]
    per_attack: dict[str, Any] = {}
    for result in attacks:
        in_test = torch.isin(result.indices, test_idx)
        adv_scores = score_images(
            detector, model, result.adversarial[in_test], spec.batch_size, dev, f"score {result.key}"
        )
        success = result.success[in_test]
        rows += [
            _row(samples.ids[i], result.key, samples.labels[i], p, int(ok), s)
            for i, p, ok, s in zip(result.indices[in_test].tolist(), result.preds[in_test], success.tolist(), adv_scores)
        ]
        per_attack[result.key] = _attack_metrics(result, in_test, test_scores, adv_scores, threshold)

    metrics = {
        "attacks": per_attack,
        "data": {
            "n_images": len(samples),
            "n_correct": len(correct),
            "clean_accuracy": len(correct) / len(samples),
            "n_fit": len(fit_idx),
            "n_test": len(test_idx),
        },
        "threshold": threshold,
        "target_fpr": spec.calibration.target_fpr,
        "seconds": time.perf_counter() - started,
    }
    dists = {registry(kind).get(cfg["name"]).source for kind, cfg in _components(spec)}
    spec.provenance = rundir.provenance(
        spec, dev, dists, {"model": model.info, "data": getattr(dataset, "info", {})}
    )
    rundir.write_resolved_spec(run_dir, spec)
    rundir.write_metrics(run_dir, metrics)
    rundir.write_scores(run_dir, rows)
    rundir.write_detector(run_dir, spec, threshold)
    artifacts = RunArtifacts(
        model, samples, clean_preds, clean_probs, fit_idx, test_idx, attacks, detector, threshold, dev
    )
    result = RunResult(run_dir, metrics, spec, rows, artifacts)
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
    result: AttackResult, in_test: torch.Tensor, clean_scores: np.ndarray, adv_scores: np.ndarray, threshold: float
) -> dict[str, Any]:
    """DESIGN.md's per-attack metrics on the test part; only successful adversarials count."""
    ok = result.success[in_test]
    labels, preds, probs = result.labels[in_test][ok], result.preds[in_test][ok], result.probs[in_test][ok]
    n_success, n_attacked_images = int(ok.sum()), int(in_test.sum())
    out: dict[str, Any] = {
        "n_clean": len(clean_scores),
        "n_attacked": n_success,
        "success_rate": n_success / n_attacked_images if n_attacked_images else None,
        "gt_confidence": float(probs.gather(1, labels[:, None]).mean()) if n_success else None,
        "target_confidence": float(probs.gather(1, preds[:, None]).mean()) if n_success else None,
    }
    out.update(detection_metrics(clean_scores, adv_scores[ok.numpy()], threshold))
    out["seconds"] = result.generated.seconds
    out["cached_batches"] = result.generated.cached_batches
    return out
