"""Progress bars for long work (training, attacking, scoring).

Off by default so that library use stays quiet; the CLI switches them on. Bars go to stderr
and show items/s and an ETA. Every step checks for a stop that was asked for and swallowed where
it landed (`tracekit.stopping.check`), shown or not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from .stopping import check

console = Console(stderr=True)
_enabled = False


def enable(flag: bool = True) -> None:
    """Show progress bars (the CLI calls this)."""
    global _enabled
    _enabled = flag


def _speed(task: Task) -> float | None:
    """Items per second: rich's estimate over its recent window, else (steps slower than that
    window, as a search attack's chunks) the mean over the work done since the bar started."""
    speed = task.finished_speed or task.speed
    if speed is None and task.elapsed:
        worked = task.completed - task.fields.get("already", 0)
        speed = worked / task.elapsed if worked > 0 else None
    return speed


class _RateColumn(ProgressColumn):
    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = _speed(task)
        return Text("" if speed is None else f"{speed:,.1f} {self.unit}/s", style="progress.data.speed")


class _RemainingColumn(TimeRemainingColumn):
    """The time left at the rate `_speed` gives (rich's own needs two updates within its window)."""

    def render(self, task: Task) -> Text:
        speed = _speed(task)
        if task.finished or task.total is None or not speed:
            return super().render(task)
        left = max(task.total - task.completed, 0) / speed
        minutes, seconds = divmod(int(left), 60)
        hours, minutes = divmod(minutes, 60)
        return Text(f"{hours}:{minutes:02d}:{seconds:02d}", style="progress.remaining")


@contextmanager
def progress(
    description: str, total: float | None, unit: str = "img", keep: bool = False, done: float = 0
) -> Iterator[Callable[[float], None]]:
    """A bar for `total` units of work; yields `advance(n)`. Short steps' bars vanish when done;
    `keep=True` leaves the finished bar on screen (training, attacks: the long work). `done`
    units are finished already (a resumed run's cache hits): they fill the bar but do not count
    towards the rate, so the ETA is about the work left."""
    if not _enabled or not (keep or console.is_terminal):
        # A vanishing bar has nothing to leave in a log; rich would leave a blank line instead.
        yield lambda n=1: check()
        check()
        return
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        _RemainingColumn(),
    )
    with Progress(*columns, console=console, transient=not keep) as bar:
        task = bar.add_task(description, total=total, completed=done, already=done)
        if total is not None and done >= total:
            bar.update(task, completed=done)  # marks it finished: no spinner, no pending ETA

        def advance(n: float = 1) -> None:
            check()
            bar.advance(task, n)

        yield advance
    check()
