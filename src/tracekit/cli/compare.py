"""`tracekit compare SPEC` (detectors on identical images) and `tracekit compare RUN_DIR...`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.table import Table

from .. import compare, progress
from ..errors import TracekitError
from ..layout import RunLayout
from ..spec import load_spec
from .common import console, err_console, escape, fmt, handle_errors
from .run import FEW_MARK, DeviceOpt, SetOpt, ThreadsOpt

DETECTOR_WIDTH, ATTACK_WIDTH = 28, 12  # at most, before a label or an attack name wraps


def compare_tables(detectors: dict[str, dict[str, Any]], title: str, level: float, width: int = 80) -> list[Table]:
    """Detectors x attacks: a table of AUCs, one of TPRs at the FPR `level` and one of evasion
    rates (what an adaptive attack is judged by, beside the plain attacks'), each split into
    several tables of fewer attacks where all would not fit `width` columns; a number that rests on
    too few images to conclude from (`verdicts.small_sample`) is marked `*`."""
    from ..report.verdicts import small_sample

    attacks: list[str] = []
    for per_attack in detectors.values():
        attacks += [a for a in per_attack if a not in attacks]
    first = min(max((len(label) for label in detectors), default=8), DETECTOR_WIDTH) + 2
    few = {(label, a) for label, per_attack in detectors.items() for a, m in per_attack.items() if small_sample(m)}
    narrowest = 6 if few else 5  # "0.912", or "0.912*"
    chunks: list[list[str]] = [[]]
    used = first
    for attack in attacks:
        need = max(min(len(attack), ATTACK_WIDTH), narrowest) + 2
        if chunks[-1] and used + need > width:
            chunks.append([])
            used = first
        chunks[-1].append(attack)
        used += need
    tables = []
    for what, key in (
        ("ROC AUC (0.5: chance)", "auc"),
        (f"TPR at {level:.0%} FPR (share of adversarials flagged)", str(level)),
        ("evasion rate (attacked images misclassified and not flagged at the threshold)", "evasion_rate"),
    ):
        for i, chunk in enumerate(chunks):
            part = f" ({i + 1}/{len(chunks)})" if len(chunks) > 1 else ""
            table = Table(
                title=f"{title}\n{what}{part}",
                box=box.SIMPLE_HEAD,
                show_edge=False,
                padding=(0, 1, 0, 0),
                pad_edge=False,
            )
            table.add_column("detector", overflow="fold", max_width=DETECTOR_WIDTH)
            for attack in chunk:
                table.add_column(escape(attack), justify="right", overflow="fold", min_width=narrowest)
            for label, per_attack in detectors.items():
                cells = []
                for attack in chunk:
                    m = per_attack.get(attack)
                    value = None if not m else m.get(key) if key in ("auc", "evasion_rate") else m["tpr_at_fpr"][key]
                    mark = FEW_MARK if (label, attack) in few and value is not None else ""
                    cells.append("n/a" if not m else fmt(value) + mark)
                table.add_row(escape(label), *cells)
            tables.append(table)
    return tables


def few_line(detectors: dict[str, dict[str, Any]]) -> str | None:
    """What the tables' `*` means, naming the detectors and attacks it marks; None where none is marked."""
    from ..engine.metrics import MIN_PER_CLASS
    from ..report.verdicts import small_sample

    marked = [f"{label} on {attack}" for label, per_attack in detectors.items()
              for attack, m in per_attack.items() if small_sample(m)]  # fmt: skip
    if not marked:
        return None
    shown = ", ".join(marked[:6]) + (f" and {len(marked) - 6} more" if len(marked) > 6 else "")
    return (
        f"{FEW_MARK} fewer than {MIN_PER_CLASS} successful adversarials or clean test images, too few to conclude: "
        + escape(shown)
    )


def calibration_lines(
    detectors: dict[str, dict[str, Any]], target_fpr: float, targets: dict[str, float] | None = None
) -> list[str]:
    """One yellow line per calibration problem of each detector (`label: problem`), against its
    own target FPR where `targets` has one."""
    from ..report.verdicts import calibration_problems

    return [
        f"[yellow]calibration:[/] {escape(label)}: {escape(problem.short)}"
        for label, per_attack in detectors.items()
        for problem in calibration_problems(per_attack, (targets or {}).get(label, target_fpr))
    ]


def print_comparison(
    detectors: dict[str, dict[str, Any]], title: str, target_fpr: float, targets: dict[str, float] | None = None
) -> None:
    """The AUC and TPR tables (and what their `*` means), then the calibration problems."""
    from ..engine.metrics import headline_level

    for table in compare_tables(detectors, title, headline_level(target_fpr), console.width):
        console.print(table)
    line = few_line(detectors)
    if line:
        console.print(line)
    for line in calibration_lines(detectors, target_fpr, targets):
        console.print(line)


def register(app: typer.Typer) -> None:
    @app.command("compare")
    @handle_errors
    def compare_command(
        targets: list[Path] = typer.Argument(
            ..., metavar="TARGET", help="A spec with `detectors:`, or finished run directories."
        ),
        out: Path = typer.Option(
            None,
            "--out",
            metavar="DIR",
            help=(
                "Comparison directory (default runs/<name>-<timestamp>/, for run directories "
                "runs/compare-runs-<timestamp>/); an earlier one there is replaced."
            ),
        ),
        device: str = DeviceOpt,
        threads: int = ThreadsOpt,
        set_: list[str] = SetOpt,
        no_cache: bool = typer.Option(False, "--no-cache", help="Recompute every attack; leave the cache alone."),
    ) -> None:
        """Compare detectors on identical images (a spec), or finished runs side by side."""
        from ..engine.compare import compare_runs, open_runs_comparison, write_runs_comparison

        if len(targets) == 1 and not targets[0].is_dir():
            spec = load_spec(targets[0], set_)
            progress.enable()
            result = compare(spec, out=out, device=device, use_cache=not no_cache, threads=threads)
            detectors = {label: d["attacks"] for label, d in result.metrics["detectors"].items()}
            data = result.metrics["data"]
            title = f"{spec.name}: {data['n_fit']} fit / {data['n_test']} test images, same for every detector"
            print_comparison(detectors, title, spec.calibration.target_fpr)
            for label, entry in result.metrics["detectors"].items():
                for attack in entry.get("no_adaptive_attack") or {}:
                    console.print(
                        f"n/a: {escape(label)} on {escape(attack)}: no adaptive attack available "
                        "(the detector has no differentiable stand-in of its score)"
                    )
            console.print(f"run directory: [bold]{escape(str(result.out_dir))}[/] ({result.metrics['seconds']:.1f} s)")
            console.print(f"report: {escape(str(RunLayout(result.out_dir).report))}")
            return
        if set_ or device or no_cache or threads is not None:
            raise TracekitError(
                "--set, --device, --threads and --no-cache apply to a comparison spec, not to run directories"
            )
        from ..report import write_report

        # --out is checked and locked before any run is read: `compare X Y --out X` stops here
        with open_runs_comparison(targets, out) as into:
            comparison = compare_runs(list(targets))
            for warning in comparison.warnings:
                err_console.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)
            fprs = {label: run["target_fpr"] for label, run in comparison.runs.items()}
            print_comparison(comparison.detectors, "finished runs", comparison.target_fpr, fprs)
            directory = write_runs_comparison(comparison, finish=write_report, into=into)
        console.print(f"comparison directory: [bold]{escape(str(directory))}[/]")
        console.print(f"report: {escape(str(RunLayout(directory).report))}")
