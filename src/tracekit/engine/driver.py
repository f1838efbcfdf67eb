"""The shared part of a run or a comparison, on the driver: model and data, the clean stage, the
split, the attacks that need no detector.

`prepare` returns a `Driver`: the driver's run context (`RunContext`, the same object a worker
builds), the executor that runs per-image stages, and the `Plan` (which images are fitted on,
tested and attacked). The global steps (fitting, evaluating, summary) take the driver.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from ..cache import cache_dir, ensure_dir
from ..checks import component
from ..compute import auto_batch_size
from ..errors import TracekitError
from ..executing import Executor, Job
from ..layout import ADVERSARIALS, TABLES, RunLayout, TableNames
from ..plugins import distribution_versions, registry
from ..protocols import (
    Attack,
    CacheKeyed,
    Detector,
    DetectorBound,
    InputChecked,
    LoadedModel,
    ModelChecked,
    PerImageAttack,
    SeededAttack,
    StatefulDetector,
)
from ..spec import Spec, component_label
from .attack_cache import AttackCache, code_version, state_fingerprint
from .attacking import AttackRun, AttackStage, attack_stage, seed_everything
from .context import TRAINED, DetectorHandle, RunContext, build_context, worker_context
from .predicting import FIT, TEST, Clean, clean_stage, fit_score
from .reading import chunks


@dataclass
class Plan:
    """Which images a run fits on, tests on and attacks: the clean table read back, the bounded
    fit subset a learning detector is fitted on, and the attacks run so far."""

    clean: Clean
    fit_subset: np.ndarray  # positions of the fit images a learning detector is fitted on
    bound: list[int]  # indices of the spec's detector-bound (adaptive) attacks
    runs: list[AttackRun] = field(default_factory=list)  # attacks that need no detector, in spec order
    # (attack index, detector tag) -> why that bound attack cannot attack that detector (a comparison's)
    unavailable: dict[tuple[int, str], str] = field(default_factory=dict)

    @property
    def test(self) -> np.ndarray:
        """Positions of the test part."""
        return self.clean.positions(TEST)


@dataclass
class Driver:
    """A run on the driver: its context, where its per-image stages run, and its plan."""

    context: RunContext
    executor: Executor
    plan: Plan
    _fit_images: torch.Tensor | None = field(default=None, repr=False)

    def fit_images(self) -> torch.Tensor:
        """The clean images of the fit subset (bounded by `calibration.fit_images`), read once."""
        if self._fit_images is None:
            todo = chunks(self.plan.fit_subset, self.context.spec.batch_size)
            self._fit_images = torch.cat([b.images for b in self.context.reader.read(todo)])
        return self._fit_images

    def share(self, detector: Detector, cfg: Mapping[str, Any], tag: str, model: str = TRAINED) -> DetectorHandle:
        """A fitted detector (built from `cfg`), handed to the executor's workers."""
        return DetectorHandle(tag, model, self.executor.share(detector), component("detector", str(cfg["name"])))

    def attack(
        self,
        index: int,
        positions: np.ndarray,
        table: str,
        bind: tuple[DetectorHandle, dict[str, Any], float] | None = None,
    ) -> AttackRun:
        """Run attack `index` of the spec on the images at `positions` (all correctly classified);
        `bind` = (fitted detector, its resolved spec, threshold) for a detector-bound attack."""
        context = self.context
        spec, attack = context.spec, context.attacks[index]
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
            fitted = context.detector(handle)
            if isinstance(fitted, StatefulDetector):  # what it learned, not only how it was configured
                cache_key["detector_state"] = state_fingerprint(fitted.state_dict())
        assert context.cache_root is not None  # the driver's context has one
        cache = AttackCache(context.fingerprint, cache_key, spec.seed, root=context.cache_root)
        run = AttackRun(
            key,
            context.table(table),
            cache,
            chunks(positions, spec.batch_size),
            (isinstance(attack, PerImageAttack) and attack.per_image) or isinstance(attack, SeededAttack),
        )
        clean = self.plan.clean
        labels_of = clean.by_position(clean.labels)
        attack_stage(self.executor, AttackStage(index, run, labels_of, None if bind is None else (handle, threshold)))
        return run


def screen_attacks(spec: Spec, attacks: list[Attack], input_size: tuple[int, ...]) -> list[int]:
    """Check every attack against the model's input before any work starts (an attack's optional
    `check(input_size)`), and return the indices of the detector-bound (adaptive) attacks, which
    target a fitted, calibrated detector and so run after calibration."""
    bound = []
    for i, attack in enumerate(attacks):
        if isinstance(attack, InputChecked):
            try:
                attack.check(input_size)
            except TracekitError as exc:
                raise TracekitError(f"{spec.source}: attacks.{i}: {exc}") from None
        if isinstance(attack, DetectorBound) and attack.needs_detector:
            bound.append(i)
    return bound


def check_bound_attacks(
    spec: Spec, detectors: list[Detector], attacks: list[Attack], bound: list[int]
) -> dict[tuple[int, str], str]:
    """Whether each detector-bound (adaptive) attack can attack every detector it will be bound to
    (its `accepts`), before any work: an adaptive attack is never run through a weaker stand-in. A
    run's detector that it cannot attack stops the run; a comparison's is reported instead (the
    returned `(attack index, detector tag) -> reason`: "no adaptive attack available")."""
    unavailable = {}
    for i in bound:
        attack = cast(DetectorBound, attacks[i])
        for index, detector in enumerate(detectors):
            try:
                attack.accepts(detector)
            except TracekitError as exc:
                if not spec.detectors:  # a run: its one detector
                    raise TracekitError(
                        f"{spec.source}: attacks.{i} ('{spec.attack_key(i)}') cannot attack detector "
                        f"'{component_label(spec.detector)}': {exc}"
                    ) from None
                unavailable[(i, TableNames.detector(index))] = str(exc)
    return unavailable


def check_model_needs(spec: Spec, detectors: list[Detector], attacks: list[Attack], model: LoadedModel) -> None:
    """What each component needs of the model (`ModelChecked`: forward hooks, an eager module,
    named layers), checked as soon as the model is loaded: an impossible combination stops the run
    before any work, naming both components and the way out."""
    if spec.detectors:
        named = [(f"detectors.{i}", spec.detector_key(i)) for i in range(len(detectors))]
    else:
        named = [("detector", component_label(spec.detector))]
    parts = [(where, label, d) for (where, label), d in zip(named, detectors)]
    parts += [(f"attacks.{i}", spec.attack_key(i), a) for i, a in enumerate(attacks)]
    for where, label, part in parts:
        if isinstance(part, ModelChecked):
            try:
                part.check_model(model)
            except TracekitError as exc:
                raise TracekitError(
                    f"{spec.source}: {where} ('{label}') cannot work with model '{spec.model['name']}': {exc}"
                ) from None


def stage_key(spec: Spec, fingerprint: str) -> str:
    """What a run's tables depend on: the spec (without provenance, reading settings and CPU
    threads) and the model's weights. A resumed run reuses the tables of an interrupted one only
    when it matches (`threads: auto` may choose another count when the machine's load differs)."""
    data = spec.model_dump(mode="json", exclude={"provenance", "num_workers", "executor", "threads"})
    return hashlib.sha256(json.dumps([data, fingerprint], sort_keys=True, default=str).encode()).hexdigest()


def prepare(
    spec: Spec, device: torch.device, work: Path, use_cache: bool, detectors: list[Detector], executor: Executor
) -> Driver:
    """Load model and data, check what the `detectors` and attacks need of the model, start the
    executor, predict and split the clean images, run (or load cached) attacks.

    With `use_cache=False` adversarials are kept in the run's own folder (removed when it ends),
    never read from or written to the user's attack cache.
    """
    seed_everything(spec.seed)
    layout = RunLayout(work)
    cache_root = cache_dir() / "attacks" if use_cache else layout.adversarials
    context = build_context(spec, device, work, cache_root)
    if spec.batch_size == "auto":  # resolved once, here; workers get the number with the spec
        spec.batch_size = auto_batch_size(context.model.module, tuple(context.model.input_size), device)
    bound = screen_attacks(spec, context.attacks, tuple(context.model.input_size))
    unavailable = check_bound_attacks(spec, detectors, context.attacks, bound)
    check_model_needs(spec, detectors, context.attacks, context.model)
    context.reader  # noqa: B018 - built now: a dataset that does not fit the model fails before any work
    key = stage_key(spec, context.fingerprint)
    _reset_if_stale(layout, key)
    ensure_dir(cache_root)
    executor.start(
        Job(spec, work, cache_root, context.fingerprint, key, torch.get_num_threads(), worker_context), context
    )
    clean = clean_stage(
        executor, context, spec.seed, spec.calibration.fit_fraction, spec.data.get("labels") == "predicted"
    )
    fit = clean.positions(FIT)
    ranked = fit[np.argsort(fit_score(clean.ids[clean.part == FIT].tolist(), f"{spec.seed}:fit-subset"), kind="stable")]
    driver = Driver(
        context, executor, Plan(clean, np.sort(ranked[: spec.calibration.fit_images]), bound, [], unavailable)
    )
    plan = driver.plan
    adversarial_fit = any(d.needs_adversarial_fit for d in detectors)
    attacked = np.union1d(plan.test, plan.fit_subset) if adversarial_fit else plan.test
    plan.runs = [driver.attack(i, attacked, TableNames.attack(i)) for i in range(len(spec.attacks)) if i not in bound]
    return driver


def _reset_if_stale(layout: RunLayout, key: str) -> None:
    """Keep an interrupted run's tables only when they were computed for this spec and model."""
    marker = layout.key_file
    if marker.is_file() and marker.read_text() != key:
        for name in (TABLES, ADVERSARIALS):
            shutil.rmtree(layout.root / name, ignore_errors=True)
    marker.write_text(key)
