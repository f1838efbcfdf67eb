"""Writing the run directory (its layout: `tracekit.layout`): making it and swapping it in, the
resolved spec with provenance, metrics.json, the fitted detector."""

from __future__ import annotations

import importlib.metadata as metadata
import itertools
import json
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import torch
import yaml

from .. import stopping
from ..cache import ensure_dir
from ..errors import TracekitError
from ..images import Preparation
from ..layout import ATTACKS_FORMAT, DETECTOR_FORMAT, DETECTOR_STATE, RESOLVED_SPEC, RunLayout
from ..locks import Lock, try_lock
from ..protocols import Detector, StatefulDetector
from ..spec import Spec, component_label
from ..version import __version__

if TYPE_CHECKING:
    from .attacking import AttackRun
    from .context import RunContext


def make_run_dir(out: str | Path | None, name: str, marker: str = RESOLVED_SPEC) -> tuple[Path, Path]:
    """`(final, work)`: the run directory (`--out DIR`, else `runs/<name>-<timestamp>/`, never
    an existing one) and the temporary directory beside it that the run writes into.

    The work directory is named after the final one (`.<name>.partial`), so an interrupted run
    given the same `--out` resumes from its tables. `finish` swaps it in on success; an earlier
    run in `--out` stays untouched until then. A non-empty `--out` that is not a tracekit run
    directory (one without `marker`) is refused rather than replaced.

    This takes no lock: a run holds its directory with `open_run_dir`, which calls this.
    """
    return _prepare(Path(out) if out is not None else next(_default_paths(name)), marker)


def _default_paths(name: str) -> Iterator[Path]:
    """`runs/<name>-<timestamp>`, then `...-2`, `...-3`, ...: those that do not exist (yet)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for suffix in itertools.count(1):
        path = Path("runs") / (f"{name}-{stamp}" if suffix == 1 else f"{name}-{stamp}-{suffix}")
        if not path.exists():
            yield path


def _prepare(path: Path, marker: str) -> tuple[Path, Path]:
    """Check that `path` may be replaced by a run (`make_run_dir`) and make its work directory."""
    if path.exists() and not path.is_dir():
        raise TracekitError(f"--out {path} exists and is not a directory")
    if path.is_dir() and not (path / marker).is_file() and any(path.iterdir()):
        left = ", ".join(sorted(p.name for p in path.iterdir())[:5])
        raise TracekitError(
            f"--out {path} holds files that are not a tracekit run ({left}); a run replaces its --out "
            "directory as a whole, so choose a new or empty directory"
        )
    work = work_dir(path)
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TracekitError(f"cannot create run directory {work}: {exc.strerror}") from None
    return path, ensure_dir(work)


def work_dir(final: Path) -> Path:
    """`.<name>.partial` beside the run directory `final`: where its run writes until it succeeds."""
    return final.parent / f".{final.name}.partial"


def lock_path(final: Path) -> Path:
    """`.<name>.lock` beside the run directory `final` (in its parent, so that it outlives the swap
    in `finish` and is never part of the run directory's contents)."""
    return final.parent / f".{final.name}.lock"


@dataclass
class RunDir:
    """A run directory being written, held by this process: `final` (the run directory) and `work`
    (its `.<name>.partial`), locked against every other tracekit process from `open_run_dir` to
    `close` (use it as a context manager): a second run into the same `--out` stops at once
    with one line naming this process, instead of sharing `work` with it.

    `finish` swaps `work` in while the lock is still held. `close` gives the lock up and removes
    its file (a file left by a killed process is harmless: its lock died with it); an empty
    `work` (the run failed before writing anything) is removed too, one with finished tables
    stays for the same command to resume from."""

    final: Path
    work: Path
    lock: Lock
    finished: bool = False

    def finish(self, scratch: tuple[str, ...] = ()) -> None:
        """Replace `final` with the finished `work` directory (`finish`)."""
        finish(self.work, self.final, scratch)
        self.finished = True

    def close(self) -> None:
        if not self.finished:
            try:
                self.work.rmdir()  # only when empty
            except OSError:
                pass
        self.lock.release()

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def open_run_dir(out: str | Path | None, name: str, marker: str = RESOLVED_SPEC) -> RunDir:
    """Lock the run directory (`--out`, else a new `runs/<name>-<timestamp>/`), then check it and
    make its work directory as `make_run_dir` does; the lock comes first, so that no other
    tracekit process is between the checks and the work. `TracekitError` (exit 2) at once when
    another process is writing into `--out`, naming it."""
    if out is not None:
        path = Path(out)
        _make_parent(path)
        lock = try_lock(lock_path(path), f"--out {path}")
    else:
        for path in _default_paths(name):
            _make_parent(path)
            lock = Lock(lock_path(path))
            if lock.acquire() is None and not path.exists():
                break
            lock.release()  # another run started in the same second took this name: the next one
    try:
        final, work = _prepare(path, marker)
    except BaseException:
        lock.release()
        raise
    return RunDir(final, work, lock)


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TracekitError(f"cannot create run directory {path}: {exc.strerror}") from None


def finish(work: Path, final: Path, scratch: tuple[str, ...]) -> None:
    """Replace `final` with the finished `work` directory (its `scratch` entries removed first),
    unless a stop was asked for (a stop swallowed anywhere is raised here: no run is published
    after Ctrl-C or SIGTERM, and the same command resumes)."""
    stopping.check()
    for name in scratch:
        target = work / name
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    if final.exists():
        os.replace(final, old)
    os.replace(work, final)
    shutil.rmtree(old, ignore_errors=True)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git_revision() -> str | None:
    """The commit of tracekit's own source when it runs from a git checkout (an editable install),
    wherever the run is started from; None for an installed wheel."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def provenance(spec: Spec, device: torch.device, plugin_dists: set[str], extra: dict[str, Any]) -> dict[str, Any]:
    """Versions, device, seed and git revision of a run."""
    versions = {
        "tracekit": __version__,
        "torch": torch.__version__,
        "adversarial-robustness-toolbox": _version("adversarial-robustness-toolbox"),
        "python": platform.python_version(),
    }
    for dist in sorted(plugin_dists):
        version = _version(dist)
        if version is not None:  # plugins registered at run time have no distribution
            versions.setdefault(dist, version)
    return {
        "versions": versions,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "seed": spec.seed,
        "git_revision": _git_revision(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }


def write_resolved_spec(layout: RunLayout, spec: Spec) -> None:
    text = yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True), sort_keys=False)
    layout.spec.write_text(text, encoding="utf-8")


def write_metrics(layout: RunLayout, metrics: dict[str, Any]) -> None:
    layout.metrics.write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def write_attacks(layout: RunLayout, spec: Spec, runs: dict[str, list[AttackRun]]) -> None:
    """`attacks.json`: for each attack of the spec, its label and name and, per detector tag (`runs`:
    each detector's attack runs in spec order; a comparison's detector that an adaptive attack
    cannot attack has none of it), its outcomes table and the attack-cache directory of its
    adversarials (null when the run kept them in its own folder, removed at its end)."""
    attacks = []
    for i, cfg in enumerate(spec.attacks):
        by_tag, per_image = {}, False
        for tag, attack_runs in runs.items():
            for run in (r for r in attack_runs if r.key == spec.attack_key(i)):
                kept = not run.cache.dir.resolve().is_relative_to(layout.root.resolve())
                by_tag[tag] = {"table": run.table.name, "cache": str(run.cache.dir) if kept else None}
                per_image = run.per_image
        attacks.append({"label": spec.attack_key(i), "name": cfg["name"], "per_image": per_image, "detectors": by_tag})
    document = {"format": ATTACKS_FORMAT, "attacks": attacks}
    layout.attacks.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def write_detector(
    directory: Path,
    spec: Spec,
    detector_cfg: dict[str, Any],
    threshold: float,
    context: RunContext,
    detector: Detector,
) -> None:
    """`detector.json`: what `tracekit detect` needs to reuse a fitted detector (of resolved spec
    `detector_cfg`: the spec's one, or one of a comparison's) and its threshold, and how the run
    prepares image files for its model (`tracekit.images.Preparation`, where files can be read for
    it); and `detector_state.pt` (named in it) with what a `StatefulDetector` learned in `fit`."""
    ensure_dir(directory)
    state: dict[str, Any] = {
        "format": DETECTOR_FORMAT,
        "label": component_label(detector_cfg),
        "model": spec.model,
        "model_fingerprint": context.fingerprint,
        "detector": detector_cfg,
        "threshold": threshold,
        "target_fpr": spec.calibration.target_fpr,
        "device": spec.device,
        "compute": spec.compute.model_dump(),  # so that detect scores as the run did
    }
    try:
        state["preparation"] = Preparation.for_model(context.model).record()
    except TracekitError:  # a model no image file can feed (not 1 or 3 channels)
        pass
    if isinstance(detector, StatefulDetector):
        torch.save(detector.state_dict(), directory / DETECTOR_STATE)
        state["state_file"] = DETECTOR_STATE
    RunLayout(directory).detector.write_text(json.dumps(state, indent=2, default=str) + "\n", encoding="utf-8")
