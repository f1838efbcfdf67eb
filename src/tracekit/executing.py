"""The executor contract: what a third-party executor (SLURM, Dask, ...) imports, and all it needs.

A run's per-image stages (clean prediction, an attack, a detector's scores of a set of images)
are cut into named chunks of dataset positions (`Chunk`). An executor decides where a stage
runs on them: `map(stage, pieces)` runs `stage.run(context, shard)` for shards of `pieces`, in
this process or on workers, and yields a `Done` per finished shard. A worker builds its run
context once from the run's `Job` (`job.context()`), with the same model, data reader and
attacks as the driver's; a fitted detector reaches the workers through `share(value)`.

Because a chunk's results depend only on the chunk (every random draw is seeded from the run
seed and image ids) and are written atomically, chunk by chunk, into the run directory, a shard
may be retried and the union of the results is the same whichever executor, worker count or
shard split computed them.

Nothing here imports the engine: the `Job` carries the engine's context builder (a module-level
function, so it pickles by reference), and contexts and stages are opaque to an executor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from .spec import Spec


@dataclass(frozen=True)
class Chunk:
    """A named slice of the dataset's positions (sorted), processed as one device batch."""

    name: str
    index: np.ndarray


@dataclass
class Done:
    """What finishing part of a stage on a worker reports: its images and its warnings."""

    images: int
    warnings: list[str] = field(default_factory=list)


class Stage(Protocol):
    """A per-image stage: `run` processes the chunks `pieces` in a worker's run `context` (built
    from the job) and yields the number of images of each chunk it finished. Stages are small and
    picklable; their results go to the run directory, not back through the executor."""

    def run(self, context: Any, pieces: list[Chunk]) -> Iterator[int]: ...


@runtime_checkable
class Shared(Protocol):
    """A value handed to an executor's workers (a fitted detector): `get()` returns it there."""

    def get(self) -> Any: ...


@dataclass(frozen=True)
class Job:
    """What a worker needs to build its run context: the resolved spec, where the run's tables and
    the attack cache are (storage every worker must see), the model's fingerprint (a worker that
    loads other weights refuses to work), the driver's CPU thread count (some CPU kernels' float
    results depend on it) and the engine's context builder."""

    spec: Spec
    work: Path
    cache_root: Path
    fingerprint: str
    stage_key: str  # the content of the run directory's key file: proves a worker sees this run's directory
    threads: int
    builder: Callable[[Job, int | None], Any]

    def context(self, num_workers: int | None = None) -> Any:
        """A worker's run context (model, data reader with `num_workers` decoding processes, attacks),
        checked against the driver's: the same run directory, cache and weights."""
        return self.builder(self, num_workers)


@runtime_checkable
class Executor(Protocol):
    """Decides where the per-image stages of a run happen; the driver keeps the global steps
    (split bookkeeping, detector fit, calibration, metrics, report).

    `open()` comes first, before any work: connect to the compute, fail fast if it cannot be
    reached. `start(job, here)` is called once per run: `job` is what a worker needs to build its
    own run context (`job.context()`), `here` the driver's context, for an executor that works in
    this process. `map(stage, pieces)` runs `stage.run(context, shard)` for shards of `pieces` and
    yields a `Done` per finished shard, in any order; a shard may be retried (its results are
    files written atomically per chunk). On `KeyboardInterrupt` it stops its workers' work and
    re-raises. `share(value)` makes a value (a fitted detector) available to the workers.
    `close()` releases the workers. `info` is what the run's provenance records about it.
    """

    info: dict[str, Any]

    def open(self) -> None: ...

    def start(self, job: Job, here: Any) -> None: ...

    def share(self, value: Any) -> Shared: ...

    def map(self, stage: Stage, pieces: list[Chunk]) -> Iterator[Done]: ...

    def close(self) -> None: ...
