"""The `local` executor: every stage in this process, with the driver's model and data reader."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..executing import Chunk, Done, Job, Stage


class Held:
    """A value shared with in-process workers: the object itself."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def get(self) -> Any:
        return self.value


class LocalExecutor:
    """Runs each stage on all its chunks at once, in this process (one shard)."""

    def __init__(self) -> None:
        self.info: dict[str, Any] = {"name": "local"}
        self.context: Any = None  # the driver's run context

    def open(self) -> None:
        pass

    def start(self, job: Job, here: Any) -> None:
        self.context = here

    def share(self, value: Any) -> Held:
        return Held(value)

    def map(self, stage: Stage, pieces: list[Chunk]) -> Iterator[Done]:
        assert self.context is not None, "start() first"
        for images in stage.run(self.context, pieces):
            yield Done(images)

    def close(self) -> None:
        self.context = None
