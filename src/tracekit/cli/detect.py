"""`tracekit detect --run RUN_DIR IMAGE... [--json]`: score images with a run's detector."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from .. import progress
from ..detecting import load_run
from ..images import read_inputs
from .common import console, err_console, fmt, handle_errors

ImagesArg = typer.Argument(..., help="Image files (PNG, JPEG; any size or mode).", show_default=False)
DeviceOpt = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N (default: the run's or auto).")
JsonOpt = typer.Option(False, "--json", help="One JSON object per image (JSON lines) instead of a table.")


def print_results(results: list[dict[str, Any]], as_json: bool, title: str) -> None:
    """A table (or JSON lines) of the results; unreadable inputs as error lines; exit 2 if any."""
    failed = [r for r in results if r["error"]]
    for r in failed:
        err_console.print(f"[bold red]error:[/] {escape(r['error'])}", soft_wrap=True)
    if as_json:
        for r in results:
            typer.echo(json.dumps(r))
    else:
        with_panels = any(r.get("panel") for r in results)
        table = Table(title=title)
        for column in ("image", "prediction", "score", "threshold", "verdict", *(["panel"] if with_panels else [])):
            table.add_column(column, justify="right" if column in ("score", "threshold") else "left")
        for r in results:
            if r["error"]:
                table.add_row(escape(r["image"]), "[red]unreadable[/]", "–", "–", "–", *([""] if with_panels else []))
                continue
            verdict = {"adversarial": "[bold red]adversarial[/]", "clean": "[green]clean[/]"}.get(r["verdict"], "–")
            prediction = f"{escape(r['class'])} ({r['confidence']:.0%})"
            table.add_row(
                escape(r["image"]), prediction, fmt(r["score"], 4), fmt(r["threshold"], 4), verdict,
                *([escape(r.get("panel") or "")] if with_panels else []),
            )  # fmt: skip
        console.print(table)
    if failed:
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    @app.command("detect")
    @handle_errors
    def detect_command(
        images: list[Path] = ImagesArg,
        run_dir: Path = typer.Option(..., "--run", help="A run directory written by `tracekit run`.", show_default=False),
        device: str = DeviceOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Score images with a finished run's model, detector and calibrated threshold."""
        progress.enable()
        setup = load_run(run_dir, device)
        results = setup.results(read_inputs(images, setup.model.input_size))
        print_results(results, as_json, f"detect with {run_dir} (score > threshold: adversarial)")
