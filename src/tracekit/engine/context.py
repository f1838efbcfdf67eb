"""What a per-image stage needs wherever it runs: the `Job` an executor ships to its workers, and
the `Context` each worker builds from it once (model, data reader, attacks, fitted detectors).

Every per-image stage (clean prediction, an attack, a detector's scores of one set of images) is
a small picklable object with `table` (where its results go, one Parquet file per chunk) and
`run(context, pieces)`, which processes the named chunks `pieces` and yields how many images
each finished. An executor (`tracekit.protocols.Executor`) decides where `run` happens: the
`local` one calls it in this process with the driver's own context, `ray` in long-lived actors
that each built their context from the job with `build_context`. Because a chunk's results
depend only on the chunk (every random draw is seeded from the run seed and image ids), the
union of the files is the same whichever executor, worker count or shard split computed them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from ..checks import component
from ..compute import apply as apply_compute
from ..errors import TracekitError
from ..plugins import registry
from ..protocols import Attack, Detector, LoadedModel, Shared
from ..spec import Spec
from .attack_cache import model_fingerprint
from .controls import randomized_copy
from .device import resolve_device
from .reading import Chunk, Reader, default_workers
from .tables import Table

KEY_FILE = ".stage-key"  # in the run's work directory: what its tables were computed for
TRAINED, RANDOMIZED = "trained", "randomized"  # the model a detector is fitted to and scores with


def build(kind: str, cfg: dict[str, Any]) -> Any:
    """Build a resolved component spec through its registry."""
    params = {k: v for k, v in cfg.items() if k not in ("name", "label")}
    return registry(kind).create(str(cfg["name"]), **params)


def load_model(spec: Spec, device: torch.device) -> LoadedModel:
    """The spec's model on `device`, in eval mode, set up as `compute:` says."""
    model: LoadedModel = build("model", spec.model)
    model.module.to(device).eval()
    apply_compute(model.module, spec.compute, device)
    return model


def dataset_spec(spec: Spec) -> dict[str, Any]:
    """The dataset's component spec (the engine's own `labels:` option removed)."""
    return {k: v for k, v in spec.data.items() if k != "labels"}


@dataclass(frozen=True)
class Job:
    """What a worker needs to build its `Context`: the resolved spec, where the run's tables and
    the attack cache are (storage every worker must see) and the model's fingerprint (a worker
    that loads other weights refuses to work)."""

    spec: Spec
    work: Path
    cache_root: Path
    fingerprint: str
    stage_key: str  # the content of `work/KEY_FILE`: proves a worker sees this run's directory
    threads: int  # the driver's torch CPU threads: some CPU kernels' float results depend on the count


@dataclass(frozen=True)
class DetectorHandle:
    """A fitted detector as stages name it: `tag` (unique in a run), the model it belongs to
    (`TRAINED` or `RANDOMIZED`) and the fitted object, shared through the executor."""

    tag: str
    model: str
    detector: Shared
    who: str = "the detector"  # `detector 'name' (distribution)`, for messages


class Context:
    """A worker's model, reader, attacks and fitted detectors, built once and reused by every
    stage it runs."""

    def __init__(
        self, spec: Spec, device: torch.device, work: Path, cache_root: Path, model: LoadedModel, reader: Reader,
        attacks: list[Attack],
    ) -> None:
        self.spec, self.device, self.work, self.cache_root = spec, device, work, cache_root
        self.model, self.reader, self.attacks = model, reader, attacks
        self.model_who = component("model", str(spec.model["name"]))  # names the model in messages
        self._models: dict[str, LoadedModel] = {TRAINED: model}
        self._detectors: dict[str, Detector] = {}

    def table(self, name: str) -> Table:
        return Table(self.work, name)

    def model_for(self, variant: str) -> LoadedModel:
        """The trained model, or its cascading-randomized copy (the randomized-model control)."""
        if variant not in self._models:
            module, _ = randomized_copy(self.model.module, self.spec.seed)
            self._models[variant] = dataclasses.replace(self.model, module=module)
        return self._models[variant]

    def detector(self, handle: DetectorHandle) -> Detector:
        """The fitted detector of `handle`, fetched once per worker."""
        if handle.tag not in self._detectors:
            self._detectors[handle.tag] = handle.detector.get()
        return self._detectors[handle.tag]


def build_context(job: Job, num_workers: int | None = None) -> Context:
    """A worker's context from the job: the model (checked against the driver's fingerprint),
    the dataset, the attacks, and the driver's number of torch threads (so that CPU results are
    bit-identical to the driver's). `num_workers` decoding processes (the spec's when it sets them)."""
    spec = job.spec
    marker = job.work / KEY_FILE
    try:
        seen = marker.read_text()
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
    device = resolve_device(spec.device)
    model = load_model(spec, device)
    if model_fingerprint(model.module) != job.fingerprint:
        raise TracekitError(
            f"model {spec.model['name']}: this worker loaded other weights than the driver; every node must "
            "load the same weights (a shared cache directory, or the same files at the same path)"
        )
    dataset = build("dataset", dataset_spec(spec))
    workers = spec.num_workers if spec.num_workers is not None else (default_workers() if num_workers is None else num_workers)
    reader = Reader(dataset, model, workers, pin=device.type == "cuda")
    attacks = [build("attack", cfg) for cfg in spec.attacks]
    return Context(spec, device, job.work, job.cache_root, model, reader, attacks)


class Stage(Protocol):
    """A per-image stage: its results go to `table`, one file per chunk; `run` processes the
    chunks `pieces` in `context` and yields the number of images of each chunk it finished."""

    table: Table

    def run(self, context: Context, pieces: list[Chunk]) -> Iterator[int]: ...


@dataclass
class Done:
    """What finishing part of a stage on a worker reports: its images and its warnings."""

    images: int
    warnings: list[str] = field(default_factory=list)
