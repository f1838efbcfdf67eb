"""A finished run (or comparison) read back from its directory: all the report needs.

The run directory is the single source of truth: `spec.resolved.yaml`, `metrics.json`, the
per-sample tables and `examples.npz` (a few test images per attack, their adversarials and the
detector's pictures of both), named by `tracekit.layout`. Reading them needs neither torch nor
the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..bounded import load_yaml, read_json, read_text
from ..engine.tables import Table
from ..errors import TracekitError
from ..layout import METRICS, RESOLVED_SPEC, RUNS_COMPARISON, SCORES, RunLayout, TableNames
from ..spec import Spec, validate_spec


@dataclass
class Examples:
    """A run's example images of one attack (`examples.npz`): test images, their adversarials
    and, where the detector has them, its gray maps and score maps of both (clean rows first)."""

    index: np.ndarray
    ids: list[str]
    original: np.ndarray  # [n,C,H,W] float32 in [0, 1]
    adversarial: np.ndarray
    gray: np.ndarray | None = None  # [2n,H,W] uint8
    score_map: np.ndarray | None = None  # [2n,H,W] float32


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
        return Table(self.dir, TableNames.CLEAN).read()

    def examples(self) -> tuple[dict[str, Examples], list[str], str]:
        """`({attack: Examples}, class names, the score map's title)`; no examples when the run
        has none (a comparison)."""
        path = RunLayout(self.dir).examples
        if not path.is_file():
            return {}, [], ""
        try:
            with np.load(path, allow_pickle=False) as npz:
                data = {key: npz[key] for key in npz.files}
            found = {}
            for k, attack in enumerate(data["attacks"].tolist()):
                at = f"a{k}."
                found[str(attack)] = Examples(
                    data[at + "index"],
                    [str(i) for i in data[at + "ids"]],
                    data[at + "original"],
                    data[at + "adversarial"],
                    data.get(at + "gray"),
                    data.get(at + "score_map"),
                )
            return found, [str(c) for c in data["classes"]], str(data["map_title"])
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise TracekitError(f"{path}: unreadable ({type(exc).__name__}: {exc}); run the spec again") from None

    def test_scores(self, tag: str) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
        """Detector `tag`'s clean test scores and, per attack, its test outcomes joined with
        their scores (the attack table's columns plus `score`), from the tables."""
        return scores_of_test_part(self.dir, self.spec, tag)


@dataclass(frozen=True)
class AttackTable:
    """One outcomes table of a run's attack, as `attacks.json` names it: an attack bound to the
    detector (adaptive) has one per detector (`bound`), any other one for all."""

    label: str
    tag: str  # the detector's (the first detector's for an attack not bound to one)
    table: str
    cache: str | None  # the attack-cache directory of its adversarials (None: removed with the run)
    per_image: bool
    bound: bool


def read_attacks(run_dir: Path) -> list[AttackTable]:
    """The run's `attacks.json`, checked: its attacks' tables in spec order, or one clear error."""
    path = RunLayout(Path(run_dir)).attacks
    if not path.is_file():
        raise TracekitError(
            f"{run_dir} has no {path.name}: written by tracekit runs since its export was added; run the spec again"
        )
    document = read_json(path, path.name)
    try:
        if document["format"] != 1:
            raise ValueError(f"format {document['format']!r}")
        out = []
        for attack in document["attacks"]:
            by_tag = attack["detectors"]
            bound = len({entry["table"] for entry in by_tag.values()}) > 1
            for tag, entry in by_tag.items():
                if not isinstance(entry["table"], str) or not isinstance(entry["cache"], (str, type(None))):
                    raise ValueError("a table or cache is not a string")
                out.append(
                    AttackTable(
                        str(attack["label"]), tag, entry["table"], entry["cache"], bool(attack["per_image"]), bound
                    )
                )
                if not bound:
                    break
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TracekitError(f"{path}: broken ({type(exc).__name__}: {exc}); run the spec again") from None
    return out


def attack_table(run_dir: Path, index: int, tag: str) -> Table:
    """The outcomes table of attack `index` as detector `tag` saw it (a detector-bound attack has
    one per detector)."""
    bound = Table(run_dir, TableNames.attack(index, tag))
    return bound if bound.exists() else Table(run_dir, TableNames.attack(index))


def scores_of_test_part(
    run_dir: Path, spec: Spec, tag: str
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
    """A detector's clean test scores and, per attack, its test outcomes joined with their scores
    (columns of the attack table plus `score`), read from a run directory's tables."""
    clean = Table(run_dir, TableNames.scores(tag, "clean")).read()
    attacks = {}
    for i in range(len(spec.attacks)):
        table = attack_table(run_dir, i, tag)
        scores = Table(run_dir, TableNames.scores(tag, table.name)).read(["index", "score"])
        outcomes = table.read()
        keep = np.isin(outcomes["index"], scores["index"])
        attacks[spec.attack_key(i)] = {**{k: v[keep] for k, v in outcomes.items()}, "score": scores["score"]}
    return clean, attacks


def read_run(run_dir: str | Path) -> RunData:
    """The run at `run_dir`, or one clear error naming what is missing."""
    path = Path(run_dir)
    if not path.is_dir():
        raise TracekitError(f"run directory {path} does not exist (or is not a directory)")
    try:
        data = load_yaml(read_text(path / RESOLVED_SPEC, RESOLVED_SPEC), yaml.SafeLoader, str(path / RESOLVED_SPEC))
        metrics = read_json(path / METRICS, METRICS)
    except FileNotFoundError as exc:
        raise TracekitError(f"{path} is not a finished tracekit run: {Path(exc.filename).name} is missing") from None
    except (ValueError, yaml.YAMLError) as exc:
        raise TracekitError(f"{path} holds a broken run file ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or not isinstance(metrics, dict):
        raise TracekitError(f"{path}: spec.resolved.yaml or metrics.json is not a mapping; run the spec again")
    provenance = data.pop("provenance", None)
    spec = validate_spec(data, source=str(path / RESOLVED_SPEC))
    spec.provenance = provenance
    if not Table(path, TableNames.CLEAN).exists():
        raise TracekitError(
            f"{path} has no per-sample tables (tables/clean is missing); run the spec again to write them"
        )
    return RunData(path, spec, metrics)


@dataclass
class RunsData:
    """Finished runs compared side by side (`tracekit compare RUN_DIR...`): `comparison.json` and,
    per compared detector, its clean test scores and each attack's successful adversarials' scores."""

    dir: Path
    document: dict[str, Any]
    scores: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]


def is_runs_comparison(run_dir: str | Path) -> bool:
    layout = RunLayout(Path(run_dir))
    return layout.runs_comparison.is_file() and not layout.spec.is_file()


def read_runs_comparison(run_dir: str | Path) -> RunsData:
    """A directory written by `tracekit compare RUN_DIR...`, or one clear error."""
    import csv

    path = Path(run_dir)
    try:
        document = read_json(path / RUNS_COMPARISON, RUNS_COMPARISON)
        with open(path / SCORES, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError as exc:
        raise TracekitError(
            f"{path} is not a finished comparison of runs: {Path(exc.filename).name} is missing"
        ) from None
    except ValueError as exc:
        raise TracekitError(f"{path} holds a broken comparison file ({type(exc).__name__}: {exc})") from None
    if (
        not isinstance(document, dict)
        or not isinstance(document.get("detectors"), dict)
        or "target_fpr" not in document
    ):
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
        raise TracekitError(
            f"{path}/scores.csv is broken ({type(exc).__name__}: {exc}); compare the runs again"
        ) from None
    scores = {
        label: (
            np.asarray(clean.get(label, []), dtype=float),
            {attack: np.asarray(adversarial.get(label, {}).get(attack, []), dtype=float) for attack in per_attack},
        )
        for label, per_attack in document["detectors"].items()
    }
    return RunsData(path, document, scores)
