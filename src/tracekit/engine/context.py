"""The run context: one object, built by one function (`build_context`) from the resolved spec,
holding what every stage needs wherever it runs: device, model, dataset and reader, attacks, the
run directory, the attack cache and the fitted detectors shared with it.

The driver builds one (`engine.driver.prepare`), every executor worker builds its own from the
run's `Job` (`worker_context`, which also checks that the worker sees the driver's run directory,
cache and weights), and `detect`/`explain` build one to score single images. The dataset, its
reader and the attacks are built on first use, so scoring single images never builds them.

Every per-image stage (clean prediction, an attack, a detector's scores of a set of images) is
a small picklable object with `table` (where its results go, one Parquet file per chunk) and
`run(context, pieces)` (`tracekit.executing.Stage`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import torch

from ..checks import component
from ..compute import apply as apply_compute
from ..errors import TracekitError
from ..executing import Chunk, Job, Shared
from ..layout import KEY_FILE, RunLayout
from ..plugins import registry
from ..protocols import Attack, Dataset, Detector, LoadedModel
from ..spec import Spec
from .attack_cache import model_fingerprint
from .controls import randomized_copy
from .device import resolve_device
from .reading import Reader, default_workers
from .tables import Table

TRAINED, RANDOMIZED = "trained", "randomized"  # the model a detector is fitted to and scores with


def build(kind: str, cfg: dict[str, Any]) -> Any:
    """Build a resolved component spec through its registry."""
    params = {k: v for k, v in cfg.items() if k not in ("name", "label")}
    return registry(kind).create(str(cfg["name"]), **params)


@dataclass(frozen=True)
class DetectorHandle:
    """A fitted detector as stages name it: `tag` (unique in a run), the model it belongs to
    (`TRAINED` or `RANDOMIZED`) and the fitted object, shared through the executor."""

    tag: str
    model: str
    detector: Shared
    who: str = "the detector"  # `detector 'name' (distribution)`, for messages


class RunContext:
    """A process's model, data reader, attacks and fitted detectors for one run, built once
    (`build_context`) and reused by every stage it runs."""

    def __init__(
        self,
        spec: Spec,
        device: torch.device,
        model: LoadedModel,
        work: Path | None = None,
        cache_root: Path | None = None,
        num_workers: int | None = None,
    ) -> None:
        """`work`: the run's (work) directory, where its tables are; `cache_root`: the attack
        cache's; `num_workers`: decoding processes when the spec leaves them unset."""
        self.spec, self.device, self.model = spec, device, model
        self.work, self.cache_root = work, cache_root
        self.num_workers = spec.num_workers if spec.num_workers is not None else (
            default_workers() if num_workers is None else num_workers
        )  # fmt: skip
        self.model_who = component("model", str(spec.model["name"]))  # names the model in messages
        self._models: dict[str, LoadedModel] = {TRAINED: model}
        self._detectors: dict[str, Detector] = {}

    @cached_property
    def fingerprint(self) -> str:
        """Of the model's weights: keys the attack cache, recorded in detector.json."""
        return model_fingerprint(self.model.module)

    @cached_property
    def dataset(self) -> Dataset:
        return build("dataset", {k: v for k, v in self.spec.data.items() if k != "labels"})  # labels: the engine's

    @cached_property
    def reader(self) -> Reader:
        return Reader(self.dataset, self.model, self.num_workers, pin=self.device.type == "cuda")

    @cached_property
    def attacks(self) -> list[Attack]:
        """The spec's attacks, built once, in spec order."""
        return [build("attack", cfg) for cfg in self.spec.attacks]

    @property
    def layout(self) -> RunLayout:
        if self.work is None:
            raise TracekitError("this context has no run directory")  # a bug: detect's contexts run no stages
        return RunLayout(self.work)

    def table(self, name: str) -> Table:
        return Table(self.layout.root, name)

    def model_for(self, variant: str) -> LoadedModel:
        """The trained model, or its cascading-randomized copy (the randomized-model control)."""
        if variant not in self._models:
            module, _ = randomized_copy(self.model.module, self.spec.seed)
            self._models[variant] = dataclasses.replace(self.model, module=module)
        return self._models[variant]

    def detector(self, handle: DetectorHandle) -> Detector:
        """The fitted detector of `handle`, fetched once per process."""
        if handle.tag not in self._detectors:
            self._detectors[handle.tag] = handle.detector.get()
        return self._detectors[handle.tag]


def build_context(
    spec: Spec,
    device: torch.device,
    work: Path | None = None,
    cache_root: Path | None = None,
    num_workers: int | None = None,
) -> RunContext:
    """The run context of `spec` on `device`: the model loaded and set up as `compute:` says;
    dataset, reader and attacks built when first used."""
    model: LoadedModel = build("model", spec.model)
    model.module.to(device).eval()
    apply_compute(model.module, spec.compute, device)
    return RunContext(spec, device, model, work, cache_root, num_workers)


def worker_context(job: Job, num_workers: int | None = None) -> RunContext:
    """A worker's context from the job (`Job.builder`): checked to see the driver's run directory
    and attack cache and to load the driver's weights, with the driver's number of torch threads
    (so that CPU results are bit-identical to the driver's)."""
    try:
        seen = (job.work / KEY_FILE).read_text()
    except OSError:
        seen = None
    if seen != job.stage_key:
        raise TracekitError(
            f"this worker cannot see the run directory {job.work} (no {KEY_FILE} of this run there); "
            "--out must be on storage every node sees (a shared file system)"
        )
    if not job.cache_root.is_dir():
        raise TracekitError(
            f"this worker cannot see the attack cache {job.cache_root}; put it on storage every node sees "
            "(TRACEKIT_CACHE)"
        )
    torch.set_num_threads(job.threads)
    context = build_context(job.spec, resolve_device(job.spec.device), job.work, job.cache_root, num_workers)
    if context.fingerprint != job.fingerprint:
        raise TracekitError(
            f"model {job.spec.model['name']}: this worker loaded other weights than the driver; every node must "
            "load the same weights (a shared cache directory, or the same files at the same path)"
        )
    return context


class TableStage(Protocol):
    """A per-image stage of the engine: `tracekit.executing.Stage` whose results go to `table`,
    one file per chunk (so the driver knows which chunks are done)."""

    table: Table

    def run(self, context: RunContext, pieces: list[Chunk]) -> Iterator[int]: ...
