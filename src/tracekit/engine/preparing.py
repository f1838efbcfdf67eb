"""The shared part of a run or a comparison: model, data, the clean stage, the attacks.

Components are built once per run, from the resolved spec, through their registries; the engine
knows kinds, never concrete components.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..cache import cache_dir, ensure_dir
from ..checks import component
from ..compute import auto_batch_size
from ..errors import TracekitError
from ..plugins import distribution_versions, registry
from ..protocols import (
    Attack, CacheKeyed, Dataset, DetectorBound, Detector, Executor, InputChecked, LoadedModel, PerImageAttack, SeededAttack,
)
from ..spec import Spec
from .attack_cache import AttackCache, code_version, model_fingerprint
from .attacking import AttackRun, AttackStage, attack_stage, seed_everything
from .context import KEY_FILE, TRAINED, Context, DetectorHandle, Job, build, dataset_spec, load_model
from .predicting import FIT, TEST, Clean, clean_stage, fit_score
from .reading import Reader, chunks, default_workers
from .tables import Table


@dataclass
class Prepared:
    """Model, data, the clean table and the attacks that need no detector, ready for detectors."""

    context: Context  # the driver's own: spec, device, run directory, model, reader, attacks
    executor: Executor  # where the per-image stages run
    dataset: Dataset
    clean: Clean
    fingerprint: str  # of the model weights: keys the attack cache, recorded in detector.json
    runs: list[AttackRun]  # attacks that need no detector, in spec order
    bound: list[int]  # indices of the spec's detector-bound (adaptive) attacks
    fit_subset: np.ndarray  # positions of the fit images a learning detector is fitted on
    _fit_images: torch.Tensor | None = field(default=None, repr=False)

    @property
    def spec(self) -> Spec:
        return self.context.spec

    @property
    def device(self) -> torch.device:
        return self.context.device

    @property
    def work(self) -> Path:
        """The run's (temporary) directory, where its tables are."""
        return self.context.work

    @property
    def model(self) -> LoadedModel:
        return self.context.model

    @property
    def reader(self) -> Reader:
        return self.context.reader

    @property
    def attacks(self) -> list[Attack]:
        """Built once, in spec order."""
        return self.context.attacks

    @property
    def cache_root(self) -> Path:
        return self.context.cache_root

    def table(self, name: str) -> Table:
        return self.context.table(name)

    @property
    def test(self) -> np.ndarray:
        return self.clean.positions(TEST)

    def fit_images(self) -> torch.Tensor:
        """The clean images of `fit_subset` (bounded by `calibration.fit_images`), read once."""
        if self._fit_images is None:
            batches = list(self.reader.read(chunks(self.fit_subset, self.spec.batch_size)))
            self._fit_images = torch.cat([b.images for b in batches])
        return self._fit_images

    def share(self, detector: Detector, cfg: Mapping[str, Any], tag: str, model: str = TRAINED) -> DetectorHandle:
        """A fitted detector (built from `cfg`), handed to the executor's workers."""
        return DetectorHandle(tag, model, self.executor.share(detector), component("detector", str(cfg["name"])))

    def attack(
        self, index: int, positions: np.ndarray, table: str, bind: tuple[DetectorHandle, dict[str, Any], float] | None = None
    ) -> AttackRun:
        """Run attack `index` of the spec on the images at `positions` (all correctly classified);
        `bind` = (fitted detector, its resolved spec, threshold) for a detector-bound attack."""
        spec, attack = self.spec, self.attacks[index]
        cfg, key = spec.attacks[index], spec.attack_key(index)
        # A label only names results: relabelling an attack reuses its cached adversarials.
        cache_key = {**{k: v for k, v in cfg.items() if k != "label"}, "code": code_version(attack)}
        source = registry("attack").get(str(cfg["name"])).source  # a plugin upgrade invalidates its entries
        cache_key["distribution"] = f"{source} {distribution_versions().get(source, '')}".strip()
        if isinstance(attack, CacheKeyed):
            cache_key["component"] = attack.cache_key()
        if bind is not None:
            handle, detector_cfg, threshold = bind
            cache_key.update(detector=detector_cfg, threshold=threshold)
        cache = AttackCache(self.fingerprint, cache_key, spec.seed, root=self.cache_root)
        run = AttackRun(
            key, self.table(table), cache, chunks(positions, spec.batch_size),
            (isinstance(attack, PerImageAttack) and attack.per_image) or isinstance(attack, SeededAttack),
        )
        labels_of = self.clean.by_position(self.clean.labels)
        attack_stage(self.executor, AttackStage(index, run, labels_of, None if bind is None else (handle, threshold)))
        return run


def screen_attacks(spec: Spec, attacks: list[Attack], model: LoadedModel) -> list[int]:
    """Check every attack against the model before any work starts (an attack's optional
    `check(input_size)`), and return the indices of the detector-bound (adaptive) attacks, which
    target a fitted, calibrated detector and so run after calibration."""
    bound = []
    for i, attack in enumerate(attacks):
        if isinstance(attack, InputChecked):
            try:
                attack.check(tuple(model.input_size))
            except TracekitError as exc:
                raise TracekitError(f"{spec.source}: attacks.{i}: {exc}") from None
        if isinstance(attack, DetectorBound) and attack.needs_detector:
            bound.append(i)
    return bound


def stage_key(spec: Spec, fingerprint: str) -> str:
    """What a run's tables depend on: the spec (without provenance, reading settings and CPU
    threads) and the model's weights. A resumed run reuses the tables of an interrupted one only
    when it matches (`threads: auto` may choose another count when the machine's load differs)."""
    data = spec.model_dump(mode="json", exclude={"provenance", "num_workers", "executor", "threads"})
    return hashlib.sha256(json.dumps([data, fingerprint], sort_keys=True, default=str).encode()).hexdigest()


def prepare(
    spec: Spec, device: torch.device, work: Path, use_cache: bool, adversarial_fit: bool, executor: Executor
) -> Prepared:
    """Load model and data, start the executor, predict and split the clean images, run (or load
    cached) attacks.

    With `use_cache=False` adversarials are kept in the run's own folder (removed when it ends),
    never read from or written to the user's attack cache.
    """
    seed_everything(spec.seed)
    model = load_model(spec, device)
    if spec.batch_size == "auto":  # resolved once, here; workers get the number with the spec
        spec.batch_size = auto_batch_size(model.module, tuple(model.input_size), device)
    attacks: list[Attack] = [build("attack", cfg) for cfg in spec.attacks]
    bound = screen_attacks(spec, attacks, model)
    dataset: Dataset = build("dataset", dataset_spec(spec))
    workers = default_workers() if spec.num_workers is None else spec.num_workers
    reader = Reader(dataset, model, workers, pin=device.type == "cuda")
    fingerprint = model_fingerprint(model.module)
    key = stage_key(spec, fingerprint)
    _reset_if_stale(work, key)
    cache_root = cache_dir() / "attacks" if use_cache else work / "adversarials"
    ensure_dir(cache_root)
    context = Context(spec, device, work, cache_root, model, reader, attacks)
    executor.start(Job(spec, work, cache_root, fingerprint, key, torch.get_num_threads()), context)
    clean = clean_stage(
        executor, context, spec.seed, spec.calibration.fit_fraction, spec.data.get("labels") == "predicted"
    )
    fit = clean.positions(FIT)
    ranked = fit[np.argsort(fit_score(clean.ids[clean.part == FIT].tolist(), f"{spec.seed}:fit-subset"), kind="stable")]
    fit_subset = np.sort(ranked[: spec.calibration.fit_images])
    prep = Prepared(context, executor, dataset, clean, fingerprint, [], bound, fit_subset)
    attacked = np.union1d(prep.test, fit_subset) if adversarial_fit else prep.test
    prep.runs = [prep.attack(i, attacked, f"attack-{i:02d}") for i in range(len(attacks)) if i not in bound]
    return prep


def _reset_if_stale(work: Path, key: str) -> None:
    """Keep an interrupted run's tables only when they were computed for this spec and model."""
    marker = work / KEY_FILE
    if marker.is_file() and marker.read_text() != key:
        for name in ("tables", "adversarials"):
            shutil.rmtree(work / name, ignore_errors=True)
    marker.write_text(key)
