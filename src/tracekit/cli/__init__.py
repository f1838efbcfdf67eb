"""The `tracekit` command line: built by `build_app`, one module per command group.

Commands only parse, call the engine, and print. Exit codes: 0 success, 2 bad input,
1 unexpected failure.
"""

from __future__ import annotations

import signal

import typer

from . import cache as cache_cmd
from . import compare as compare_cmd
from . import detect as detect_cmd
from . import explain as explain_cmd
from . import export as export_cmd
from . import plugins as plugins_cmd
from . import report as report_cmd
from . import run as run_cmd
from . import validate as validate_cmd


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        from ..version import __version__

        parts = [f"tracekit {__version__}"]
        for dist in ("torch", "adversarial-robustness-toolbox"):
            try:
                parts.append(f"{dist} {version(dist)}")
            except PackageNotFoundError:
                parts.append(f"{dist} (not installed)")
        typer.echo(", ".join(parts))
        raise typer.Exit()


def _root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the versions and exit."
    ),
) -> None:
    """Trace and detect adversarial attacks on image classifiers through feature response maps."""


def build_app() -> typer.Typer:
    """The typer application with every command registered."""
    app = typer.Typer(
        name="tracekit",
        help="Trace and detect adversarial attacks on image classifiers through feature response maps.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    app.callback()(_root)
    run_cmd.register(app)
    validate_cmd.register(app)
    plugins_cmd.register(app)
    cache_cmd.register(app)
    compare_cmd.register(app)
    explain_cmd.register(app)
    detect_cmd.register(app)
    report_cmd.register(app)
    export_cmd.register(app)
    return app


def main() -> None:
    """Console-script entry point. SIGTERM and SIGHUP (a job scheduler's stop, a closed
    terminal) stop the work like Ctrl-C: a message, finished work kept, the same command resumes."""
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _interrupt)
    build_app()()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
