"""`tracekit report RUN_DIR`: rebuild a run's (or comparison's) figures and report.html from its directory."""

from __future__ import annotations

from pathlib import Path

import typer

from .. import progress
from .common import console, escape, handle_errors


def register(app: typer.Typer) -> None:
    @app.command("report")
    @handle_errors
    def report_command(
        run_dir: Path = typer.Argument(
            ..., metavar="RUN_DIR", help="A finished run or comparison directory.", show_default=False
        ),
    ) -> None:
        """Rebuild the figures and report.html of a finished run from its directory alone."""
        from .. import rebuild_report

        progress.enable()
        path = rebuild_report(run_dir)
        console.print(f"report: {escape(str(path))}")
