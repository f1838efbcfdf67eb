"""`tracekit plugins [--json]`: every installed component, by kind, with its distribution."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from ..plugins import plugins, registry, selection_note
from ..registry import KINDS
from .common import console, err_console, handle_errors


def listing() -> dict[str, Any]:
    """Components by kind, and plugins (with load errors)."""
    return {
        "components": {
            kind: [
                {
                    "name": e.name,
                    "distribution": e.source,
                    "summary": e.summary,
                    "parameters": list(e.params.model_fields),
                }
                for e in registry(kind).entries()
            ]
            for kind in KINDS
        },
        "plugins": [
            {
                "name": p.name,
                "distribution": p.distribution,
                "version": p.version,
                "module": p.module,
                "components": p.components,
                "error": p.error,
            }
            for p in plugins()
        ],
    }


def register(app: typer.Typer) -> None:
    @app.command("plugins")
    @handle_errors
    def plugins_command(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
        """List installed components of every kind, plugins that failed to load, and those that
        TRACEKIT_LOAD_PLUGINS leaves out."""
        data = listing()
        if as_json:
            typer.echo(json.dumps(data, indent=2))
            return
        table = Table(title="tracekit components")
        for column in ("kind", "name", "distribution"):
            table.add_column(column, no_wrap=True)
        table.add_column("parameters", overflow="fold")
        table.add_column("summary", overflow="fold", ratio=1)
        for kind, entries in data["components"].items():
            for e in entries:
                table.add_row(kind, e["name"], e["distribution"], ", ".join(e["parameters"]), escape(e["summary"]))
        console.print(table)
        for p in data["plugins"]:
            if p["error"]:
                err_console.print(
                    f"[bold red]plugin failed:[/] {escape(p['name'])} ({escape(p['distribution'])}): "
                    f"{escape(p['error'])}",
                    soft_wrap=True,
                )
        if selection_note():
            err_console.print(f"[yellow]note:[/] {escape(selection_note())}", soft_wrap=True)
