"""What every command shares: consoles and turning errors into one line and an exit code."""

from __future__ import annotations

import errno
import functools
import os
import sys
import traceback
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import TracekitError

# Piped into a file or another program there is no terminal width to honour, and Rich would assume
# 80 columns and cut the summary tables' cells to "…"; such output gets room (COLUMNS still wins).
PIPED_WIDTH = 200
console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else PIPED_WIDTH)
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def _warn_once() -> Callable[..., None]:
    """A `warnings.showwarning` that prints each distinct message once, as one yellow line.

    Python's own once-per-place filter forgets what it showed whenever any library enters
    `warnings.catch_warnings()`, so a warning raised per fit or per batch would repeat.
    """
    seen: set[str] = set()

    def show(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
        text = str(message)
        if text not in seen:
            seen.add(text)
            err_console.print(f"[yellow]warning:[/] {escape(text)}", soft_wrap=True)

    return show


def handle_errors(func: F) -> F:
    """Bad input -> one red line, exit 2; a bug -> one line, exit 1 (TRACEKIT_DEBUG=1 shows the
    traceback); warnings as single yellow lines, each shown once."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _warn_once()
                return func(*args, **kwargs)
        except TracekitError as exc:
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt as exc:
            said = f": {escape(str(exc))}" if str(exc) else ""
            err_console.print(f"[yellow]interrupted[/]{said}", soft_wrap=True)
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            if not _no_space(exc):
                raise _bug(exc) from None
            where = f" writing {exc.filename}" if isinstance(exc, OSError) and exc.filename else ""
            err_console.print(
                f"[bold red]error:[/] no space left on the device{where}; free some space (or point --out / "
                "TRACEKIT_CACHE elsewhere) and run the same command again: finished work is kept",
                soft_wrap=True,
            )
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _no_space(exc: Exception) -> bool:
    """A full disk or quota, however the library that hit it words it (torch, pyarrow, Python)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc)


def _bug(exc: Exception) -> typer.Exit:
    """Anything else is a bug: one line, exit 1 (the traceback with TRACEKIT_DEBUG=1)."""
    if os.environ.get("TRACEKIT_DEBUG"):
        traceback.print_exception(exc)
    err_console.print(
        f"[bold red]unexpected error:[/] {escape(type(exc).__name__)}: {escape(str(exc))} "
        "(this is a bug in tracekit or a plugin; set TRACEKIT_DEBUG=1 for the traceback)",
        soft_wrap=True,
    )
    return typer.Exit(1)


def fmt(value: Any, digits: int = 3) -> str:
    """A metric for a table: numbers rounded, missing values as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)
