"""Writing the run directory (its layout: `tracekit.layout`): making it and swapping it in, the
resolved spec with provenance, metrics.json, the fitted detector."""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from ..cache import ensure_dir
from ..errors import TracekitError
from ..images import Preparation
from ..layout import DETECTOR_STATE, RESOLVED_SPEC, RunLayout
from ..protocols import Detector, StatefulDetector
from ..spec import Spec, component_label
from ..version import __version__

if TYPE_CHECKING:
    from .attacking import AttackRun
    from .context import RunContext

DETECTOR_FORMAT = 1  # bump when detector.json changes incompatibly
ATTACKS_FORMAT = 1  # bump when attacks.json changes incompatibly


def make_run_dir(out: str | Path | None, name: str, marker: str = RESOLVED_SPEC) -> tuple[Path, Path]:
    """`(final, work)`: the run directory (`--out DIR`, else `runs/<name>-<timestamp>/`, never
    an existing one) and the temporary directory beside it that the run writes into.

    The work directory is named after the final one (`.<name>.partial`), so an interrupted run
    given the same `--out` resumes from its tables. `finish` swaps it in on success; an earlier
    run in `--out` stays untouched until then. A non-empty `--out` that is not a tracekit run
    directory (one without `marker`) is refused rather than replaced.
    """
    if out is not None:
        path = Path(out)
        if path.exists() and not path.is_dir():
            raise TracekitError(f"--out {path} exists and is not a directory")
        if path.is_dir() and not (path / marker).is_file() and any(path.iterdir()):
            left = ", ".join(sorted(p.name for p in path.iterdir())[:5])
            raise TracekitError(
                f"--out {path} holds files that are not a tracekit run ({left}); a run replaces its --out "
                "directory as a whole, so choose a new or empty directory"
            )
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path("runs") / f"{name}-{stamp}"
        suffix = 1
        while path.exists():
            suffix += 1
            path = Path("runs") / f"{name}-{stamp}-{suffix}"
    work = path.parent / f".{path.name}.partial"
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TracekitError(f"cannot create run directory {work}: {exc.strerror}") from None
    return path, ensure_dir(work)


def finish(work: Path, final: Path, scratch: tuple[str, ...]) -> None:
    """Replace `final` with the finished `work` directory (its `scratch` entries removed first)."""
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
    each detector's attack runs in spec order), its outcomes table and the attack-cache directory
    of its adversarials (null when the run kept them in its own folder, removed at its end)."""
    attacks = []
    for i, cfg in enumerate(spec.attacks):
        by_tag = {}
        for tag, attack_runs in runs.items():
            run = attack_runs[i]
            kept = not run.cache.dir.resolve().is_relative_to(layout.root.resolve())
            by_tag[tag] = {"table": run.table.name, "cache": str(run.cache.dir) if kept else None}
        per_image = next(iter(runs.values()))[i].per_image
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
