"""A finished run (or comparison) read back from its directory: all the report needs.

The run directory is the single source of truth: `spec.resolved.yaml`, `metrics.json`, the
per-sample tables, `examples.pt` (a few test images and their adversarials per attack) and the
fitted detector (`detector.json`), from which the report recomputes the example maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ..bounded import load_yaml, read_json, read_text
from ..engine.rundir import RESOLVED_SPEC
from ..engine.summary import EXAMPLES_FILE
from ..engine.tables import Table
from ..errors import TracekitError
from ..spec import Spec, validate_spec


@dataclass
class RunData:
    """A run directory's spec and metrics; tables, examples and the fitted detector on demand."""

    dir: Path
    spec: Spec
    metrics: dict[str, Any]

    @property
    def is_comparison(self) -> bool:
        return "detectors" in self.metrics

    def clean(self) -> dict[str, np.ndarray]:
        return Table(self.dir, "clean").read()

    def examples(self) -> dict[str, dict[str, Any]]:
        path = self.dir / EXAMPLES_FILE
        if not path.is_file():
            return {}
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a broken file: no example panels, said once
            raise TracekitError(f"{path}: unreadable ({type(exc).__name__}: {exc}); run the spec again") from None

    def setup(self) -> Any:
        """The run's model and fitted detector (as `tracekit detect` rebuilds them)."""
        from ..detecting import load_run

        return load_run(self.dir)


def read_run(run_dir: str | Path) -> RunData:
    """The run at `run_dir`, or one clear error naming what is missing."""
    path = Path(run_dir)
    if not path.is_dir():
        raise TracekitError(f"run directory {path} does not exist (or is not a directory)")
    try:
        data = load_yaml(read_text(path / RESOLVED_SPEC, RESOLVED_SPEC), yaml.SafeLoader, str(path / RESOLVED_SPEC))
        metrics = read_json(path / "metrics.json", "metrics.json")
    except FileNotFoundError as exc:
        raise TracekitError(f"{path} is not a finished tracekit run: {Path(exc.filename).name} is missing") from None
    except (ValueError, yaml.YAMLError) as exc:
        raise TracekitError(f"{path} holds a broken run file ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or not isinstance(metrics, dict):
        raise TracekitError(f"{path}: spec.resolved.yaml or metrics.json is not a mapping; run the spec again")
    provenance = data.pop("provenance", None)
    spec = validate_spec(data, source=str(path / RESOLVED_SPEC))
    spec.provenance = provenance
    if not Table(path, "clean").exists():
        raise TracekitError(f"{path} has no per-sample tables (tables/clean is missing); run the spec again to write them")
    return RunData(path, spec, metrics)


RUNS_COMPARISON = "comparison.json"  # as `engine.compare.RUNS_COMPARISON` (not imported: that module is heavy)


@dataclass
class RunsData:
    """Finished runs compared side by side (`tracekit compare RUN_DIR...`): `comparison.json` and,
    per compared detector, its clean test scores and each attack's successful adversarials' scores."""

    dir: Path
    document: dict[str, Any]
    scores: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]


def is_runs_comparison(run_dir: str | Path) -> bool:
    path = Path(run_dir)
    return (path / RUNS_COMPARISON).is_file() and not (path / RESOLVED_SPEC).is_file()


def read_runs_comparison(run_dir: str | Path) -> RunsData:
    """A directory written by `tracekit compare RUN_DIR...`, or one clear error."""
    import csv

    path = Path(run_dir)
    try:
        document = read_json(path / RUNS_COMPARISON, RUNS_COMPARISON)
        with open(path / "scores.csv", newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError as exc:
        raise TracekitError(f"{path} is not a finished comparison of runs: {Path(exc.filename).name} is missing") from None
    except ValueError as exc:
        raise TracekitError(f"{path} holds a broken comparison file ({type(exc).__name__}: {exc})") from None
    if not isinstance(document, dict) or not isinstance(document.get("detectors"), dict) or "target_fpr" not in document:
        raise TracekitError(f"{path}/{RUNS_COMPARISON} is not a comparison of runs; compare the runs again")
    clean: dict[str, list[float]] = {}
    adversarial: dict[str, dict[str, list[float]]] = {}
    try:
        for row in rows:
            label, attack = row["detector"], row["attack"]
            if attack == "clean":
                clean.setdefault(label, []).append(float(row["score"]))
            elif row["success"] == "1":
                adversarial.setdefault(label, {}).setdefault(attack, []).append(float(row["score"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise TracekitError(f"{path}/scores.csv is broken ({type(exc).__name__}: {exc}); compare the runs again") from None
    scores = {
        label: (
            np.asarray(clean.get(label, []), dtype=float),
            {attack: np.asarray(adversarial.get(label, {}).get(attack, []), dtype=float) for attack in per_attack},
        )
        for label, per_attack in document["detectors"].items()
    }
    return RunsData(path, document, scores)
