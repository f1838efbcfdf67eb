"""`tracekit run SPEC`: one detection run, with progress bars and a summary table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.console import Group
from rich.table import Table

from .. import progress
from .. import run as run_engine
from ..layout import RunLayout
from ..spec import load_spec
from .common import console, escape, fmt, handle_errors

SpecArg = typer.Argument(..., metavar="SPEC", help="YAML spec file (see examples/quickstart.yaml).", show_default=False)
SetOpt = typer.Option(
    [], "--set", metavar="KEY=VALUE", help="Override a spec field, e.g. --set attacks.0.eps=0.05 (repeatable)."
)
DeviceOpt = typer.Option(None, "--device", metavar="DEVICE", help="auto | cpu | cuda | cuda:N (overrides the spec).")
THREADS_HELP = (
    "torch's CPU threads, 1-1024 (overrides the spec's `threads:`; default auto: OMP_NUM_THREADS "
    "if set, else the usable cores not busy with other work)."
)
ThreadsOpt = typer.Option(None, "--threads", metavar="N", help=THREADS_HELP, show_default=False)


def summary_table(metrics: dict[str, Any], title: str) -> Table:
    """Per attack: successful adversarials, AUC and TPR at 1/5/10% FPR (intervals on a second, dim
    line), realized FPR and evasion rate, in 80 columns; the numbers of an attack with too few images
    to conclude from (`verdicts.small_sample`) marked `*`. The full table (confidences, perturbation
    sizes, precision, recall, seconds) is in metrics.json and the report."""
    from ..engine.metrics import MIN_PER_CLASS
    from ..report.verdicts import small_sample

    intervals = any(m.get("auc_ci") for m in metrics["attacks"].values())
    caption = (
        "successful: n_attacked successful adversarials (share of the attacked), the positives scored against "
        "the clean test images; FPR: clean test images flagged; evades: misclassified and not flagged"
    )
    if intervals:
        caption += "; second line: bootstrap confidence interval"
    if any(small_sample(m) for m in metrics["attacks"].values()):
        caption += f"; {FEW_MARK}: fewer than {MIN_PER_CLASS} successful adversarials or clean test images, "
        caption += "too few to conclude"
    table = compact_table(title, caption)
    table.add_column("attack", overflow="fold", min_width=8)
    for column in ("successful", "AUC", "TPR@1%", "TPR@5%", "TPR@10%", "FPR", "evades"):
        table.add_column(column, justify="right", no_wrap=True)
    for name, m in metrics["attacks"].items():
        tpr, tpr_ci = m["tpr_at_fpr"], m.get("tpr_at_fpr_ci") or {}
        few = small_sample(m)
        table.add_row(
            escape(name),
            f"{m['n_attacked']} ({percent(m['success_rate'])})",
            with_ci(m["auc"], m.get("auc_ci"), few),
            *(with_ci(tpr[level], tpr_ci.get(level), few) for level in ("0.01", "0.05", "0.1")),
            fmt(m["fpr"]),
            percent(m.get("evasion_rate")),
        )
    return table


def controls_table(metrics: dict[str, Any]) -> Table | None:
    """Per attack: its AUC and share flagged beside the noise controls' and the randomized model's."""
    rows = [(name, m) for name, m in metrics["attacks"].items() if "noise" in m or "randomized_model" in m]
    if not rows:
        return None
    table = compact_table(
        "controls: detecting the attack, or noise / an untrained model?",
        "sign, gauss: random noise as large as each adversarial's perturbation (L∞, L2); flagged: share above the "
        "threshold; random model: the model's weights re-initialized, the detector fitted again",
    )
    table.add_column("attack", overflow="fold", min_width=8)
    for column in (
        "AUC",
        "flagged",
        "sign\nAUC",
        "sign\nflagged",
        "gauss\nAUC",
        "gauss\nflagged",
        "random\nmodel\nAUC",
    ):
        table.add_column(column, justify="right", no_wrap=True)
    for name, m in rows:
        noise = m.get("noise") or {}
        sign, gauss = noise.get("sign") or {}, noise.get("gaussian") or {}
        table.add_row(
            escape(name),
            fmt(m["auc"]),
            percent(m["recall"]),
            fmt(sign.get("auc")),
            percent(sign.get("flag_rate")),
            fmt(gauss.get("auc")),
            percent(gauss.get("flag_rate")),
            fmt((m.get("randomized_model") or {}).get("auc")),
        )
    return table


def compact_table(title: str, caption: str) -> Table:
    """A table without vertical rules and two spaces between columns: fits 80 columns."""
    return Table(
        title=title,
        caption=caption,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1, 0, 0),
        pad_edge=False,
    )


def verdict_lines(metrics: dict[str, Any]) -> Group:
    """The report's verdict per attack, its control notes and the calibration problems (yellow), under
    a heading, as a borderless two-column grid that wraps."""
    from ..report.verdicts import calibration_problems, verdicts

    target = float(metrics.get("target_fpr") or 0.05)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", overflow="fold", max_width=16)
    grid.add_column(overflow="fold")
    for v in verdicts(metrics["attacks"], target):
        grid.add_row(escape(v.attack), escape(v.text))
        for note in v.short_notes:
            grid.add_row("", f"[yellow]{escape(note)}[/]")
    for problem in calibration_problems(metrics["attacks"], target):
        grid.add_row("[yellow]calibration[/]", f"[yellow]{escape(problem.short)}[/]")
    heading = "\n[bold]verdict[/] (successful adversarials vs clean test images; rules in report.html)"
    return Group(heading, grid)


FEW_MARK = "[yellow]*[/]"  # after a number that rests on too few images to conclude from


def with_ci(value: Any, ci: list[float] | None, few: bool = False) -> str:
    """`0.912` and, on a second dim line, its interval as `.88-.94`; `few`: marked `*` (too few images)."""
    number = fmt(value) + (FEW_MARK if few and value is not None else "")
    return number if not ci else f"{number}\n[dim]{short_ci(ci)}[/]"


def short_ci(ci: list[float]) -> str:
    """An interval of a rate in [0, 1], two decimals without leading zeros: `.88-.94`, `.95-1.00`."""
    return "-".join(f"{v:.2f}".removeprefix("0") for v in ci)


def percent(value: Any) -> str:
    """A rate as a whole percentage; missing as an en dash."""
    return "–" if value is None else f"{value:.0%}"


def register(app: typer.Typer) -> None:
    @app.command("run")
    @handle_errors
    def run_command(
        spec: Path = SpecArg,
        out: Path = typer.Option(
            None,
            "--out",
            metavar="DIR",
            help="Run directory (default runs/<name>-<timestamp>/); an earlier run there is replaced.",
        ),
        device: str = DeviceOpt,
        threads: int = ThreadsOpt,
        set_: list[str] = SetOpt,
        no_cache: bool = typer.Option(False, "--no-cache", help="Recompute every attack; leave the cache alone."),
    ) -> None:
        """Run a detection spec and write its run directory."""
        resolved = load_spec(spec, set_)
        progress.enable()
        result = run_engine(resolved, out=out, device=device, use_cache=not no_cache, threads=threads)
        data = result.metrics["data"]
        title = (
            f"{resolved.name}: {data['n_correct']}/{data['n_images']} clean correct, "
            f"{data['n_fit']} fit / {data['n_test']} test, threshold {result.metrics['threshold']:.4f}"
        )
        console.print(summary_table(result.metrics, title))
        controls = controls_table(result.metrics)
        if controls is not None:
            console.print(controls)
        console.print(verdict_lines(result.metrics))
        console.print(f"run directory: [bold]{escape(str(result.out_dir))}[/] ({result.metrics['seconds']:.1f} s)")
        console.print(f"report: {escape(str(RunLayout(result.out_dir).report))}")
