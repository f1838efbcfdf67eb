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
