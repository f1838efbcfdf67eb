"""`report.html`: one self-contained page per run (figures inlined as data URIs, inline CSS,
no scripts, no external requests). Rendered by Jinja2 with autoescaping on: every string from
the user (spec, labels, class names, sample ids, paths) is HTML-escaped."""

from __future__ import annotations

import base64
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..engine.metrics import FPR_LEVELS

# (column header, metrics.json key, number format); tpr_at_fpr is expanded per FPR level.
METRIC_COLUMNS = [
    ("clean", "n_clean", "d"),
    ("attacked", "n_attacked", "d"),
    ("success rate", "success_rate", ".1%"),
    ("GT conf.", "gt_confidence", ".3f"),
    ("target conf.", "target_confidence", ".3f"),
    ("AUC", "auc", ".3f"),
    *[(f"TPR@{level:.0%} FPR", f"tpr_at_fpr.{level}", ".3f") for level in FPR_LEVELS],
    ("threshold", "threshold", ".4g"),
    ("FPR", "fpr", ".3f"),
    ("precision", "precision", ".3f"),
    ("recall", "recall", ".3f"),
    ("seconds", "seconds", ".1f"),
]


def fmt(value: Any, spec: str = "") -> str:
    """A number formatted by `spec`; None (undefined metric) as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, spec)
    return str(value)


def metric(metrics: dict[str, Any], dotted: str) -> Any:
    """`metrics["a"]["b"]` for `"a.b"` (the first dot only: FPR levels contain one)."""
    head, _, rest = dotted.partition(".")
    value = metrics.get(head)
    return value.get(rest) if rest and isinstance(value, dict) else value


def data_uri(path: Path) -> str:
    """A PNG as a `data:` URI."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _plain(value: Any) -> str:
    """A provenance value as text (nested structures as compact JSON)."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def render_report(result: Any, run_dir: Path, figures: dict[str, Any]) -> str:
    """The report page of a finished run, with the PNGs of `figures` (from `write_figures`) inlined."""
    from jinja2 import Environment, PackageLoader, StrictUndefined

    from ..spec import dump_spec

    env = Environment(
        loader=PackageLoader("tracekit.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = fmt
    env.globals["metric"] = metric
    provenance = dict(result.spec.provenance or {})
    versions = provenance.pop("versions", {}) or {}
    examples = [
        {**entry, "uri": data_uri(run_dir / entry["file"]), "examples": [asdict(e) for e in entry["examples"]]}
        for entry in figures.get("examples", [])
    ]
    return env.get_template("report.html.j2").render(
        name=result.spec.name,
        spec_yaml=dump_spec(result.spec.model_copy(update={"provenance": None})),
        metrics=result.metrics,
        columns=METRIC_COLUMNS,
        versions={k: _plain(v) for k, v in versions.items()},
        provenance={k: _plain(v) for k, v in provenance.items()},
        roc_uri=data_uri(run_dir / figures["roc"]),
        hist_uri=data_uri(run_dir / figures["score_hist"]),
        examples=examples,
        run_dir=str(run_dir),
    )


def write_report(run_dir: Path, result: Any, examples: int = 4) -> Path:
    """Figures and `report.html` of a finished run (`RunResult` with artifacts) in `run_dir`."""
    from .figures import write_figures

    run_dir = Path(run_dir)
    figures = write_figures(run_dir, result, examples)
    path = run_dir / "report.html"
    path.write_text(render_report(result, run_dir, figures), encoding="utf-8")
    return path
