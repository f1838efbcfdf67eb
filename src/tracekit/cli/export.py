"""`tracekit export RUN_DIR --out DIR`: a run's adversarials, originals and perturbations to take away."""

from __future__ import annotations

from pathlib import Path

import typer

from .. import progress
from .common import console, escape, handle_errors
from .detect import DeviceOpt, TrustCodeOpt


def register(app: typer.Typer) -> None:
    @app.command("export")
    @handle_errors
    def export_command(
        run_dir: Path = typer.Argument(
            ..., metavar="RUN_DIR", help="A finished run or comparison directory.", show_default=False
        ),
        out: Path = typer.Option(..., "--out", metavar="DIR", help="Where to write them.", show_default=False),
        attack: str = typer.Option(None, "--attack", metavar="NAME", help="Only this attack (its label)."),
        fmt: str = typer.Option("npz", "--format", metavar="npz|png", help="Float arrays, or 8-bit PNG files."),
        device: str = DeviceOpt,
        trust_code: bool = TrustCodeOpt,
    ) -> None:
        """Export a run's adversarials (with their originals, perturbations and an index.csv)."""
        from ..exporting import export

        progress.enable()
        result = export(run_dir, out, attack, fmt, device, trust_code)
        for name, counts in result.attacks.items():
            line = f"{name}: {counts['images']} image(s), {counts['successful']} successful"
            if "still_successful_after_8bit" in counts:
                line += f", {counts['still_successful_after_8bit']} still successful as 8-bit PNG"
            console.print(escape(line))
        console.print(f"exported: {escape(str(result.out))} (index.csv)")
