"""`tracekit compare SPEC` (detectors on identical images) and `tracekit compare RUN_DIR...`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from .. import compare, progress
from ..errors import TracekitError
from ..spec import load_spec
from .common import console, err_console, fmt, handle_errors
from .run import DeviceOpt, SetOpt


def compare_table(detectors: dict[str, dict[str, Any]], title: str, level: float) -> Table:
    """Detectors x attacks: AUC and TPR at the FPR `level`."""
    attacks: list[str] = []
    for per_attack in detectors.values():
        attacks += [a for a in per_attack if a not in attacks]
    table = Table(title=title)
    table.add_column("detector")
    for attack in attacks:
        table.add_column(f"{attack}\nAUC", justify="right")
        table.add_column(f"{attack}\nTPR@{level:.0%}", justify="right")
    for label, per_attack in detectors.items():
        cells = []
        for attack in attacks:
            m = per_attack.get(attack)
            cells += [fmt(m["auc"]), fmt(m["tpr_at_fpr"][str(level)])] if m else ["n/a", "n/a"]
        table.add_row(escape(label), *cells)
    return table


def register(app: typer.Typer) -> None:
    @app.command("compare")
    @handle_errors
    def compare_command(
        targets: list[Path] = typer.Argument(..., metavar="TARGET", help="A spec with `detectors:`, or finished run directories."),
        out: Path = typer.Option(None, "--out", metavar="DIR", help="Comparison directory (default runs/<name>-<timestamp>/); an earlier one there is replaced."),
        device: str = DeviceOpt,
        set_: list[str] = SetOpt,
        no_cache: bool = typer.Option(False, "--no-cache", help="Recompute every attack; leave the cache alone."),
    ) -> None:
        """Compare detectors on identical images (a spec), or finished runs side by side."""
        from ..engine.compare import compare_runs
        from ..engine.metrics import headline_level

        if len(targets) == 1 and not targets[0].is_dir():
            spec = load_spec(targets[0], set_)
            progress.enable()
            result = compare(spec, out=out, device=device, use_cache=not no_cache)
            detectors = {label: d["attacks"] for label, d in result.metrics["detectors"].items()}
            data = result.metrics["data"]
            title = f"{spec.name}: {data['n_fit']} fit / {data['n_test']} test images, same for every detector"
            console.print(compare_table(detectors, title, headline_level(spec.calibration.target_fpr)))
            console.print(f"run directory: [bold]{escape(str(result.out_dir))}[/] ({result.metrics['seconds']:.1f} s)")
            console.print(f"report: {escape(str(result.out_dir / 'report.html'))}")
            return
        if set_ or out or device or no_cache:
            raise TracekitError("--set, --out, --device and --no-cache apply to a comparison spec, not to run directories")
        comparison = compare_runs(list(targets))
        for warning in comparison.warnings:
            err_console.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)
        console.print(compare_table(comparison.detectors, "finished runs", headline_level(comparison.target_fpr)))
