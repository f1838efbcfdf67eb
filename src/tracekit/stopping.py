"""Stops that always stop: Ctrl-C (SIGINT), SIGTERM (a job scheduler's stop) and SIGHUP (a closed
terminal) end a command with one `interrupted` line and exit code 128 + the signal's number (130,
143, 129), whatever the signal interrupted.

Python turns a signal into an exception in whatever the main thread was running. Where that is a
finalizer (a torch DataLoader iterator's `__del__` shutting its workers down), a fork hook (the
`logging` module's, as a DataLoader starts its workers) or a library that catches
`KeyboardInterrupt` itself, the exception is printed as "Exception ignored ..." or dropped, and the
work would go on to exit 0. So the first stop is *recorded* here before it is raised, and the
record is checked where work goes on (`check`: every progress step, every stage's end, the
command's end): a stop that was swallowed is raised again there, and the command never exits 0
after one. Nothing a finalizer raises once a stop was asked for is printed ("Exception ignored").

The handlers raise only while a command's body runs (`raising`); before it (parsing) and after it
(printing the line, exiting) a stop is only recorded and the exit code follows it (`exit_code`). A
second stop while the first is being handled raises again (it stops what the first one left
running) but never prints more. Processes forked from this one (DataLoader workers) ignore Ctrl-C
and SIGHUP, which a terminal sends to the whole process group: their parent ends them; SIGTERM
ends them at once and quietly (`worker_ignores_stops`).

The library API (`tracekit.run` in a notebook) installs nothing: Python's own Ctrl-C applies.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

STOPS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))

_requested: int | None = None  # the number of the first stop signal received
_raising = False  # whether a stop raises KeyboardInterrupt now (inside a command's body)
_pid: int | None = None  # the process the handlers were installed in


def install() -> None:
    """Handle SIGINT, SIGTERM and SIGHUP as stops (the CLI's entry point calls this, in the main
    thread), and keep Python from printing a stop it could not raise ("Exception ignored"). A
    signal this process was started with ignored (`nohup` ignores SIGHUP, a shell without job
    control SIGINT for a background job) stays ignored."""
    global _pid
    _pid = os.getpid()
    for signum in STOPS:
        if signal.getsignal(signum) != signal.SIG_IGN:  # ignored on purpose (`nohup`, a background job): left so
            signal.signal(signum, _handler)
    if not getattr(sys.unraisablehook, "_tracekit_stops", False):
        sys.unraisablehook = _quiet_unraisable(sys.unraisablehook)
    quiet_threads()


def reset() -> None:
    """Forget a recorded stop (tests)."""
    global _requested, _raising
    _requested, _raising = None, False


def requested() -> int | None:
    """The signal number of the stop asked for, if one was."""
    return _requested


def exit_code(default: int = 130) -> int:
    """128 + the stop signal's number (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP); `default` when no
    signal was received (a `KeyboardInterrupt` raised by code)."""
    return 128 + _requested if _requested is not None else default


def signal_name() -> str | None:
    """`SIGTERM`, ... for the stop asked for (None when none was, or for Ctrl-C, which says itself)."""
    if _requested is None or _requested == signal.SIGINT:
        return None
    return signal.Signals(_requested).name


def check() -> None:
    """Raise `KeyboardInterrupt` when a stop was asked for inside a command and swallowed where it
    landed (in the main thread, where Python raises stops). Cheap: called at every progress step."""
    if _requested is not None and _raising and threading.current_thread() is threading.main_thread():
        raise KeyboardInterrupt


@contextmanager
def raising() -> Iterator[None]:
    """While the body runs, a stop raises `KeyboardInterrupt` (and one asked for already raises at
    once); outside it a stop is only recorded."""
    global _raising
    outer, _raising = _raising, True
    try:
        check()
        yield
        check()
    finally:
        _raising = outer


def ignore() -> None:
    """Ignore stops from now on: the command has decided its exit code (and Python, shutting down,
    would otherwise put the default actions back, so that a late SIGTERM killed the process)."""
    for signum in STOPS:
        _set(signum, signal.SIG_IGN)


def worker_ignores_stops() -> None:
    """In a worker process (a DataLoader's): Ctrl-C and SIGHUP, which reach the whole process group,
    are ignored (the parent records them and ends its workers); SIGTERM keeps its default action,
    ending the worker at once and quietly, as torch's and multiprocessing's `terminate()` of a
    stuck worker expect."""
    for signum in STOPS:
        _set(signum, signal.SIG_DFL if signum == getattr(signal, "SIGTERM", None) else signal.SIG_IGN)


def _set(signum: int, action: Any) -> None:
    try:
        signal.signal(signum, action)
    except (OSError, ValueError):  # not the main thread: nothing to do
        pass


def _handler(signum: int, frame: Any) -> None:
    global _requested
    if os.getpid() != _pid:  # a forked child (a DataLoader worker before its init ran): as `worker_ignores_stops`
        worker_ignores_stops()
        if signum == getattr(signal, "SIGTERM", None):
            os.kill(os.getpid(), signum)
        return
    if _requested is None:
        _requested = signum
    if _raising:
        raise KeyboardInterrupt


def _quiet_unraisable(default: Any) -> Any:
    def hook(args: Any) -> None:
        if _requested is not None:
            # A stop that landed in a finalizer or a fork hook (recorded, raised at the next check), or
            # what a finalizer raised while the command stops (a DataLoader whose workers the stop
            # ended): the `interrupted` line says it all.
            return
        default(args)

    hook._tracekit_stops = True  # type: ignore[attr-defined]
    return hook


def quiet_threads() -> None:
    """Keep threads from printing what a stop (or a peer gone away) caused: an error in
    multiprocessing's file-descriptor server thread (`(_serve)`: it hands a batch's tensors to the
    other process, whose end of the connection a stop has closed) is dropped when it is an
    `OSError` or `EOFError`, and any thread's error once a stop was asked for (the `interrupted`
    line says it all); other threads' errors are reported as usual. That server thread reports
    through `sys.excepthook` itself (`multiprocessing.resource_sharer`), other threads through
    `threading.excepthook`: both are wrapped, `sys.excepthook` only for threads other than the
    main one. Called in the main process (`install`) and in every DataLoader worker."""
    if getattr(threading.excepthook, "_tracekit_stops", False):
        return

    def quiet(thread: threading.Thread | None, exc_type: type[BaseException]) -> bool:
        serving = thread is not None and thread.name.endswith("(_serve)")
        return _requested is not None or (serving and issubclass(exc_type, (OSError, EOFError)))

    default_thread = threading.excepthook

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if not quiet(args.thread, args.exc_type):
            default_thread(args)

    default_sys = sys.excepthook

    def sys_hook(exc_type: type[BaseException], value: BaseException, tb: Any) -> None:
        thread = threading.current_thread()
        if thread is threading.main_thread() or not quiet(thread, exc_type):
            default_sys(exc_type, value, tb)

    thread_hook._tracekit_stops = True  # type: ignore[attr-defined]
    threading.excepthook = thread_hook
    sys.excepthook = sys_hook


def is_program() -> bool:
    """Whether this process is the `tracekit` command (its console script or `python -m tracekit`),
    not a program importing tracekit's CLI (a test, a notebook), whose stops are its own."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None:
        return spec.name in ("tracekit", "tracekit.__main__")
    return os.path.basename(getattr(main, "__file__", None) or "") in ("tracekit", "tracekit.exe", "tracekit-script.py")
