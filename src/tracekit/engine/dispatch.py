"""Running one per-image stage through the run's executor, from the driver: the chunks its table
does not hold yet go to the executor, one progress bar (images/s, ETA) follows the finished
ones whichever worker finished them, workers' warnings are re-issued here, and Ctrl-C says what
was kept and how to resume (also when the stop was swallowed where it landed and only recorded:
`tracekit.stopping`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

from ..errors import Interrupted
from ..executing import Chunk, Executor
from ..progress import progress
from ..stopping import check
from .context import TableStage


def execute(
    executor: Executor,
    stage: TableStage,
    pieces: list[Chunk],
    description: str,
    keep: bool = False,
    kept: Callable[[str, int, int], str] | None = None,
) -> None:
    """Run `stage` on every chunk of `pieces` not yet in its table. Chunks already there are
    counted first, so the bar's rate and ETA cover only the work left. `kept(description, done,
    total)` words an interruption (default: the finished chunks are kept in the run directory)."""
    finished = stage.table.done()
    todo = [p for p in pieces if p.name not in finished]
    total = sum(len(p.index) for p in pieces)
    done = total - sum(len(p.index) for p in todo)
    if done and keep:
        description += f" ({done} done)"
    with progress(description, total=total, keep=keep, done=done) as advance:
        try:
            for part in executor.map(stage, todo):
                for message in part.warnings:
                    warnings.warn(message, stacklevel=2)
                done += part.images
                advance(part.images)
            check()  # a stop swallowed where it landed (a worker's shutdown, a fork hook) ends the stage
        except Interrupted:
            raise
        except KeyboardInterrupt:
            raise Interrupted((kept or _kept)(description, done, total)) from None


def _kept(description: str, done: int, total: int) -> str:
    return (
        f"{description}: stopped at {done}/{total} images; finished work is kept in the run's directory "
        "(`.<name>.partial` beside --out) and the attack cache: run the same command (same --out) to resume"
    )
