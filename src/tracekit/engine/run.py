"""`tracekit.engine.run`: model and data -> clean predictions -> attacks -> detector -> calibration
-> metrics, streamed over chunks of images through per-sample tables in the run directory.

The stages live in their own modules (reading, predicting, attacking, scoring, fitting,
evaluating, summary); this one composes them and writes the run directory. A run works in a
temporary directory beside its final one and replaces it only when everything, report included
(`finish`, a callable the API passes: the engine never imports the report), has succeeded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import SpecError
from ..executing import Executor
from ..layout import SCRATCH, RunLayout, TableNames
from ..plugins import registry
from ..protocols import Detector
from ..spec import Spec, load_spec, validate_spec
from ..threads import applied
from . import rundir
from .context import build
from .device import resolve_device
from .driver import Driver, prepare
from .evaluating import evaluate
from .predicting import FIT, TEST, skipped_items
from .summary import save_examples, write_scores

Finish = Callable[[Path], Any]


@dataclass
class RunResult:
    """What `run` produced: the run directory, the metrics and the resolved spec."""

    out_dir: Path
    metrics: dict[str, Any]
    spec: Spec


def as_spec(spec: Spec | str | Path | Mapping[str, Any]) -> Spec:
    """Accept a `Spec`, a path to a YAML spec, or a plain dict."""
    if isinstance(spec, Spec):
        return spec
    if isinstance(spec, Mapping):
        return validate_spec(spec, source="spec")
    return load_spec(spec)


def start(
    spec: Spec | str | Path | Mapping[str, Any], out: str | Path | None, device: str | None, threads: int | None = None
) -> tuple[Spec, torch.device, Executor, rundir.RunDir]:
    """Validate the spec (with a `--device` override), check the device, choose the CPU threads
    (`threads` overrides the spec's; applied by the caller), lock and make the run's directory
    (`rundir.open_run_dir`: the caller closes it when the run has ended, however it ended),
    build the executor."""
    spec = as_spec(spec)
    if device is not None:
        spec = validate_spec({**spec.model_dump(exclude_none=True), "device": device}, source="--device")
    spec.choose_threads(threads)
    dev = resolve_device(spec.device)
    target = rundir.open_run_dir(out, spec.name)
    try:
        executor: Executor = build("executor", spec.executor)
        executor.open()  # an unreachable cluster fails here, before any work
    except BaseException:
        target.close()
        raise
    return spec, dev, executor, target


def data_summary(driver: Driver) -> dict[str, Any]:
    part = driver.plan.clean.part
    n_images, n_correct = len(part), int((part != "").sum())
    return {
        "n_images": n_images,
        "n_correct": n_correct,
        "clean_accuracy": n_correct / n_images,
        "n_fit": int((part == FIT).sum()),
        "n_test": int((part == TEST).sum()),
        "n_fit_subset": len(driver.plan.fit_subset),
    }


def record_provenance(driver: Driver) -> None:
    context = driver.context
    spec = context.spec
    dists = {registry(kind).get(cfg["name"]).source for kind, cfg in _components(spec)}
    data = dict(context.dataset.info)
    skipped = skipped_items(context.table(TableNames.SKIPPED))
    if skipped:
        data["skipped"] = skipped
    spec.provenance = rundir.provenance(
        spec,
        context.device,
        dists,
        {
            "model": context.model.info,
            "data": data,
            "num_workers": context.reader.num_workers,
            "threads": spec.threads_chosen,
            "executor": driver.executor.info,
        },
    )


def run(
    spec: Spec | str | Path | Mapping[str, Any],
    out: str | Path | None = None,
    device: str | None = None,
    use_cache: bool = True,
    finish: Finish | None = None,
    threads: int | None = None,
) -> RunResult:
    """Run the detection spec; write `spec.resolved.yaml`, `metrics.json`, `scores.csv`,
    `detector.json` and the per-sample tables, then `finish(run_dir)` (the report).

    `use_cache=False` recomputes every attack and leaves the attack cache untouched. `threads`
    (torch's CPU threads) overrides the spec's `threads:`; the previous count is restored after.
    """
    spec = as_spec(spec)
    if spec.detector is None:
        raise SpecError("this spec lists `detectors:`; run it with `tracekit compare`, or give one `detector:`")
    spec, dev, executor, target = start(spec, out, device, threads)
    with target, applied(int(spec.threads)):  # the run directory stays locked until the run has ended
        return _run(spec, dev, executor, target, use_cache, finish)


def _run(
    spec: Spec, dev: torch.device, executor: Executor, target: rundir.RunDir, use_cache: bool, finish: Finish | None
) -> RunResult:
    started = time.perf_counter()
    work = target.work
    try:
        detector: Detector = build("detector", spec.detector)
        driver = prepare(spec, dev, work, use_cache, [detector], executor)
        ev = evaluate(driver, detector, spec.detector, TableNames.detector(0))
    finally:
        executor.close()
    metrics = {
        "attacks": ev.per_attack,
        "data": data_summary(driver),
        "threshold": ev.threshold,
        "target_fpr": spec.calibration.target_fpr,
        **ev.extra,
        "seconds": time.perf_counter() - started,
    }
    record_provenance(driver)
    layout = RunLayout(work)
    rundir.write_resolved_spec(layout, spec)
    rundir.write_metrics(layout, metrics)
    write_scores(layout.scores, ev.rows(driver.plan.clean))
    rundir.write_detector(layout.root, spec, spec.detector, ev.threshold, driver.context, detector)
    save_examples(layout.examples, driver, ev.runs, detector, spec.detector)
    rundir.write_attacks(layout, spec, {TableNames.detector(0): ev.runs})
    if finish is not None:
        finish(work)
    target.finish(SCRATCH)
    return RunResult(target.final, metrics, spec)


def _components(spec: Spec) -> list[tuple[str, Mapping[str, Any]]]:
    parts: list[tuple[str, Mapping[str, Any]]] = [
        ("model", spec.model),
        ("dataset", spec.data),
        ("executor", spec.executor),
    ]
    parts += [("attack", a) for a in spec.attacks]
    for detector in [spec.detector] if spec.detector else (spec.detectors or []):
        parts.append(("detector", detector))
        parts += [(kind, detector[kind]) for kind in ("saliency", "score") if isinstance(detector.get(kind), Mapping)]
    return parts
