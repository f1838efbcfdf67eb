"""`tracekit detect --run RUN_DIR [--detector LABEL] IMAGE... [--json]`: score images with a run's
detector (a comparison's: the one labelled LABEL)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from .. import progress
from .common import console, err_console, escape, fmt, handle_errors

ImagesArg = typer.Argument(..., metavar="IMAGE", help="Image files (PNG, JPEG; any size or mode).", show_default=False)
DeviceOpt = typer.Option(
    None, "--device", metavar="DEVICE", help="auto | cpu | cuda | cuda:N (default: the run's or auto)."
)
DetectorOpt = typer.Option(
    None,
    "--detector",
    metavar="LABEL",
    help="Which of a comparison's detectors to use, by label (a comparison directory, or for explain a spec).",
    show_default=False,
)
ThreadsOpt = typer.Option(
    None,
    "--threads",
    metavar="N",
    show_default=False,
    help=(
        "torch's CPU threads, 1-1024 (default auto: OMP_NUM_THREADS if set, "
        "else the usable cores not busy with other work)."
    ),
)
JsonOpt = typer.Option(False, "--json", help="One JSON object per image (JSON lines) instead of a table.")
TrustCodeOpt = typer.Option(
    False,
    "--trust-code",
    help="Import the Python code a run directory's model names (checkpoint with source: python); "
    "only for run directories you trust.",
)
VERDICTS = {"adversarial": "[bold red]adversarial[/]", "clean": "[green]clean[/]"}


def results_table(results: list[dict[str, Any]], title: str) -> Table:
    """Image, prediction, score, and where present threshold, verdict and panel file."""
    from ..report.figures import percent

    verdicts = any(r["threshold"] is not None for r in results)
    panels = any(r.get("panel") for r in results)
    columns = [
        "image",
        "prediction",
        "score",
        *(["threshold", "verdict"] if verdicts else []),
        *(["panel"] if panels else []),
    ]
    table = Table(title=escape(title))  # it names a user's run directory or spec
    for column in columns:
        table.add_column(column, justify="right" if column in ("score", "threshold") else "left", overflow="fold")
    for r in results:
        cells = {"image": escape(r["image"]), "prediction": "[red]unreadable[/]", "panel": escape(r.get("panel") or "")}
        if not r["error"]:
            cells.update(prediction=f"{escape(r['class'])} ({percent(r['confidence'])})", score=fmt(r["score"], 4),
                         threshold=fmt(r["threshold"], 4), verdict=VERDICTS.get(r["verdict"], "–"))  # fmt: skip
        table.add_row(*(cells.get(column, "–") for column in columns))
    return table


def print_results(results: list[dict[str, Any]], as_json: bool, title: str) -> None:
    """A table (or JSON lines) of the results; unreadable inputs as error lines; exit 2 if any."""
    failed = [r for r in results if r["error"]]
    for r in failed:
        err_console.print(f"[bold red]error:[/] {escape(r['error'])}", soft_wrap=True)
    if as_json:
        for r in results:
            typer.echo(json.dumps(r))
    else:
        console.print(results_table(results, title))
    if failed:
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    @app.command("detect")
    @handle_errors
    def detect_command(
        images: list[Path] = ImagesArg,
        run_dir: Path = typer.Option(
            ...,
            "--run",
            metavar="RUN_DIR",
            help="A run directory written by `tracekit run` (or `tracekit compare`).",
            show_default=False,
        ),
        device: str = DeviceOpt,
        threads: int = ThreadsOpt,
        detector: str = DetectorOpt,
        as_json: bool = JsonOpt,
        trust_code: bool = TrustCodeOpt,
    ) -> None:
        """Score images with a finished run's model, detector and calibrated threshold."""
        from ..detecting import detect

        progress.enable()
        results = detect(run_dir, images, device, detector, threads, trust_code)
        print_results(results, as_json, f"detect with {run_dir} (flagged when score > threshold)")
