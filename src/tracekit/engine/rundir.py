"""The run directory: resolved spec with provenance, metrics.json, scores.csv, the fitted detector."""

from __future__ import annotations

import csv
import importlib.metadata as metadata
import json
import platform
import re
import shutil
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml

from .. import __version__
from ..cache import ensure_dir
from ..errors import TracekitError
from ..protocols import Detector, StatefulDetector
from ..spec import Spec, component_label

SCORE_COLUMNS = ("sample_id", "attack", "label", "pred", "success", "score")
DETECTOR_FORMAT = 1  # bump when detector.json changes incompatibly
STATE_FILE = "detector_state.pt"
DETECTORS_DIR = "detectors"  # a comparison's fitted detectors: detectors/<NN>-<label>/detector.json
RESOLVED_SPEC = "spec.resolved.yaml"
# What a run or comparison writes at the top of its directory (figures are its PNGs).
OUTPUTS = (RESOLVED_SPEC, "metrics.json", "scores.csv", "detector.json", STATE_FILE, "report.html", "*.png")


def detector_dir(run_dir: Path, index: int, label: str) -> Path:
    """Where a comparison keeps its detector number `index` (labels made safe for file names)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._") or "detector"
    return run_dir / DETECTORS_DIR / f"{index:02d}-{safe}"


def _remove_outputs(run_dir: Path) -> None:
    """An earlier run's outputs, so that none of them (a figure, a fitted detector) outlives it."""
    for pattern in OUTPUTS:
        for file in run_dir.glob(pattern):
            if file.is_file():
                file.unlink()
    shutil.rmtree(run_dir / DETECTORS_DIR, ignore_errors=True)


def make_run_dir(out: str | Path | None, name: str) -> Path:
    """`--out DIR`, else `runs/<name>-<timestamp>/` (never reusing an existing one). An earlier
    run's directory given as `--out` is reused: its outputs are removed first."""
    if out is not None:
        path = Path(out)
        if path.exists() and not path.is_dir():
            raise TracekitError(f"--out {path} exists and is not a directory")
        if (path / RESOLVED_SPEC).is_file():
            _remove_outputs(path)
        if path.is_dir() and any(path.iterdir()):
            left = ", ".join(sorted(p.name for p in path.iterdir())[:5])
            warnings.warn(
                f"--out {path} holds files this run does not write ({left}); they stay next to its outputs",
                stacklevel=2,
            )
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path("runs") / f"{name}-{stamp}"
        suffix = 1
        while path.exists():
            suffix += 1
            path = Path("runs") / f"{name}-{stamp}-{suffix}"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TracekitError(f"cannot create run directory {path}: {exc.strerror}") from None
    return ensure_dir(path)


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
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False,
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
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "seed": spec.seed,
        "git_revision": _git_revision(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }


def write_resolved_spec(run_dir: Path, spec: Spec) -> None:
    text = yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True), sort_keys=False)
    (run_dir / RESOLVED_SPEC).write_text(text, encoding="utf-8")


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def write_detector(
    directory: Path, spec: Spec, detector_cfg: dict[str, Any], threshold: float, model_fingerprint: str,
    detector: Detector,
) -> None:
    """`detector.json`: what `tracekit detect` needs to reuse a fitted detector (of resolved spec
    `detector_cfg`: the spec's one, or one of a comparison's) and its threshold; and
    `detector_state.pt` (named in it) with what a `StatefulDetector` learned in `fit`."""
    ensure_dir(directory)
    state = {
        "format": DETECTOR_FORMAT,
        "label": component_label(detector_cfg),
        "model": spec.model,
        "model_fingerprint": model_fingerprint,
        "detector": detector_cfg,
        "threshold": threshold,
        "target_fpr": spec.calibration.target_fpr,
        "device": spec.device,
    }
    if isinstance(detector, StatefulDetector):
        torch.save(detector.state_dict(), directory / STATE_FILE)
        state["state_file"] = STATE_FILE
    (directory / "detector.json").write_text(json.dumps(state, indent=2, default=str) + "\n", encoding="utf-8")


def write_scores(run_dir: Path, rows: list[dict[str, Any]], columns: tuple[str, ...] = SCORE_COLUMNS) -> None:
    with open(run_dir / "scores.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
