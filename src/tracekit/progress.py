"""Progress bars for long work (training, attacking, scoring).

Off by default so that library use stays quiet; the CLI switches them on. Bars go to stderr
and show items/s and an ETA.
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

console = Console(stderr=True)
_enabled = False


def enable(flag: bool = True) -> None:
    """Show progress bars (the CLI calls this)."""
    global _enabled
    _enabled = flag


class _RateColumn(ProgressColumn):
    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.1f} {self.unit}/s", style="progress.data.speed")


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
        yield lambda n=1: None
        return
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=not keep) as bar:
        task = bar.add_task(description, total=total, completed=done)
        if total is not None and done >= total:
            bar.update(task, completed=done)  # marks it finished: no spinner, no pending ETA
        yield lambda n=1: bar.advance(task, n)
