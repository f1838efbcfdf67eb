"""`tracekit validate SPEC`: check a spec completely without running it."""

from __future__ import annotations

from pathlib import Path

import typer

from ..spec import dump_spec, load_spec
from .common import console, escape, handle_errors
from .run import SetOpt, SpecArg


def register(app: typer.Typer) -> None:
    @app.command("validate")
    @handle_errors
    def validate_command(
        spec: Path = SpecArg,
        set_: list[str] = SetOpt,
        show: bool = typer.Option(False, "--show", help="Print the resolved spec with every default."),
    ) -> None:
        """Validate a spec: structure, component names and every parameter."""
        resolved = load_spec(spec, set_)
        if show:
            console.print(dump_spec(resolved), markup=False, highlight=False)
        console.print(f"[green]ok[/]: {escape(str(spec))} is a valid spec ({len(resolved.attacks)} attack(s))")
