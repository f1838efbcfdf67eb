"""`report.html`: one self-contained page per run or comparison (figures inlined as data URIs,
inline CSS, no scripts, no external requests). Rendered by Jinja2 with autoescaping on: every
string from the user (spec, labels, class names, sample ids, paths) is HTML-escaped."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine.metrics import FPR_LEVELS, MIN_PER_CLASS, headline_level
from ..layout import RunLayout
from . import verdicts

if TYPE_CHECKING:
    from jinja2 import Environment

    from ..spec import Spec
    from .rundata import RunData, RunsData

Column = tuple[str, str, str]  # (header, metrics.json key, number format); "a.b" = m["a"]["b"]
Group = tuple[str, list[Column]]  # columns under one spanning header

ROC_COLUMNS: list[Column] = [
    ("AUC", "auc", ".3f"),
    *[(f"TPR@{level:.0%} FPR", f"tpr_at_fpr.{level}", ".3f") for level in FPR_LEVELS],
]
SUCCESS_COLUMNS: list[Column] = [("successful", "n_attacked", "d"), ("success rate", "success_rate", ".1%")]
ATTACK_GROUPS: list[Group] = [
    ("adversarials (test part)", [
        ("clean images", "n_clean", "d"), *SUCCESS_COLUMNS,
        ("GT conf.", "gt_confidence", ".3f"), ("target conf.", "target_confidence", ".3f"),
    ]),
    ("mean perturbation", [("L2", "perturbation.l2", ".3g"), ("L∞", "perturbation.linf", ".3g")]),
    ("attack cost", [("seconds", "seconds", ".1f"), ("cached images", "cached_images", "d")]),
]  # fmt: skip
REALIZED_COLUMNS: list[Column] = [
    ("FPR", "fpr", ".3f"), ("precision", "precision", ".3f"), ("recall", "recall", ".3f"),
    ("evasion rate", "evasion_rate", ".1%"),
]  # fmt: skip
FAILED_GROUP: Group = (
    "failed adversarials",
    [("n", "failed.n", "d"), ("AUC", "failed.auc", ".3f"), ("flagged", "failed.flag_rate", ".1%")],
)
DETECTION_GROUPS: list[Group] = [
    ("ROC, test part", ROC_COLUMNS),
    ("calibrated threshold, test part", [("threshold", "threshold", ".4g"), *REALIZED_COLUMNS]),
    FAILED_GROUP,
]
COMPARE_DETAIL_GROUPS: list[Group] = [  # each detector's threshold is in the main table
    ("adversarials", SUCCESS_COLUMNS),
    ("ROC, test part", ROC_COLUMNS),
    ("at the calibrated threshold", REALIZED_COLUMNS),
    FAILED_GROUP,
]
NOISE_TITLES = {"sign": "sign noise, L∞ size", "gaussian": "Gaussian noise, L2 size"}


def fmt(value: Any, spec: str = "") -> str:
    """A number formatted by `spec`; None (undefined metric) as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, spec)
    return str(value)


def metric(metrics: Mapping[str, Any], dotted: str) -> Any:
    """`metrics["a"]["b"]` for `"a.b"` (the first dot only: FPR levels contain one)."""
    head, _, rest = dotted.partition(".")
    value = metrics.get(head)
    return value.get(rest) if rest and isinstance(value, Mapping) else value


def interval(metrics: Mapping[str, Any], dotted: str) -> list[float] | None:
    """The confidence interval of a metric (`auc` -> `auc_ci`, `tpr_at_fpr.0.05` ->
    `tpr_at_fpr_ci.0.05`); None where there is none."""
    head, dot, rest = dotted.partition(".")
    return metric(metrics, f"{head}_ci{dot}{rest}")


def data_uri(path: Path) -> str:
    """A PNG as a `data:` URI."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def figure(path: Path) -> dict[str, Any]:
    """A PNG for the page: its `uri` and its `width` in pixels (shown at most at that size)."""
    data = path.read_bytes()
    width = int.from_bytes(data[16:20], "big") if data[12:16] == b"IHDR" else None
    return {"uri": "data:image/png;base64," + base64.b64encode(data).decode("ascii"), "width": width}


def _plain(value: Any) -> str:
    """A provenance value as text (nested structures as compact JSON)."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def controls(per_attack: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any] | None:
    """One detector's controls for the page: the attacks with noise and with randomized-model
    numbers, the run-level randomized model (`layers`, `threshold`) and the transfer matrix;
    None where it ran none."""
    transfer = extra.get("transfer") or {}
    out = {
        "noise": {attack: m for attack, m in per_attack.items() if m.get("noise")},
        "randomized": {attack: m for attack, m in per_attack.items() if m.get("randomized_model")},
        "randomized_model": extra.get("randomized_model"),
        "transfer": transfer,
        "transfer_attacks": list(dict.fromkeys(t for row in transfer.values() for t in row)),
    }
    return out if out["noise"] or out["randomized"] or out["transfer"] else None


def few(entries: Mapping[str, Mapping[str, Any]], most: int = 8) -> list[str]:
    """The names of the entries (`{name: metrics}`) whose numbers rest on too few images to conclude
    from (`verdicts.small_sample`), at most `most` and then how many more."""
    marked = [name for name, m in entries.items() if verdicts.small_sample(m)]
    return marked if len(marked) <= most else [*marked[:most], f"{len(marked) - most} more"]


def _environment(headline: float) -> Environment:
    """Jinja with autoescaping; `headline`: the FPR level of the comparison table and the controls."""
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(
        loader=PackageLoader("tracekit.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = fmt
    env.globals.update(
        verdict_rules=verdicts.rules_text(),
        metric=metric,
        interval=interval,
        noise_titles=NOISE_TITLES,
        headline=str(headline),  # its key in `tpr_at_fpr`
        headline_pct=f"{headline:.0%}",
        small_sample=verdicts.small_sample,
        min_per_class=MIN_PER_CLASS,
        few_title=(
            f"fewer than {MIN_PER_CLASS} successful adversarials or clean test images: too few to conclude, "
            "whatever the interval"
        ),
    )
    return env


def shown_dir(run_dir: Path) -> str:
    """The run directory as the reader will find it: a report written while the run finishes sits in
    `.<name>.partial`, which becomes `<name>`."""
    name = run_dir.name
    if name.startswith(".") and name.endswith(".partial"):
        return str(run_dir.parent / name[1 : -len(".partial")])
    return str(run_dir)


def _page(template: str, spec: Spec, run_dir: Path, **context: Any) -> str:
    """Render `template` with what every page shows: name, spec, provenance, interval settings."""
    from ..spec import dump_spec

    provenance = dict(spec.provenance or {})
    versions = provenance.pop("versions", {}) or {}
    ev = spec.evaluation
    env = _environment(headline_level(spec.calibration.target_fpr))
    return env.get_template(template).render(
        name=spec.name,
        spec_yaml=dump_spec(spec.model_copy(update={"provenance": None})),
        versions={k: _plain(v) for k, v in versions.items()},
        provenance={k: _plain(v) for k, v in provenance.items()},
        run_dir=shown_dir(run_dir),
        intervals=f"{ev.confidence:.0%} bootstrap intervals ({ev.bootstrap} resamples)" if ev.bootstrap else None,
        **context,
    )


def render_report(run: RunData, figures: dict[str, Any]) -> str:
    """The report page of a finished run, with the PNGs of `figures` (from `write_figures`) inlined."""
    examples = [
        {**entry, "uri": data_uri(run.dir / entry["file"]), "examples": [asdict(e) for e in entry["examples"]]}
        for entry in figures.get("examples", [])
    ]
    target = float(run.metrics.get("target_fpr", run.spec.calibration.target_fpr))
    found = verdicts.verdicts(run.metrics["attacks"], target)
    return _page(
        "report.html.j2",
        run.spec,
        run.dir,
        verdicts=found,
        overall=verdicts.overall(found),
        problems=verdicts.calibration_problems(run.metrics["attacks"], target),
        metrics=run.metrics,
        few=few(run.metrics["attacks"]),
        attack_groups=ATTACK_GROUPS,
        detection_groups=DETECTION_GROUPS,
        controls=controls(run.metrics["attacks"], run.metrics),
        roc=figure(run.dir / figures["roc"]),
        hist=figure(run.dir / figures["score_hist"]),
        examples=examples,
    )


def adaptive_attack(run: RunData) -> str | None:
    """The label of a comparison's first detector-bound (adaptive) attack, as `attacks.json` says
    (None without one, or for a run directory written before attacks.json)."""
    from .rundata import read_attacks

    if not RunLayout(run.dir).attacks.is_file():
        return None
    return next((table.label for table in read_attacks(run.dir) if table.bound), None)


def _evasion_order(entry: dict[str, Any], attack: str) -> tuple[bool, float]:
    """Sort key: a detector's evasion rate under `attack`, those it could not attack (or without a
    rate) last, in their given order."""
    rate = (entry["attacks"].get(attack) or {}).get("evasion_rate")
    return (rate is None, rate if rate is not None else 0.0)


def render_compare_report(run: RunData, figures: dict[str, Any]) -> str:
    """The report page of a comparison, with the PNGs of `figures` (from `write_compare_figures`) inlined."""
    detectors = run.metrics["detectors"]
    attacks = list(dict.fromkeys(a for entry in detectors.values() for a in entry["attacks"]))
    adaptive = adaptive_attack(run)
    if adaptive is not None:  # the strongest defence first: the lowest evasion under the attacker who knows it
        detectors = dict(sorted(detectors.items(), key=lambda item: _evasion_order(item[1], adaptive)))
    by_attack = {
        attack: {label: entry["attacks"][attack] for label, entry in detectors.items() if attack in entry["attacks"]}
        for attack in attacks
    }
    per_detector = {label: controls(entry["attacks"], entry) for label, entry in detectors.items()}
    target = float(run.metrics.get("target_fpr", run.spec.calibration.target_fpr))
    problems = {label: verdicts.calibration_problems(entry["attacks"], target) for label, entry in detectors.items()}
    return _page(
        "compare.html.j2",
        run.spec,
        run.dir,
        summary=verdicts.compare_summary(by_attack),
        problems={label: found for label, found in problems.items() if found},
        metrics=run.metrics,
        few=few({f"{label} on {a}": m for label, entry in detectors.items() for a, m in entry["attacks"].items()}),
        no_adaptive=[(label, a) for label, entry in detectors.items() for a in entry.get("no_adaptive_attack") or {}],
        adaptive=adaptive,
        detectors=detectors,
        attacks=attacks,
        by_attack=by_attack,
        detail_groups=COMPARE_DETAIL_GROUPS,
        controls={label: c for label, c in per_detector.items() if c},
        heatmap=figure(run.dir / figures["heatmap"]),
        rocs=[{**entry, **figure(run.dir / entry["file"])} for entry in figures["rocs"]],
    )


def render_runs_report(runs: RunsData, figures: dict[str, Any]) -> str:
    """The report page of finished runs compared side by side (`tracekit compare RUN_DIR...`)."""
    from ..version import __version__

    document = runs.document
    detectors = document["detectors"]
    attacks = list(dict.fromkeys(a for per_attack in detectors.values() for a in per_attack))
    by_attack = {
        attack: {label: per_attack[attack] for label, per_attack in detectors.items() if attack in per_attack}
        for attack in attacks
    }
    info = document.get("runs") or {}
    problems = {
        label: verdicts.calibration_problems(
            per_attack, float((info.get(label) or {}).get("target_fpr") or document["target_fpr"])
        )
        for label, per_attack in detectors.items()
    }
    env = _environment(headline_level(float(document["target_fpr"])))
    return env.get_template("runs.html.j2").render(
        name="finished runs",
        run_dir=shown_dir(runs.dir),
        version=__version__,
        document=document,
        detectors=detectors,
        info=info,
        n_runs=len({r.get("run_dir") for r in info.values()}),
        attacks=attacks,
        by_attack=by_attack,
        summary=verdicts.compare_summary(by_attack),
        problems={label: found for label, found in problems.items() if found},
        few=few({f"{label} on {a}": m for label, per_attack in detectors.items() for a, m in per_attack.items()}),
        detail_groups=COMPARE_DETAIL_GROUPS,
        heatmap=figure(runs.dir / figures["heatmap"]),
        rocs=[{**entry, **figure(runs.dir / entry["file"])} for entry in figures["rocs"]],
        intervals=any(m.get("auc_ci") for per_attack in detectors.values() for m in per_attack.values()),
    )


def write_report(run_dir: str | Path, examples: int = 4) -> Path:
    """Figures and `report.html` of a finished run or comparison (or of finished runs compared side
    by side), rebuilt from its directory alone."""
    from .figures import write_compare_figures, write_figures, write_runs_figures
    from .rundata import is_runs_comparison, read_run, read_runs_comparison

    if is_runs_comparison(run_dir):
        runs = read_runs_comparison(run_dir)
        path = RunLayout(runs.dir).report
        path.write_text(render_runs_report(runs, write_runs_figures(runs)), encoding="utf-8")
        return path
    run = read_run(run_dir)
    if run.is_comparison:
        page = render_compare_report(run, write_compare_figures(run))
    else:
        page = render_report(run, write_figures(run, examples))
    path = RunLayout(run.dir).report
    path.write_text(page, encoding="utf-8")
    return path
