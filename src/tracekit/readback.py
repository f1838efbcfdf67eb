"""Everything tracekit reads back from a run directory, checked before it is used.

`report`, `compare RUN_DIR...`, `detect`, `explain`, `export` and `read_tables` read files that
anyone who can write the directory may have changed. Each file is read here, bounded as the spec
is (`tracekit.bounded`: regular files only, size limits, nesting), and checked against its
schema before anything is computed from it, so a broken file is one clear `TracekitError` (exit
2) naming the file and what is wrong, never a crash halfway through rewriting the figures:

- `spec.resolved.yaml`: a spec like any other (`tracekit.spec.validate_spec`);
- the JSON documents (`metrics.json` of a run or a comparison, `comparison.json`, `detector.json`,
  `attacks.json`): pydantic models of the keys tracekit reads (numbers finite, probabilities in
  [0, 1], counts whole and non-negative; JSON's non-standard `NaN`/`Infinity` refused); keys
  added by later versions pass;
- `scores.csv`: streamed row by row (the csv module's field-size limit bounds a row), its header,
  each field's type, finite scores and unique `(detector, attack, sample_id)` rows (checked once
  all are read);
- the Parquet tables: `tracekit.engine.tables.Table` checks every column it reads by name.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from .bounded import check_file, load_yaml, loads_json, read_text, short
from .errors import TracekitError
from .layout import RESOLVED_SPEC
from .spec import Spec, validate_spec

MAX_SCORES_BYTES = 16 * 2**30  # scores.csv: 16 GiB (about 300 million rows)
HOW_TO_FIX = "the run directory is broken: run its spec again (or restore the file from a copy)"

Finite = Annotated[float, Field(allow_inf_nan=False)]
Probability = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Count = Annotated[StrictInt, Field(ge=0)]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Interval = tuple[Probability, Probability]


class _Open(BaseModel):
    """Keys tracekit reads are typed (strictly: `"0.5"` is not a number, `true` not a count);
    keys a later version adds pass."""

    model_config = ConfigDict(extra="allow", strict=True)


class Failed(_Open):
    n: Count
    auc: Probability | None = None
    flag_rate: Probability | None = None


class NoiseControl(_Open):
    flag_rate: Probability | None = None
    auc: Probability | None = None
    prediction_changed: Probability | None = None


class RandomizedModel(_Open):
    auc: Probability | None = None
    tpr_at_fpr: dict[str, Probability | None] = {}


class AttackMetrics(_Open):
    """One attack's numbers (`metrics.json`)."""

    n_clean: Count
    n_attacked: Count
    auc: Probability | None
    tpr_at_fpr: dict[str, Probability | None]
    threshold: Finite | None = None
    success_rate: Probability | None = None
    gt_confidence: Probability | None = None
    target_confidence: Probability | None = None
    fpr: Probability | None = None
    precision: Probability | None = None
    recall: Probability | None = None
    evasion_rate: Probability | None = None
    auc_ci: Interval | None = None
    tpr_at_fpr_ci: dict[str, Interval | None] | None = None
    perturbation: dict[str, Finite | None] | None = None
    failed: Failed | None = None
    noise: dict[str, NoiseControl] | None = None
    randomized_model: RandomizedModel | None = None
    seconds: Seconds | None = None
    cached_images: Count | None = None
    small_sample: StrictBool | None = None
    min_per_class: Count | None = None


class DataSummary(_Open):
    n_images: Count
    n_correct: Count
    clean_accuracy: Probability
    n_fit: Count
    n_test: Count


class Cost(_Open):
    """What a detector cost, attacks aside: fit and calibration, and scoring."""

    fit_seconds: Seconds
    score_seconds: Seconds
    scored_images: Count


Transfer = dict[str, dict[str, Probability | None]]
TargetFpr = Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]


class DetectorMetrics(_Open):
    """One detector of a comparison (`metrics.json`'s `detectors`)."""

    name: StrictStr
    attacks: dict[str, AttackMetrics]
    threshold: Finite
    needs_adversarial_fit: StrictBool = False
    transfer: Transfer | None = None
    no_adaptive_attack: dict[str, StrictStr] | None = None  # attack label -> why it could not attack it
    cost: Cost | None = None
    seconds: Seconds | None = None


class RunMetrics(_Open):
    """`metrics.json` of a run (one detector)."""

    attacks: dict[str, AttackMetrics]
    data: DataSummary
    threshold: Finite
    target_fpr: TargetFpr
    transfer: Transfer | None = None
    cost: Cost | None = None
    seconds: Seconds | None = None


class ComparisonMetrics(_Open):
    """`metrics.json` of a comparison (`tracekit compare SPEC`)."""

    detectors: dict[str, DetectorMetrics]
    data: DataSummary
    target_fpr: TargetFpr
    seconds: Seconds | None = None


class ComparedRun(_Open):
    run_dir: StrictStr
    detector: StrictStr
    threshold: Finite | None = None
    target_fpr: TargetFpr


class RunsComparison(_Open):
    """`comparison.json` (`tracekit compare RUN_DIR...`)."""

    detectors: dict[str, dict[str, AttackMetrics]]
    runs: dict[str, ComparedRun] = {}
    warnings: list[StrictStr] = []
    target_fpr: TargetFpr


class DetectorState(_Open):
    """`detector.json`: what `detect` and `explain` need (the compute block is checked by
    `tracekit.compute.Compute` where it is used, the preparation by `Preparation.from_record`)."""

    format: StrictInt
    label: StrictStr | None = None
    model: dict[str, Any]
    detector: dict[str, Any]
    threshold: Finite
    target_fpr: TargetFpr | None = None
    device: StrictStr | None = None
    compute: dict[str, Any] | None = None
    model_fingerprint: StrictStr | None = None
    preparation: dict[str, Any] | None = None


class AttackEntry(_Open):
    table: StrictStr
    cache: StrictStr | None


class AttackRecord(_Open):
    label: StrictStr
    per_image: StrictBool
    detectors: dict[str, AttackEntry]


class AttacksDocument(_Open):
    """`attacks.json`."""

    format: StrictInt
    attacks: list[AttackRecord]


def read_spec(run_dir: Path) -> Spec:
    """A run directory's `spec.resolved.yaml`: validated as a spec, its provenance kept aside
    (`FileNotFoundError` passes)."""
    path = run_dir / RESOLVED_SPEC
    try:
        data = load_yaml(read_text(path, RESOLVED_SPEC), yaml.SafeLoader, str(path))
    except yaml.YAMLError as exc:
        problem = short_text(" ".join(str(exc).split()))
        raise TracekitError(f"{path}: not valid YAML ({problem}); {HOW_TO_FIX}") from None
    if not isinstance(data, dict):
        raise TracekitError(f"{path}: expected a mapping, found {type(data).__name__}; {HOW_TO_FIX}")
    provenance = data.pop("provenance", None)
    spec = validate_spec(data, source=str(path))
    spec.provenance = provenance
    return spec


def read_document(path: Path, model: type[BaseModel] | None = None, version: int | None = None) -> dict[str, Any]:
    """The JSON object in the file at `path`, checked against `model` (`metrics.json`: the run's or
    the comparison's, by its keys) after its `format` against `version` where it has one, or one
    clear `TracekitError` naming the file and the first thing wrong (`FileNotFoundError` passes,
    for the caller to word)."""
    text = read_text(path, path.name)
    value = loads_json(text, str(path), strict=True)  # bounded: size, nesting, no NaN
    if not isinstance(value, dict):
        raise TracekitError(f"{path}: expected a JSON object, found {type(value).__name__}; {HOW_TO_FIX}")
    if version is not None and value.get("format") != version:
        raise TracekitError(
            f"{path}: format {short(value.get('format'), 40)}, but this tracekit reads format {version}; {HOW_TO_FIX}"
        )
    if model is None:
        model = ComparisonMetrics if "detectors" in value else RunMetrics
    try:
        model.model_validate_json(text)
    except ValidationError as exc:
        raise TracekitError(f"{path}: {describe(exc)}; {HOW_TO_FIX}") from None
    return value


def describe(exc: ValidationError) -> str:
    """The first problem of a validation error as `'attacks.fgsm.auc': <what>` (and how many more)."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "the document"
    got = f" (found {short(first.get('input'), 60)})" if first["type"] != "missing" else ""
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"'{where}': {first['msg'].lower()}{got}{more}"


def short_text(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def score_rows(path: Path, columns: tuple[str, ...]) -> Iterator[dict[str, str]]:
    """The rows of a `scores.csv` with header `columns`, streamed and checked one by one: `label`
    and `pred` whole numbers, `success` 0/1 (empty for clean rows), `score` a finite number,
    each `(detector, attack, sample_id)` once (said after the last row: read them all before
    acting on them). `FileNotFoundError` passes."""
    check_file(path, "", MAX_SCORES_BYTES, f"; {HOW_TO_FIX}")
    seen = _Seen()
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None or tuple(header) != columns:
                raise _row_error(path, 1, f"the header is {header!r}, expected {','.join(columns)}")
            for number, fields in enumerate(reader, start=2):
                if len(fields) != len(columns):
                    raise _row_error(path, number, f"{len(fields)} fields, expected {len(columns)}")
                row = dict(zip(columns, fields))
                _check_row(path, number, row)
                seen.add(row.get("detector", ""), row["attack"], row["sample_id"])
                yield row
            if seen.repeated():
                raise TracekitError(f"{path}: a sample appears twice for one detector and attack; {HOW_TO_FIX}")
    except csv.Error as exc:
        raise TracekitError(f"{path}: not a readable CSV file ({exc}); {HOW_TO_FIX}") from None
    except UnicodeDecodeError:
        raise TracekitError(f"{path}: not UTF-8 text; {HOW_TO_FIX}") from None


class _Seen:
    """The rows' keys as 8-byte digests (8 bytes a row however long its ids; two different keys
    share a digest with a chance of about rows² / 2⁶⁵), checked for repeats at the end."""

    def __init__(self) -> None:
        self.digests, self.n = np.empty(1024, dtype=np.uint64), 0

    def add(self, *key: str) -> None:
        if self.n == len(self.digests):
            self.digests = np.resize(self.digests, 2 * self.n)
        digest = hashlib.blake2b("\0".join(key).encode(), digest_size=8).digest()
        self.digests[self.n] = int.from_bytes(digest, "little")
        self.n += 1

    def repeated(self) -> bool:
        return len(np.unique(self.digests[: self.n])) != self.n


def _check_row(path: Path, number: int, row: dict[str, str]) -> None:
    if not row["sample_id"] or not row["attack"]:
        raise _row_error(path, number, "an empty sample_id or attack")
    for name in ("label", "pred"):
        if not row[name].lstrip("-").isdigit():
            raise _row_error(path, number, f"{name} {row[name]!r} is not a whole number")
    clean = row["attack"] == "clean"
    if row["success"] not in (("",) if clean else ("0", "1")):
        raise _row_error(path, number, f"success {row['success']!r} (expected {'empty' if clean else '0 or 1'})")
    try:
        score = float(row["score"])
    except ValueError:
        score = math.nan
    if not math.isfinite(score):
        raise _row_error(path, number, f"score {row['score']!r} is not a finite number")


def _row_error(path: Path, number: int, problem: str) -> TracekitError:
    return TracekitError(f"{path}, line {number}: {short_text(problem)}; {HOW_TO_FIX}")
