"""Reading a dataset in chunks of images: the first stage of every per-image stage.

A chunk is a named list of dataset positions (`Chunk`); stages cut their images into chunks of
`batch_size` and process one chunk per device batch. A dataset with random access
(`RandomAccessDataset`: imagefolder, npz, digits, synthetic) is read through a torch
`DataLoader` whose batches are exactly the chunks asked for, with `num_workers` worker
processes decoding ahead of the model (pinned memory on a GPU), so only the chunks in flight are
in memory. A dataset that only iterates (`samples`, e.g. a third-party plugin) is read in one
pass, keeping the images of the chunk being filled.

Items are checked as they arrive: image size against the model's input, labels against its
classes; unreadable items (`Unreadable`) are reported once, skipped and listed in their batch
(`Batch.skipped`, which the clean stage keeps in the `skipped` table). Every chunk asked for
gives one batch, in order, even when none of its items could be read: such a batch is `empty`
(no images, its tensors shaped for the model all the same), so a stage records the chunk as done
and what was skipped, and never hands the model an empty batch.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import TracekitError
from ..executing import Chunk
from ..protocols import Dataset, LoadedModel, RandomAccessDataset, Unreadable


@dataclass
class Batch:
    """Images of one chunk that could be read, in the chunk's order."""

    chunk: Chunk
    index: np.ndarray  # dataset positions of the images below
    ids: list[str]
    images: torch.Tensor  # [B,C,H,W] float32 in [0, 1]
    labels: torch.Tensor  # [B] long: the dataset's labels
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)  # unreadable items: id -> reason

    @property
    def empty(self) -> bool:
        """None of the chunk's items could be read (`skipped` says why): nothing to compute on."""
        return not self.ids


def chunks(index: np.ndarray, size: int, prefix: str = "") -> list[Chunk]:
    """`index` cut into named chunks of `size` (the last may be shorter)."""
    index = np.asarray(index, dtype=np.int64)
    return [
        Chunk(f"{prefix}{k:06d}", index[start : start + size]) for k, start in enumerate(range(0, len(index), size))
    ]


def default_workers() -> int:
    """Decoding processes when the spec leaves `num_workers` unset: one per core the process
    may use beyond the one that drives the model, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cores - 1))


def model_shape(model: LoadedModel) -> LoadedModel:
    """The model's input spec, classes and info with a placeholder module: what a dataset's
    `item` needs, cheap to hand to worker processes."""
    return dataclasses.replace(model, module=nn.Identity())


class Reader:
    """Reads chunks of a dataset for a model, checking every item (`where` names the spec field)."""

    def __init__(
        self, dataset: Dataset, model: LoadedModel, num_workers: int, pin: bool = False, where: str = "data"
    ) -> None:
        """`pin`: page-locked batches, for a model on a GPU."""
        self.dataset, self.model, self.where = dataset, model, where
        self.num_workers, self.pin = num_workers, pin
        self.random_access = isinstance(dataset, RandomAccessDataset)
        self.reported: set[str] = set()
        if self.random_access and len(self):  # whole-dataset errors and choices here, before any worker
            self._checked(*_first(_Items(dataset, model_shape(model), where)))  # type: ignore[arg-type]

    def __len__(self) -> int:
        """The number of items (random access only)."""
        return len(self.dataset)  # type: ignore[arg-type]

    def read(self, todo: Sequence[Chunk]) -> Iterator[Batch]:
        """The readable images of each chunk of `todo`, in order."""
        if not todo:
            return
        if self.random_access:
            yield from self._loader(todo)
        else:
            yield from self._iterate(todo)

    def read_all(self, size: int, skip: set[str]) -> Iterator[Batch]:
        """Every item of an iterating dataset in one pass, in chunks of `size` positions named as
        `chunks` names them; chunks named in `skip` are passed over."""
        items: list[tuple[int, str, torch.Tensor, int]] = []
        for position, (sample_id, image, label) in enumerate(self.dataset.samples(self.model)):
            items.append((position, str(sample_id), image, int(label)))
            if len(items) == size:
                yield from self._full(items, size, skip)
                items = []
        if items:
            yield from self._full(items, size, skip)

    def _full(self, items: list[tuple[int, str, torch.Tensor, int]], size: int, skip: set[str]) -> Iterator[Batch]:
        chunk = Chunk(f"{items[0][0] // size:06d}", np.array([p for p, *_ in items], dtype=np.int64))
        if chunk.name not in skip:
            yield self._from_items(chunk, items)

    def _loader(self, todo: Sequence[Chunk]) -> Iterator[Batch]:
        from torch.utils.data import DataLoader

        items = _Items(self.dataset, model_shape(self.model), self.where)  # type: ignore[arg-type]
        workers = min(self.num_workers, len(todo))
        loader = DataLoader(
            items,
            batch_sampler=[c.index.tolist() for c in todo],
            num_workers=workers,
            collate_fn=_collate,
            pin_memory=self.pin,
            prefetch_factor=4 if workers else None,
            persistent_workers=False,
            worker_init_fn=_worker_init if workers else None,
        )
        for chunk, (positions, ids, images, labels, unreadable) in zip(todo, loader):
            yield self._checked(chunk, np.asarray(positions, dtype=np.int64), ids, images, labels, unreadable)

    def _iterate(self, todo: Sequence[Chunk]) -> Iterator[Batch]:
        wanted = {int(i): k for k, chunk in enumerate(todo) for i in chunk.index}
        filled: list[list[tuple[int, str, torch.Tensor, int]]] = [[] for _ in todo]
        remaining = [len(c.index) for c in todo]
        next_chunk = 0
        for position, (sample_id, image, label) in enumerate(self.dataset.samples(self.model)):
            k = wanted.get(position)
            if k is None:
                continue
            filled[k].append((position, str(sample_id), image, int(label)))
            remaining[k] -= 1
            while next_chunk < len(todo) and remaining[next_chunk] == 0:
                yield self._from_items(todo[next_chunk], filled[next_chunk])
                filled[next_chunk] = []
                next_chunk += 1
        while next_chunk < len(todo):  # the dataset yielded fewer items than before
            yield self._from_items(todo[next_chunk], filled[next_chunk])
            next_chunk += 1

    def _from_items(self, chunk: Chunk, items: list[tuple[int, str, torch.Tensor, int]]) -> Batch:
        for _, sample_id, image, _ in items:
            check_size(self.where, sample_id, image, self.model)
        images = (
            torch.stack([img.float() for _, _, img, _ in items]) if items else torch.zeros(0, *self.model.input_size)
        )
        return self._checked(
            chunk,
            np.array([p for p, *_ in items], dtype=np.int64),
            [sid for _, sid, _, _ in items],
            images,
            torch.tensor([lab for *_, lab in items], dtype=torch.long),
            [],
        )

    def _checked(
        self,
        chunk: Chunk,
        positions: np.ndarray,
        ids: list[str],
        images: torch.Tensor,
        labels: torch.Tensor,
        unreadable: list[Unreadable],
    ) -> Batch:
        for item in unreadable:
            if isinstance(item, _Problem):
                raise TracekitError(str(item))
            if item.sample_id not in self.reported:
                self.reported.add(item.sample_id)
                warnings.warn(f"{self.where}: skipping unreadable image {item.sample_id} ({item.reason})", stacklevel=4)
        if not ids:  # every item unreadable: an empty batch of the model's shape
            images = torch.zeros(0, *self.model.input_size)
            labels = torch.zeros(0, dtype=torch.long)
            positions = np.zeros(0, dtype=np.int64)
        bad = labels[(labels < 0) | (labels >= self.model.num_classes)]
        if len(bad):
            raise TracekitError(
                f"{self.where}: label {int(bad[0])} is outside the model's {self.model.num_classes} classes"
            )
        return Batch(chunk, positions, ids, images, labels, {item.sample_id: item.reason for item in unreadable})


def _first(items: _Items) -> tuple[Chunk, np.ndarray, list[str], torch.Tensor, torch.Tensor, list[Unreadable]]:
    positions, ids, images, labels, unreadable = _collate([items[0]])
    return Chunk("first", np.zeros(1, np.int64)), np.asarray(positions, dtype=np.int64), ids, images, labels, unreadable


class _Problem(str):
    """A whole-dataset error raised by `item` in a worker process, re-raised in the main one."""


class _Items(torch.utils.data.Dataset):
    """A random-access dataset's items for one model, as a map-style torch dataset. Any failure
    to load one item makes it `Unreadable` (the run goes on without it); a `TracekitError` (the
    dataset does not fit the model) comes back as a `_Problem`, so the main process raises it
    with its own message rather than the worker's traceback."""

    def __init__(self, dataset: RandomAccessDataset, model: LoadedModel, where: str) -> None:
        self.dataset, self.model, self.where = dataset, model, where

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, object]:
        try:
            item = self.dataset.item(index, self.model)
            if not isinstance(item, Unreadable):
                sample_id, image, label = item
                check_size(self.where, str(sample_id), image, self.model)
                item = (str(sample_id), image.float(), int(label))
        except TracekitError as exc:
            return index, _Problem(str(exc))
        except Exception as exc:  # a corrupt item must not stop the run
            return index, Unreadable(f"item {index}", f"{type(exc).__name__}: {exc}")
        return index, item


def check_size(where: str, sample_id: str, image: torch.Tensor, model: LoadedModel) -> None:
    expected = tuple(model.input_size)
    if tuple(image.shape) != expected:
        raise TracekitError(
            f"{where}: image '{sample_id}' is {'x'.join(map(str, image.shape))} but the model takes "
            f"{'x'.join(map(str, expected))}; every image must have the model's input size "
            "(resize them, or use a dataset that resizes, like imagefolder)"
        )


def _collate(
    items: list[tuple[int, object]],
) -> tuple[list[int], list[str], torch.Tensor, torch.Tensor, list[Unreadable]]:
    for _, item in items:
        if isinstance(item, _Problem):
            return [], [], torch.zeros(0), torch.zeros(0, dtype=torch.long), [item]  # type: ignore[list-item]
    good = [(i, it) for i, it in items if not isinstance(it, Unreadable)]
    unreadable = [it for _, it in items if isinstance(it, Unreadable)]
    images = torch.stack([it[1] for _, it in good]) if good else torch.zeros(0)
    labels = torch.tensor([it[2] for _, it in good], dtype=torch.long)
    return [i for i, _ in good], [it[0] for _, it in good], images, labels, unreadable


def _worker_init(worker_id: int) -> None:
    """In a decoding worker: nothing printed when the run stops. Ctrl-C at a terminal (and SIGHUP)
    reaches the whole process group: the worker ignores it, the main process records it and ends
    its workers; SIGTERM ends the worker at once, quietly (`tracekit.stopping.worker_ignores_stops`).
    And no traceback when the worker's multiprocessing thread hands a batch's file descriptors to
    the main process, whose end of the connection is gone (`tracekit.stopping.quiet_threads`)."""
    from ..stopping import quiet_threads, worker_ignores_stops

    worker_ignores_stops()
    quiet_threads()
