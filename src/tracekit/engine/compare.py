"""`tracekit compare`: several detectors on identical images, or finished runs side by side.

A comparison spec lists `detectors:`; the attacks are generated once (cached) and shared, every
detector is fitted on the same fit part and scored on the same test images and adversarials.
Each fitted detector is kept under `detectors/<NN>-<label>/` (as a run keeps its one), so
`tracekit detect --run DIR --detector LABEL` scores new images with it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any


from ..errors import SpecError, TracekitError
from ..layout import RUNS_COMPARISON, SCRATCH, RunLayout, TableNames
from ..readback import read_document, read_spec, score_rows
from ..spec import Calibration, Spec, component_label
from ..threads import applied
from . import rundir
from .context import build
from .driver import prepare
from .evaluating import evaluate
from .rundir import RunDir
from .run import Finish, as_spec, data_summary, record_provenance, start
from .summary import SCORE_COLUMNS, write_scores

if TYPE_CHECKING:
    import torch

    from ..executing import Executor

COMPARE_COLUMNS = ("detector", *SCORE_COLUMNS)
DEFAULT_TARGET_FPR = Calibration().target_fpr


@dataclass
class CompareResult:
    """A comparison's run directory, metrics keyed by detector then attack, and its spec."""

    out_dir: Path
    metrics: dict[str, Any]
    spec: Spec


def compare(
    spec: Spec | str | Path | Mapping[str, Any],
    out: str | Path | None = None,
    device: str | None = None,
    use_cache: bool = True,
    finish: Finish | None = None,
    threads: int | None = None,
) -> CompareResult:
    """Fit and score every detector of the spec on the same images; write the run directory,
    then `finish(run_dir)` (the report). `threads` (torch's CPU threads) overrides the spec's."""
    spec = as_spec(spec)
    if not spec.detectors:
        raise SpecError("`tracekit compare` needs a spec with `detectors:` (a list); this one has a single `detector:`")
    spec, dev, executor, target = start(spec, out, device, threads)
    with target, applied(int(spec.threads)):  # the run directory stays locked until the comparison has ended
        return _compare(spec, dev, executor, target, use_cache, finish)


def _compare(
    spec: Spec, dev: torch.device, executor: Executor, target: RunDir, use_cache: bool, finish: Finish | None
) -> CompareResult:
    assert spec.detectors is not None
    work = target.work
    started = time.perf_counter()
    labels = [spec.detector_key(i) for i in range(len(spec.detectors))]
    per_detector: dict[str, Any] = {}
    rows: list[tuple[Any, ...]] = []
    runs: dict[str, list[Any]] = {}  # each detector's attack runs, by tag
    try:
        detectors = [build("detector", cfg) for cfg in spec.detectors]
        driver = prepare(spec, dev, work, use_cache, detectors, executor)
        layout = RunLayout(work)
        for index, (label, detector) in enumerate(zip(labels, detectors)):
            t0 = time.perf_counter()
            ev = evaluate(driver, detector, spec.detectors[index], TableNames.detector(index), label)
            # kept for `tracekit detect --run DIR --detector LABEL`
            directory = layout.detector_dir(index, label)
            rundir.write_detector(directory, spec, spec.detectors[index], ev.threshold, driver.context, detector)
            per_detector[label] = {
                "name": spec.detectors[index]["name"],
                "attacks": ev.per_attack,
                "threshold": ev.threshold,
                "needs_adversarial_fit": bool(detector.needs_adversarial_fit),
                **ev.extra,
                "seconds": time.perf_counter() - t0,
            }
            rows += [(label, *row) for row in ev.rows(driver.plan.clean)]
            runs[TableNames.detector(index)] = ev.runs
    finally:
        executor.close()
    metrics = {
        "detectors": per_detector,
        "data": data_summary(driver),
        "target_fpr": spec.calibration.target_fpr,
        "seconds": time.perf_counter() - started,
    }
    record_provenance(driver)
    rundir.write_resolved_spec(layout, spec)
    rundir.write_metrics(layout, metrics)
    write_scores(layout.scores, rows, COMPARE_COLUMNS)
    rundir.write_attacks(layout, spec, runs)
    if finish is not None:
        finish(work)
    target.finish(SCRATCH)
    return CompareResult(target.final, metrics, spec)


@dataclass
class RunsComparison:
    """Finished runs side by side: `{label: {attack: metrics}}` and what differs between them;
    per label (`"<run directory name>: <detector>"`) its run (`runs`: `run_dir`, `detector`,
    `threshold`, `target_fpr`) and its `scores.csv` rows (`rows`: the columns of `SCORE_COLUMNS`)."""

    detectors: dict[str, dict[str, Any]]
    warnings: list[str]
    target_fpr: float  # the first run's calibration target
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    def runs_dirs(self) -> list[str]:
        """The compared run directories, each once, in order."""
        return list(dict.fromkeys(str(run["run_dir"]) for run in self.runs.values()))


def compare_runs(run_dirs: list[str | Path]) -> RunsComparison:
    """Read finished runs (or comparisons); warn when their test images or attacks differ."""
    detectors: dict[str, dict[str, Any]] = {}
    images: dict[str, set[str]] = {}
    attacks: dict[str, set[str]] = {}
    targets: dict[str, float] = {}
    adversarials: dict[str, Outcomes] = {}
    runs: dict[str, str] = {}  # detector key -> its run directory's name
    parameters: dict[str, dict[str, Any]] = {}  # detector key -> attack -> its resolved parameters
    info: dict[str, dict[str, Any]] = {}
    score_rows: dict[str, list[dict[str, str]]] = {}
    for raw in run_dirs:
        path = Path(raw)
        metrics, spec, clean_ids, outcomes, rows = _read_run(path)
        try:
            entries = (
                metrics["detectors"] if "detectors" in metrics
                else {_detector_label(spec): {"attacks": metrics["attacks"], "threshold": metrics.get("threshold")}}
            )  # fmt: skip
            for label, entry in entries.items():
                key = f"{path.name}: {label}"
                detectors[key] = dict(entry["attacks"])
                images[key] = clean_ids.get(label, clean_ids.get("", set()))
                attacks[key] = set(entry["attacks"])
                adversarials[key] = outcomes.get(label, outcomes.get("", {}))
                runs[key] = path.name
                targets[key] = float(metrics.get("target_fpr", DEFAULT_TARGET_FPR))
                info[key] = {
                    "run_dir": str(path),
                    "detector": label,
                    "threshold": entry.get("threshold"),
                    "target_fpr": targets[key],
                }
                score_rows[key] = rows.get(label, rows.get("", []))
                parameters[key] = {
                    component_label(a): {k: v for k, v in a.items() if k != "label"}
                    for a in (spec or {}).get("attacks") or []
                }
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise TracekitError(
                f"{path} holds a broken metrics.json or spec.resolved.yaml ({type(exc).__name__}: {exc}); run it again"
            ) from None
    warnings = []
    keys = list(detectors)
    for key in keys[1:]:
        if images[key] != images[keys[0]]:
            warnings.append(
                f"'{key}' was tested on different clean images than '{keys[0]}' "
                f"({len(images[key] ^ images[keys[0]])} ids differ): its numbers are not directly comparable"
            )
        if attacks[key] != attacks[keys[0]]:
            warnings.append(f"'{key}' has attacks {sorted(attacks[key])}, '{keys[0]}' has {sorted(attacks[keys[0]])}")
        differ = sorted(
            attack for attack in set(adversarials[key]) & set(adversarials[keys[0]])
            if adversarials[key][attack] != adversarials[keys[0]][attack]
        )  # fmt: skip
        changed = _parameter_changes(parameters[keys[0]], parameters[key])
        if changed:
            message = (
                f"runs '{runs[keys[0]]}' and '{runs[key]}' ran attacks of the same name differently: "
                + "; ".join(changed)
            )
            if message not in warnings:
                warnings.append(message)
        if differ and images[key] == images[keys[0]] and not changed:
            message = (
                f"runs '{runs[key]}' and '{runs[keys[0]]}' attacked the same images but got other adversarials "
                f"from {', '.join(differ)} (other parameters or seeds, or a random attack run in other batches): "
                "not directly comparable"
            )
            if message not in warnings:  # once per pair of runs, not per detector of a comparison
                warnings.append(message)
        if targets[key] != targets[keys[0]]:
            warnings.append(
                f"'{key}' calibrated its threshold at {targets[key]:.1%} FPR, '{keys[0]}' at {targets[keys[0]]:.1%}"
            )
    return RunsComparison(detectors, warnings, targets[keys[0]] if keys else DEFAULT_TARGET_FPR, info, score_rows)


def open_runs_comparison(run_dirs: Sequence[str | Path], out: str | Path | None = None) -> RunDir:
    """The directory a comparison of `run_dirs` will be written to (`out`, else
    `runs/compare-runs-<timestamp>/`), checked and locked before any run is read
    (`rundir.open_run_dir`; close it when done): `--out` may be neither one of the compared runs
    nor a directory that holds one, which the comparison would replace (exit 2, one line)."""
    if out is not None:
        target = Path(out).resolve()
        for raw in run_dirs:
            run_dir = Path(raw).resolve()
            if run_dir == target or target in run_dir.parents:
                what = "is" if run_dir == target else "holds"
                raise TracekitError(
                    f"--out {out} {what} the run directory {raw} being compared, which the comparison would "
                    "replace; choose another --out"
                )
    return rundir.open_run_dir(out, "compare-runs", marker=RUNS_COMPARISON)


def write_runs_comparison(
    comparison: RunsComparison,
    out: str | Path | None = None,
    finish: Finish | None = None,
    into: RunDir | None = None,
) -> Path:
    """Write a comparison of finished runs into its own directory (`into`, from
    `open_runs_comparison`, which the caller closes; else `out`, else
    `runs/compare-runs-<timestamp>/`): `comparison.json` (the side-by-side metrics, the runs and the
    warnings) and `scores.csv` (every compared detector's rows, labelled as in the comparison), then
    `finish(directory)` (the report); returns the directory."""
    if into is None:
        with open_runs_comparison(list(comparison.runs_dirs()), out) as target:
            return write_runs_comparison(comparison, finish=finish, into=target)
    document = {
        "detectors": comparison.detectors,
        "runs": comparison.runs,
        "warnings": comparison.warnings,
        "target_fpr": comparison.target_fpr,
    }
    layout = RunLayout(into.work)
    layout.runs_comparison.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    rows = (
        (key, *(row.get(column, "") for column in SCORE_COLUMNS))
        for key, mine in comparison.rows.items()
        for row in mine
    )
    write_scores(layout.scores, rows, COMPARE_COLUMNS)
    if finish is not None:
        finish(into.work)
    into.finish()
    return into.final


def _parameter_changes(first: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """`attack: eps 0.1 vs 0.3` for every attack both runs have but ran with other parameters."""
    changes = []
    for attack in sorted(set(first) & set(other)):
        a, b = first[attack], other[attack]
        differ = [
            f"{name} {a.get(name)!r} vs {b.get(name)!r}"
            for name in sorted(set(a) | set(b))
            if a.get(name) != b.get(name)
        ]
        if differ:
            changes.append(f"{attack}: " + ", ".join(differ))
    return changes


Outcomes = dict[str, set[tuple[str, str, str]]]  # attack -> {(sample id, prediction, success)}


def _read_run(
    path: Path,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, set[str]], dict[str, Outcomes], dict[str, list[dict[str, str]]]]:
    """A finished run's metrics and spec, and per detector label ("" for a run) its clean test ids,
    what each attack's adversarials of them did, and its `scores.csv` rows."""
    if path.is_file():
        raise TracekitError(
            f"{path} is a file, not a run directory; compare takes one spec, or finished run directories"
        )
    if not path.is_dir():
        raise TracekitError(f"run directory {path} does not exist")
    try:
        layout = RunLayout(path)
        metrics = read_document(layout.metrics)
        spec = read_spec(path).model_dump(exclude_none=True)
        columns = COMPARE_COLUMNS if "detectors" in metrics else SCORE_COLUMNS
        rows = list(score_rows(layout.scores, columns))
    except FileNotFoundError as exc:
        raise TracekitError(f"{path} is not a finished tracekit run: {Path(exc.filename).name} is missing") from None
    clean_ids: dict[str, set[str]] = {}
    outcomes: dict[str, Outcomes] = {}
    by_label: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        label = row.get("detector", "")
        by_label.setdefault(label, []).append(row)
        if row.get("attack") == "clean":
            clean_ids.setdefault(label, set()).add(row["sample_id"])
        else:
            outcomes.setdefault(label, {}).setdefault(row["attack"], set()).add(
                (row["sample_id"], row["pred"], row["success"])
            )
    return metrics, spec, clean_ids, outcomes, by_label


def _detector_label(spec: Any) -> str:
    detector = (spec or {}).get("detector") or {}
    return str(detector.get("label") or detector.get("name") or "detector")
