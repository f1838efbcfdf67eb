"""`tracekit.run`: model and data -> attacks -> detector -> calibration -> metrics and files.

The engine only knows kinds: every component is built from the spec through its registry.
Splits follow DESIGN.md: correctly classified clean images are shuffled (seeded) into a fit
part (threshold calibration, learned detectors) and a test part (ROC and realized metrics);
fit images are attacked only when the detector needs adversarial fit data.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import SpecError, TracekitError
from ..plugins import registry
from ..progress import progress
from ..protocols import Detector, LoadedModel, StatefulDetector
from ..report import write_report
from ..spec import Spec, load_spec, validate_spec
from . import rundir
from .attack_cache import AttackCache, code_version, model_fingerprint
from .attacking import Generated, generate, seed_everything
from .controls import noise_like, noise_metrics, randomized_copy
from .data import Samples, collect, predict, split_fit_test
from .device import resolve_device
from .metrics import bootstrap_ci, calibrate_threshold, detection_metrics, roc_auc


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


def screen_attacks(spec: Spec, model: LoadedModel) -> list[int]:
    """Check every attack against the model before any work starts (an attack's optional
    `check(input_size)`), and return the indices of the detector-bound (adaptive) attacks, which
    target a fitted, calibrated detector and so run after calibration."""
    bound = []
    for i, cfg in enumerate(spec.attacks):
        attack = build("attack", cfg)
        check = getattr(attack, "check", None)
        if check is not None:
            try:
                check(tuple(model.input_size))
            except TracekitError as exc:
                raise TracekitError(f"{spec.source}: attacks.{i}: {exc}") from None
        if getattr(attack, "needs_detector", False):
            bound.append(i)
    return bound


def run_attack(
    spec: Spec,
    index: int,
    model: LoadedModel,
    fingerprint: str,
    samples: Samples,
    indices: torch.Tensor,
    device: torch.device,
    use_cache: bool,
    bind: tuple[Detector, dict[str, Any], float] | None = None,
) -> AttackResult:
    """Attack `spec.attacks[index]` on the images at `indices` (all correctly classified), cached
    under the model's `fingerprint`.

    `bind` = (detector, its spec, threshold) for adaptive attacks; it becomes part of the cache key.
    """
    cfg, key = spec.attacks[index], spec.attack_key(index)
    ids = [samples.ids[i] for i in indices.tolist()]
    images, labels = samples.images[indices], samples.labels[indices]
    attack = build("attack", cfg)
    # A label only names results: relabelling an attack reuses its cached adversarials.
    cache_key = {**{k: v for k, v in cfg.items() if k != "label"}, "code": code_version(attack)}
    if bind is not None:
        detector, detector_cfg, threshold = bind
        attack.bind(detector, threshold)
        cache_key.update(detector=detector_cfg, threshold=threshold)
    cache = AttackCache(fingerprint, cache_key, spec.seed, enabled=use_cache)
    generated = generate(
        attack, model.module, ids, images, labels, spec.batch_size, device, spec.seed, cache, f"attack {key}"
    )
    return AttackResult(key, indices, labels, generated)


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
    attacks: list[AttackResult]  # attacks that need no detector, on the attacked images
    fingerprint: str  # of the model weights: keys the attack cache, recorded in detector.json
    bound: list[int]  # indices of the spec's detector-bound (adaptive) attacks
    use_cache: bool = True


@dataclass
class Evaluation:
    """One detector fitted on the fit part and scored on the test part."""

    detector: Detector
    threshold: float
    per_attack: dict[str, Any]
    rows: list[dict[str, Any]]
    attacks: list[AttackResult]  # every attack, detector-bound (adaptive) ones included
    extra: dict[str, Any] = field(default_factory=dict)  # controls beyond per-attack numbers


def prepare(spec: Spec, device: torch.device, use_cache: bool, adversarial_fit: bool) -> Prepared:
    """Load model and data, split clean images, run (or load cached) attacks."""
    seed_everything(spec.seed)
    model = load_model(spec, device)
    bound = screen_attacks(spec, model)
    dataset = build("dataset", spec.data)
    samples = collect(dataset, model)
    clean_preds, clean_probs = predict(model.module, samples.images, spec.batch_size, device, "predict clean")
    correct = torch.nonzero(clean_preds == samples.labels).flatten()
    fit_idx, test_idx = split_fit_test(correct, spec.calibration.fit_fraction, spec.seed)
    attacked = torch.cat([fit_idx, test_idx]).sort().values if adversarial_fit else test_idx
    fingerprint = model_fingerprint(model.module)
    attacks = [
        run_attack(spec, i, model, fingerprint, samples, attacked, device, use_cache)
        for i in range(len(spec.attacks))
        if i not in bound
    ]
    return Prepared(
        spec, device, model, dataset, samples, clean_preds, clean_probs, correct, fit_idx, test_idx, attacks,
        fingerprint, bound, use_cache,
    )


def _adversarial_fit(prep: Prepared, attacks: list[AttackResult], prefix: str, fit_idx: torch.Tensor) -> torch.Tensor:
    """Successful adversarials of the images `fit_idx` (for detectors that learn from them)."""
    parts = [a.adversarial[torch.isin(a.indices, fit_idx) & a.success] for a in attacks]
    adversarial_fit = torch.cat(parts) if parts else prep.samples.images[:0]
    if len(adversarial_fit) == 0:
        raise TracekitError(
            f"{prefix or 'detector: '}needs adversarial fit data, but no attack succeeded on a fit-part image; "
            "use stronger attacks or more images"
        )
    return adversarial_fit


def learns(detector: Detector) -> bool:
    """Whether `detector` learns from its fit images (a `StatefulDetector`)."""
    return isinstance(detector, StatefulDetector)


def _fit(
    prep: Prepared, detector: Detector, model: LoadedModel, attacks: list[AttackResult], prefix: str,
    fit_idx: torch.Tensor,
) -> None:
    """Fit on the clean images `fit_idx` (and their successful adversarials, if it needs them)."""
    adversarial_fit = _adversarial_fit(prep, attacks, prefix, fit_idx) if detector.needs_adversarial_fit else None
    detector.fit(model.module, prep.samples.images[fit_idx], adversarial_fit)


def _fit_and_calibrate(
    prep: Prepared, detector: Detector, model: LoadedModel, attacks: list[AttackResult], prefix: str
) -> float:
    """Fit on the fit part; return the threshold at the spec's target FPR of clean fit scores.

    A detector that learns scores its own training images as cleaner than new ones, so a threshold
    taken on them misses the target FPR on the test part (0.43 instead of 0.05 for Mahalanobis on
    300 digits). Its clean fit scores are therefore cross-fitted: a copy fitted on each seeded half
    of the fit part scores the other half, and the detector itself is then fitted on all of it.
    """
    bs, dev, images = prep.spec.batch_size, prep.device, prep.samples.images
    scores = _cross_fitted_scores(prep, detector, model, attacks, prefix) if learns(detector) else None
    _fit(prep, detector, model, attacks, prefix, prep.fit_idx)
    if scores is None:
        scores = score_images(detector, model, images[prep.fit_idx], bs, dev, f"{prefix}score fit")
    target = prep.spec.calibration.target_fpr
    if len(scores) * target < 1:
        warnings.warn(
            f"{prefix}the threshold for a {target:.0%} FPR comes from only {len(scores)} clean fit scores "
            f"(the highest one, in effect); use at least {math.ceil(1 / target)} (data.limit, calibration.fit_fraction)",
            stacklevel=2,
        )
    return calibrate_threshold(scores, target)


def _cross_fitted_scores(
    prep: Prepared, detector: Detector, model: LoadedModel, attacks: list[AttackResult], prefix: str
) -> np.ndarray:
    """Clean fit scores, each from a copy of the unfitted `detector` fitted on the other seeded half."""
    halves = split_fit_test(prep.fit_idx, 0.5, prep.spec.seed)
    held_out = []
    for k, (train, held) in enumerate((halves, halves[::-1])):
        fold = copy.deepcopy(detector)
        _fit(prep, fold, model, attacks, f"{prefix}fold {k + 1}: ", train)
        held_out.append(
            score_images(fold, model, prep.samples.images[held], prep.spec.batch_size, prep.device, f"{prefix}score fold {k + 1}")
        )
    return np.concatenate(held_out)


def evaluate(prep: Prepared, detector: Detector, detector_cfg: Mapping[str, Any], label: str = "") -> Evaluation:
    """Fit `detector` (clean fit images, and adversarials of fit images if it needs them),
    calibrate its threshold on the clean fit part, run the adaptive attacks against it, score
    the test part and every attack, and run the spec's controls."""
    spec, samples, model, dev, bs = prep.spec, prep.samples, prep.model, prep.device, prep.spec.batch_size
    prefix = f"{label}: " if label else ""

    def score(images: torch.Tensor, what: str, on: LoadedModel = model, det: Detector = detector) -> np.ndarray:
        return score_images(det, on, images, bs, dev, f"{prefix}score {what}")

    threshold = _fit_and_calibrate(prep, detector, model, prep.attacks, prefix)
    test_scores = score(samples.images[prep.test_idx], "clean test")
    rows = [
        _row(samples.ids[i], "clean", samples.labels[i], prep.clean_preds[i], "", s)
        for i, s in zip(prep.test_idx.tolist(), test_scores)
    ]
    adaptive = [
        run_attack(
            spec, i, model, prep.fingerprint, samples, prep.test_idx, dev, prep.use_cache,
            (detector, dict(detector_cfg), threshold),
        )
        for i in prep.bound
    ]
    order = {spec.attack_key(i): i for i in range(len(spec.attacks))}
    attacks = sorted(prep.attacks + adaptive, key=lambda r: order[r.key])
    per_attack: dict[str, Any] = {}
    for result in attacks:
        in_test = torch.isin(result.indices, prep.test_idx)
        adv_scores = score(result.adversarial[in_test], result.key)
        success = result.success[in_test]
        rows += [
            _row(samples.ids[i], result.key, samples.labels[i], p, int(ok), s)
            for i, p, ok, s in zip(result.indices[in_test].tolist(), result.preds[in_test], success.tolist(), adv_scores)
        ]
        l2, linf = result.perturbation(samples.images[result.indices])
        m = _attack_metrics(result, in_test, test_scores, adv_scores, threshold, (l2[in_test], linf[in_test]), spec)
        if "noise" in spec.controls:
            noisy = noise_like(samples.images[result.indices[in_test]], l2[in_test], linf[in_test], spec.seed)
            m["noise"] = noise_metrics(
                test_scores, noisy, threshold, lambda x, kind, key=result.key: score(x, f"{key} {kind} noise"),
                lambda x: predict(model.module, x, bs, dev, f"{prefix}predict {result.key} noise")[0],
                result.labels[in_test],
            )
        per_attack[result.key] = m
    extra: dict[str, Any] = {}
    if "randomized-model" in spec.controls:
        extra["randomized_model"] = _randomized_model(prep, detector_cfg, attacks, per_attack, prefix)
    if detector.needs_adversarial_fit and spec.evaluation.transfer and len(prep.attacks) > 1:
        extra["transfer"] = _transfer(prep, detector_cfg, prefix)
    return Evaluation(detector, threshold, per_attack, rows, attacks, extra)


def _randomized_model(
    prep: Prepared, detector_cfg: Mapping[str, Any], attacks: list[AttackResult], per_attack: dict[str, Any], prefix: str
) -> dict[str, Any]:
    """Fit, calibrate and score a fresh detector on a cascading-randomized copy of the model;
    each attack's AUC goes beside the real one (`per_attack[key]["randomized_model"]`)."""
    module, layers = randomized_copy(prep.model.module, prep.spec.seed)
    model = dataclasses.replace(prep.model, module=module)
    detector: Detector = build("detector", detector_cfg)
    prefix = f"{prefix}randomized model: "
    threshold = _fit_and_calibrate(prep, detector, model, prep.attacks, prefix)
    bs, dev = prep.spec.batch_size, prep.device
    clean = score_images(detector, model, prep.samples.images[prep.test_idx], bs, dev, f"{prefix}score clean test")
    for result in attacks:
        keep = torch.isin(result.indices, prep.test_idx) & result.success
        adv = score_images(detector, model, result.adversarial[keep], bs, dev, f"{prefix}score {result.key}")
        m = detection_metrics(clean, adv, threshold)
        per_attack[result.key]["randomized_model"] = {"auc": m["auc"], "tpr_at_fpr": m["tpr_at_fpr"]}
    return {"layers": layers, "threshold": threshold}


def _transfer(prep: Prepared, detector_cfg: Mapping[str, Any], prefix: str) -> dict[str, dict[str, float | None]]:
    """AUC of a learned detector fitted on one attack's adversarials and tested on each attack's."""
    bs, dev, model = prep.spec.batch_size, prep.device, prep.model
    matrix: dict[str, dict[str, float | None]] = {}
    for source in prep.attacks:
        detector: Detector = build("detector", detector_cfg)
        here = f"{prefix}fit on {source.key}: "
        try:
            _fit(prep, detector, model, [source], here, prep.fit_idx)  # AUC only: no threshold needed
        except TracekitError:
            matrix[source.key] = {target.key: None for target in prep.attacks}  # no fit adversarials
            continue
        clean = score_images(detector, model, prep.samples.images[prep.test_idx], bs, dev, f"{here}score clean test")
        matrix[source.key] = {}
        for target in prep.attacks:
            keep = torch.isin(target.indices, prep.test_idx) & target.success
            adv = score_images(detector, model, target.adversarial[keep], bs, dev, f"{here}score {target.key}")
            matrix[source.key][target.key] = roc_auc(clean, adv)
    return matrix


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
    ev = evaluate(prep, detector, spec.detector)
    metrics = {
        "attacks": ev.per_attack,
        "data": data_summary(prep),
        "threshold": ev.threshold,
        "target_fpr": spec.calibration.target_fpr,
        **ev.extra,
        "seconds": time.perf_counter() - started,
    }
    record_provenance(prep)
    rundir.write_resolved_spec(run_dir, spec)
    rundir.write_metrics(run_dir, metrics)
    rundir.write_scores(run_dir, ev.rows)
    rundir.write_detector(run_dir, spec, spec.detector, ev.threshold, prep.fingerprint, detector)
    artifacts = RunArtifacts(
        prep.model, prep.samples, prep.clean_preds, prep.clean_probs, prep.fit_idx, prep.test_idx,
        ev.attacks, detector, ev.threshold, dev,
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
    out["evasion_rate"] = (
        float(np.mean(ok_np & (adv_scores <= threshold))) if n_attacked_images else None
    )  # prediction changed AND not flagged: success against model and detector together
    failed = adv_scores[~ok_np]
    out["failed"] = {
        "n": int(len(failed)),
        "auc": detection_metrics(clean_scores, failed, threshold)["auc"],
        "flag_rate": float(np.mean(failed > threshold)) if len(failed) else None,
    }
    out["seconds"] = result.generated.seconds
    out["cached_batches"] = result.generated.cached_batches
    return out
