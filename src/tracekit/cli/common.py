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
from rich.markup import escape as escape_markup

from .. import stopping
from ..containment import culprit, describe
from ..errors import PluginFault, TracekitError
from ..printable import printable


def escape(text: str, newlines: bool = False) -> str:
    """`text` for a Rich console: its markup escaped and its control characters made visible
    (`tracekit.printable`), so that a file name or plugin message cannot drive the terminal. Every
    message, warning and table cell of the CLI that holds outside text goes through it; `newlines`
    keeps line breaks, for text shown on several lines on purpose (a component's documentation)."""
    return escape_markup(printable(text, newlines))


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
    traceback); warnings as single yellow lines, each shown once.

    A stop (Ctrl-C, SIGTERM, SIGHUP: `tracekit.stopping`) -> one `interrupted` line and exit code
    128 + the signal (130, 143, 129), also when it was swallowed where it landed and the command
    went on (never exit 0 after a stop), and whatever error it caused on its way out. Whatever a
    plugin's component raises, `SystemExit` and `GeneratorExit` included, is that plugin's error,
    named on one line (`KeyboardInterrupt` stays a stop)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with stopping.raising(), warnings.catch_warnings():
                warnings.showwarning = _warn_once()
                return func(*args, **kwargs)
        except KeyboardInterrupt as exc:
            raise interrupted(exc) from None
        except (typer.Exit, typer.Abort) as exc:
            if stopping.requested() is not None:
                raise interrupted(None) from None
            said = describe(exc)  # click's Exit or Abort raised by a plugin's code, not by a command
            if said is not None:
                err_console.print(f"[bold red]error:[/] {escape(said)}", soft_wrap=True)
                raise typer.Exit(1) from None
            raise
        except TracekitError as exc:
            if stopping.requested() is not None:
                raise interrupted(None) from None
            found = culprit(exc)  # bad input a plugin reports: said with the plugin's name
            whose = f" (raised by {found.who()}{found.where()})" if found is not None else ""
            err_console.print(f"[bold red]error:[/] {escape(str(exc) + whose)}", soft_wrap=True)
            raise typer.Exit(2) from None
        except PluginFault as exc:
            if stopping.requested() is not None:
                raise interrupted(None) from None
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(1) from None
        except BaseException as exc:  # SystemExit, GeneratorExit, ... escape only from a plugin or a bug
            if stopping.requested() is not None:  # an error the stop caused (a worker gone, say)
                raise interrupted(None) from None
            if isinstance(exc, Exception) and _no_space(exc):
                where = f" writing {exc.filename}" if isinstance(exc, OSError) and exc.filename else ""
                err_console.print(
                    f"[bold red]error:[/] no space left on the device{where}; free some space (or point --out / "
                    "TRACEKIT_CACHE elsewhere) and run the same command again: finished work is kept",
                    soft_wrap=True,
                )
                raise typer.Exit(2) from None
            raise _bug(exc) from None

    return wrapper  # type: ignore[return-value]


def interrupted(exc: KeyboardInterrupt | None) -> typer.Exit:
    """The one `interrupted` line (what was kept, how to resume) and the stop's exit code: 130 for
    Ctrl-C, 143 for SIGTERM, 129 for SIGHUP (130 for a `KeyboardInterrupt` no signal raised)."""
    said = f": {escape(str(exc))}" if exc is not None and str(exc) else ""
    name = stopping.signal_name()
    via = f" ({name})" if name else ""
    try:
        err_console.print(f"[yellow]interrupted[/]{via}{said}", soft_wrap=True)
    except (KeyboardInterrupt, OSError):  # Ctrl-C again (no handler installed), a closed terminal
        pass
    return typer.Exit(stopping.exit_code())


def _no_space(exc: Exception) -> bool:
    """A full disk or quota, however the library that hit it words it (torch, pyarrow, Python)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc)


def _bug(exc: BaseException) -> typer.Exit:
    """Anything else is a bug: one line, exit 1 (the traceback with TRACEKIT_DEBUG=1), naming the
    plugin it came from where a plugin's code raised it."""
    if os.environ.get("TRACEKIT_DEBUG"):
        traceback.print_exception(exc)
    if not isinstance(exc, Exception):  # SystemExit, GeneratorExit, a bare BaseException
        said = describe(exc)
        if said is not None:
            err_console.print(f"[bold red]error:[/] {escape(said)}", soft_wrap=True)
            return typer.Exit(1)
    found = culprit(exc)
    whose = (
        f"raised by {found.who()}{found.where()}: a bug in the plugin, report it to its authors"
        if found is not None
        else "this is a bug in tracekit or a plugin"
    )
    err_console.print(
        f"[bold red]unexpected error:[/] {escape(_shown(exc))} ({escape(whose)}; set TRACEKIT_DEBUG=1 for the "
        "traceback)",
        soft_wrap=True,
    )
    return typer.Exit(1)


def _shown(exc: BaseException) -> str:
    """`ValueError: message` on one line, bounded; `SystemExit(0)` for what has no message of its own."""
    text = " ".join(str(exc).split())
    shown = f"{type(exc).__name__}: {text}" if text and isinstance(exc, Exception) else repr(exc)
    return shown if len(shown) <= 500 else shown[:499] + "…"


def fmt(value: Any, digits: int = 3) -> str:
    """A metric for a table: numbers rounded, missing values as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)
