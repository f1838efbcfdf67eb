"""`tracekit run SPEC`: one detection run, with progress bars and a summary table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from .. import progress
from .. import run as run_engine
from ..spec import load_spec
from .common import console, fmt, handle_errors

SpecArg = typer.Argument(..., metavar="SPEC", help="YAML spec file (see examples/quickstart.yaml).", show_default=False)
SetOpt = typer.Option([], "--set", metavar="KEY=VALUE", help="Override a spec field, e.g. --set attacks.0.eps=0.05 (repeatable).")
DeviceOpt = typer.Option(None, "--device", metavar="DEVICE", help="auto | cpu | cuda | cuda:N (overrides the spec).")


def summary_table(metrics: dict[str, Any], title: str) -> Table:
    """Per attack: images, success rate, AUC and TPR at 1/5/10% FPR."""
    intervals = any(m.get("auc_ci") for m in metrics["attacks"].values())
    caption = "n_attacked: successful adversarials, the positives scored against n_clean clean images"
    if intervals:
        caption += "; AUC and TPR with bootstrap confidence intervals"
    table = Table(title=title, caption=caption)
    columns = ("attack", "n_clean", "n_attacked", "success", "AUC", "TPR@1%", "TPR@5%", "TPR@10%", "FPR", "evades",
               "L2", "Linf", "seconds")
    for column in columns:
        table.add_column(column, justify="left" if column == "attack" else "right")
    for name, m in metrics["attacks"].items():
        tpr, tpr_ci = m["tpr_at_fpr"], m.get("tpr_at_fpr_ci") or {}
        size = m.get("perturbation") or {}
        table.add_row(
            escape(name), str(m["n_clean"]), str(m["n_attacked"]), fmt(m["success_rate"]),
            with_ci(m["auc"], m.get("auc_ci")),
            *(with_ci(tpr[level], tpr_ci.get(level)) for level in ("0.01", "0.05", "0.1")),
            fmt(m["fpr"]), fmt(m.get("evasion_rate")), fmt(size.get("l2"), 2), fmt(size.get("linf"), 3),
            fmt(m["seconds"], 1),
        )
    return table


def controls_table(metrics: dict[str, Any]) -> Table | None:
    """Per attack: its AUC beside the noise controls' and the randomized model's."""
    rows = [(name, m) for name, m in metrics["attacks"].items() if "noise" in m or "randomized_model" in m]
    if not rows:
        return None
    table = Table(title="controls: is it detecting the attack, or noise / an untrained model?")
    for column in ("attack", "AUC", "flagged", "sign-noise AUC", "sign flagged", "gauss-noise AUC", "gauss flagged",
                   "random-model AUC"):
        table.add_column(column, justify="left" if column == "attack" else "right")
    for name, m in rows:
        noise = m.get("noise") or {}
        sign, gauss = noise.get("sign") or {}, noise.get("gaussian") or {}
        table.add_row(
            escape(name), fmt(m["auc"]), fmt(m["recall"]), fmt(sign.get("auc")), fmt(sign.get("flag_rate")),
            fmt(gauss.get("auc")), fmt(gauss.get("flag_rate")), fmt((m.get("randomized_model") or {}).get("auc")),
        )
    return table


def with_ci(value: Any, ci: list[float] | None) -> str:
    """`0.912 [0.880, 0.940]`, or just the value when there is no interval."""
    return fmt(value) if not ci else f"{fmt(value)}\n[dim][{ci[0]:.3f}, {ci[1]:.3f}][/]"


def register(app: typer.Typer) -> None:
    @app.command("run")
    @handle_errors
    def run_command(
        spec: Path = SpecArg,
        out: Path = typer.Option(None, "--out", metavar="DIR", help="Run directory (default runs/<name>-<timestamp>/); an earlier run there is replaced."),
        device: str = DeviceOpt,
        set_: list[str] = SetOpt,
        no_cache: bool = typer.Option(False, "--no-cache", help="Recompute every attack; leave the cache alone."),
    ) -> None:
        """Run a detection spec and write its run directory."""
        resolved = load_spec(spec, set_)
        progress.enable()
        result = run_engine(resolved, out=out, device=device, use_cache=not no_cache)
        data = result.metrics["data"]
        title = (
            f"{resolved.name}: {data['n_correct']}/{data['n_images']} clean correct, "
            f"{data['n_fit']} fit / {data['n_test']} test, threshold {result.metrics['threshold']:.4f}"
        )
        console.print(summary_table(result.metrics, title))
        controls = controls_table(result.metrics)
        if controls is not None:
            console.print(controls)
        console.print(f"run directory: [bold]{escape(str(result.out_dir))}[/] ({result.metrics['seconds']:.1f} s)")
        console.print(f"report: {escape(str(result.out_dir / 'report.html'))}")
