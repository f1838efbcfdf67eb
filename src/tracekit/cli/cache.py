"""`tracekit cache ls` / `tracekit cache clear [--older-than 7d]`: the attack cache."""

from __future__ import annotations

import re
import time

import typer
from rich.table import Table

from ..cache import cache_dir
from ..engine import attack_cache
from ..errors import TracekitError
from .common import console, escape, handle_errors

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str) -> float:
    """'90s', '30m', '12h', '7d', '2w' -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if not match:
        raise TracekitError(f"--older-than {text!r}: expected a number and a unit s/m/h/d/w, e.g. 7d or 12h")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _parameters(params: dict) -> str:
    """`eps=0.1 backend=art`: what tells two caches of one attack apart (not its name or code hash)."""
    return " ".join(f"{k}={v}" for k, v in params.items() if k not in ("name", "code"))


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Inspect or clear the attack cache.", no_args_is_help=True)
    app.add_typer(group, name="cache")

    @group.command("ls")
    @handle_errors
    def ls_command() -> None:
        """List cached attacks."""
        entries = attack_cache.list_entries()
        total_mb = sum(e["bytes"] for e in entries) / 1e6
        table = Table(
            title=f"attack cache: {escape(str(cache_dir() / 'attacks'))}",
            caption=f"{len(entries)} cached attack(s), {total_mb:.1f} MB; an entry is a batch, or one image "
            "for per-image attacks (pixel, boundary)",
        )
        for column in ("key", "attack", "parameters", "model", "seed", "entries", "MB", "age"):
            table.add_column(column, justify="right" if column in ("seed", "entries", "MB", "age") else "left")
        for e in sorted(entries, key=lambda e: e["modified"], reverse=True):
            table.add_row(
                escape(str(e["key"])[:12]),
                escape(str(e["attack"])),
                escape(_parameters(e["params"])),
                escape(str(e["model"])[:12]),
                escape(str(e["seed"])),
                str(e["batches"]),
                f"{e['bytes'] / 1e6:.1f}",
                _age(time.time() - e["modified"]),
            )
        console.print(table)

    @group.command("clear")
    @handle_errors
    def clear_command(
        older_than: str = typer.Option(
            None, "--older-than", metavar="AGE", help="Only entries untouched for this long, e.g. 7d."
        ),
    ) -> None:
        """Remove cached attacks."""
        cleared = attack_cache.clear(None if older_than is None else parse_age(older_than))
        console.print(f"removed {cleared.removed} cached attack(s)")
        if cleared.failed:
            busy = "in use by a running tracekit process" in cleared.failed[0]  # says itself what to do
            raise TracekitError(
                f"could not remove {len(cleared.failed)} cached attack(s), the first {cleared.failed[0]}"
                + ("" if busy else "; check the cache directory's permissions (TRACEKIT_CACHE)")
            )
