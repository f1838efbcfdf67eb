"""`tracekit plugins [KIND [NAME]] [--json]`: every installed component, by kind, with its
distribution; one component's parameters with their types and defaults."""

from __future__ import annotations

import json
import types
import typing
from typing import Annotated, Any, Literal

import typer
from rich.table import Table

from ..errors import TracekitError, did_you_mean
from ..plugins import plugins, registry, selection_note
from ..registry import KINDS, Entry
from .common import console, err_console, escape, handle_errors


def type_name(annotation: Any) -> str:
    """A parameter's type as a spec author reads it: `int (> 0) | null`, `'inf' | 2`, `list[str]`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return type_name(args[0]) + bounds([m for item in args[1:] for m in getattr(item, "metadata", [item])])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_name(a) for a in args)}]"
    if annotation is type(None):
        return "null"
    if annotation is Ellipsis:
        return "..."
    return getattr(annotation, "__name__", str(annotation))


def bounds(metadata: list[Any]) -> str:
    """` (> 0, <= 1)` from pydantic/annotated-types constraints, or nothing."""
    said = [
        f"{sign} {getattr(m, attr)}"
        for m in metadata
        for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
        if getattr(m, attr, None) is not None
    ]
    return f" ({', '.join(said)})" if said else ""


def parameters(entry: Entry) -> list[dict[str, Any]]:
    """A component's parameters: name, type, default (None when required), required."""
    out = []
    for name, field in entry.params.model_fields.items():
        required = field.is_required()
        default = None if required else field.get_default(call_default_factory=True)
        kind = type_name(field.annotation) + bounds(field.metadata)
        out.append({"name": name, "type": kind, "default": default, "required": required})
    return out


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


def show_component(kind: str, name: str, as_json: bool) -> None:
    """One component: its summary and documentation, and each parameter's type and default."""
    entry = registry(kind).get(name)
    params = parameters(entry)
    if as_json:
        document = {"kind": kind, "name": entry.name, "distribution": entry.source, "parameters": params}
        typer.echo(json.dumps({**document, "doc": entry.doc}, indent=2, default=str))
        return
    console.print(f"[bold]{kind} {escape(entry.name)}[/] ({escape(entry.source)})")
    console.print(escape(entry.doc, newlines=True))
    table = Table()
    for column in ("parameter", "type", "default"):
        table.add_column(column, overflow="fold")
    for p in params:
        default = "required" if p["required"] else "null" if p["default"] is None else repr(p["default"])
        table.add_row(escape(p["name"]), escape(p["type"]), escape(default))
    console.print(table)


def register(app: typer.Typer) -> None:
    @app.command("plugins")
    @handle_errors
    def plugins_command(
        kind: str = typer.Argument(None, metavar="[KIND]", help="Only this kind: " + ", ".join(KINDS) + "."),
        name: str = typer.Argument(None, metavar="[NAME]", help="One component: its parameters in full."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """List installed components of every kind, plugins that failed to load, and those that
        TRACEKIT_LOAD_PLUGINS leaves out; `tracekit plugins model checkpoint` shows one
        component's parameters with their types and defaults."""
        if kind is not None and kind not in KINDS:
            raise TracekitError(f"unknown kind '{kind}'{did_you_mean(kind, KINDS)}; kinds are {', '.join(KINDS)}")
        if name is not None:
            show_component(kind, name, as_json)
            return
        data = listing()
        if kind is not None:
            data["components"] = {kind: data["components"][kind]}
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
                table.add_row(
                    kind,
                    escape(e["name"]),
                    escape(e["distribution"]),
                    escape(", ".join(e["parameters"])),
                    escape(e["summary"]),
                )
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
