"""The `tracekit` command line: built by `build_app`, one module per command group.

Commands only parse, call the engine, and print. Exit codes: 0 success, 2 bad input,
1 unexpected failure.
"""

from __future__ import annotations

from .. import stopping

if stopping.is_program():  # the `tracekit` command: stops are handled from here on, before the imports below
    stopping.install()

import typer  # noqa: E402

from . import cache as cache_cmd  # noqa: E402
from . import common  # noqa: E402
from . import compare as compare_cmd  # noqa: E402
from . import detect as detect_cmd  # noqa: E402
from . import explain as explain_cmd  # noqa: E402
from . import export as export_cmd  # noqa: E402
from . import plugins as plugins_cmd  # noqa: E402
from . import report as report_cmd  # noqa: E402
from . import run as run_cmd  # noqa: E402
from . import validate as validate_cmd  # noqa: E402


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
    """Console-script entry point. Ctrl-C, SIGTERM and SIGHUP (a job scheduler's stop, a closed
    terminal) stop the work: one `interrupted` line, finished work kept, exit code 130, 143 or 129
    (`tracekit.stopping`); the same command resumes."""
    stopping.install()
    try:
        build_app()()
    except SystemExit as exc:
        # A stop that came when the command's body had ended (or before it began, while the
        # arguments were parsed) is only recorded: the command still never exits 0 after one.
        if stopping.requested() is not None and exc.code in (0, None):
            name = stopping.signal_name()
            try:
                common.err_console.print(
                    f"[yellow]interrupted[/]{f' ({name})' if name else ''}: the stop came as the command "
                    "ended; its work was complete",
                    soft_wrap=True,
                )
            except OSError:
                pass
            raise SystemExit(stopping.exit_code()) from None
        raise
    finally:
        stopping.ignore()  # the exit code is decided: a stop while the interpreter shuts down changes nothing
