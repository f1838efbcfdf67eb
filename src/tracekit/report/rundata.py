"""A finished run (or comparison) read back from its directory: all the report needs.

The run directory is the single source of truth: `spec.resolved.yaml`, `metrics.json`, the
per-sample tables and `examples.npz` (a few test images per attack, their adversarials and the
detector's pictures of both), named by `tracekit.layout`. Reading them needs neither torch nor
the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.tables import TABLE_FIX, Table
from ..errors import TracekitError
from ..layout import ATTACKS_FORMAT, METRICS, RUNS_COMPARISON, SCORES, RunLayout, TableNames
from ..readback import HOW_TO_FIX, AttacksDocument, RunsComparison, read_document, read_spec, score_rows
from ..spec import Spec
from .distributions import Batches, Distribution, gather


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

    def distributions(self, tag: str) -> tuple[Distribution, dict[str, Distribution]]:
        """Detector `tag`'s clean test scores and the successful adversarials' scores of each
        attack it faced, as distributions on bins shared with its threshold, streamed from the
        tables."""
        threshold = self.threshold(tag)
        faced = self.faced(tag)
        sources: list[Batches] = [_scores(Table(self.dir, TableNames.scores(tag, "clean")))]
        for i in faced:
            table = attack_table(self.dir, i, tag)
            sources.append(_successful_scores(Table(self.dir, TableNames.scores(tag, table.name)), table))
        clean, *found = gather(sources, [threshold])
        attacks = {self.spec.attack_key(i): d for i, d in zip(faced, found)}
        self._check_counts(tag, clean, attacks)
        return clean, attacks

    def faced(self, tag: str) -> list[int]:
        """The indices of the spec's attacks detector `tag` faced: all, but in a comparison not an
        adaptive attack that has no stand-in of that detector to descend (`no_adaptive_attack`)."""
        if not self.is_comparison:
            return list(range(len(self.spec.attacks)))
        measured = self._detector(tag)["attacks"]
        return [i for i in range(len(self.spec.attacks)) if self.spec.attack_key(i) in measured]

    def _check_counts(self, tag: str, clean: Distribution, attacks: dict[str, Distribution]) -> None:
        """The tables hold as many clean test scores and successful adversarials as `metrics.json`
        counted (a table with rows missing, repeated or added is not drawn as if it were whole)."""
        per_attack = self.metrics["attacks"] if not self.is_comparison else self._detector(tag)["attacks"]
        counted = [("clean test images", clean.n, self.metrics["data"]["n_test"])]
        counted += [
            (f"successful adversarials of '{key}'", d.n, per_attack.get(key, {}).get("n_attacked"))
            for key, d in attacks.items()
        ]
        for what, found, expected in counted:
            if found != expected:
                raise TracekitError(
                    f"{self.dir}: the tables of detector {tag} hold {found} {what}, {METRICS} counts {expected}; "
                    f"{HOW_TO_FIX}"
                )

    def _detector(self, tag: str) -> dict[str, Any]:
        detectors = list(self.metrics["detectors"].values())
        index = int(tag[1:])
        if index >= len(detectors):
            raise TracekitError(
                f"{self.dir}: {METRICS} lists {len(detectors)} detectors, the tables more; {HOW_TO_FIX}"
            )
        return detectors[index]

    def threshold(self, tag: str) -> float:
        """The calibrated threshold of detector `tag` (`d<NN>`)."""
        return float((self._detector(tag) if self.is_comparison else self.metrics)["threshold"])

    def example_rows(self, tag: str, positions: np.ndarray) -> ExampleRows:
        """The rows of the images at `positions` (the saved examples) that the example panels
        show: the clean table's, the clean test scores', and per attack its outcomes with their
        scores; read streaming, keeping only those rows."""
        clean = rows_at(Table(self.dir, TableNames.CLEAN), ["index", "pred", "confidence"], positions)
        clean_scores = rows_at(Table(self.dir, TableNames.scores(tag, "clean")), ["index", "score"], positions)
        attacks = {}
        for i in self.faced(tag):
            table = attack_table(self.dir, i, tag)
            outcomes = rows_at(table, ["index", "label", "pred", "target_confidence", "success"], positions)
            scores = rows_at(Table(self.dir, TableNames.scores(tag, table.name)), ["index", "score"], positions)
            keep = np.isin(outcomes["index"], scores["index"])
            attacks[self.spec.attack_key(i)] = {**{k: v[keep] for k, v in outcomes.items()}, "score": scores["score"]}
        return ExampleRows(clean, clean_scores, attacks)


@dataclass
class ExampleRows:
    """The table rows of a run's saved example images (`RunData.example_rows`), each sorted by index."""

    clean: dict[str, np.ndarray]
    clean_scores: dict[str, np.ndarray]
    attacks: dict[str, dict[str, np.ndarray]]


def rows_at(table: Table, columns: list[str], positions: np.ndarray) -> dict[str, np.ndarray]:
    """The rows of `table` at `positions` (`columns`, sorted by index), streamed."""
    parts = [
        {k: v[keep] for k, v in b.items()}
        for b in table.stream(columns)
        if (keep := np.isin(b["index"], positions)).any()
    ]
    if not parts:
        return {c: np.zeros(0) for c in columns}
    joined = {c: np.concatenate([p[c] for p in parts]) for c in columns}
    order = np.argsort(joined["index"], kind="stable")
    return {c: v[order] for c, v in joined.items()}


def _scores(table: Table) -> Batches:
    return lambda: (batch["score"] for batch in table.stream(["score"]))


def _successful_scores(scores: Table, attack: Table) -> Batches:
    """The scores of the successful adversarials of `attack` (its outcomes table) in `scores`;
    every scored image must be one the attack table holds."""
    attacked, succeeded = [], []
    for batch in attack.stream(["index", "success"]):
        attacked.append(batch["index"])
        succeeded.append(batch["index"][batch["success"]])
    size = max((int(a.max()) + 1 for a in attacked if len(a)), default=0)
    known, success = np.zeros(size, bool), np.zeros(size, bool)
    for a, s in zip(attacked, succeeded):
        known[a], success[s] = True, True
    del attacked, succeeded

    def batches() -> Iterator[np.ndarray]:
        for batch in scores.stream(["index", "score"]):
            index = batch["index"]
            if len(index) and (index.max() >= size or not known[index].all()):
                raise TracekitError(f"{scores.dir}: scores of images that {attack.dir} does not hold{TABLE_FIX}")
            yield batch["score"][success[index]]

    return batches


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
    document = read_document(path, AttacksDocument, ATTACKS_FORMAT)
    out = []
    for attack in document["attacks"]:
        by_tag = attack["detectors"]
        bound = any(entry["table"].endswith(f"-{tag}") for tag, entry in by_tag.items())  # one table per detector
        for tag, entry in by_tag.items():
            out.append(AttackTable(attack["label"], tag, entry["table"], entry["cache"], attack["per_image"], bound))
            if not bound:
                break
    return out


def attack_table(run_dir: Path, index: int, tag: str) -> Table:
    """The outcomes table of attack `index` as detector `tag` saw it (a detector-bound attack has
    one per detector)."""
    bound = Table(run_dir, TableNames.attack(index, tag))
    return bound if bound.exists() else Table(run_dir, TableNames.attack(index))


def read_run(run_dir: str | Path) -> RunData:
    """The run at `run_dir`, its spec and metrics checked (`tracekit.readback`), or one clear error
    naming what is missing or broken."""
    path = Path(run_dir)
    if not path.is_dir():
        raise TracekitError(f"run directory {path} does not exist (or is not a directory)")
    try:
        spec = read_spec(path)
        metrics = read_document(path / METRICS)
    except FileNotFoundError as exc:
        raise TracekitError(f"{path} is not a finished tracekit run: {Path(exc.filename).name} is missing") from None
    if not Table(path, TableNames.CLEAN).exists():
        raise TracekitError(
            f"{path} has no per-sample tables (tables/clean is missing); run the spec again to write them"
        )
    return RunData(path, spec, metrics)


@dataclass
class RunsData:
    """Finished runs compared side by side (`tracekit compare RUN_DIR...`): `comparison.json` and,
    per compared detector, its clean test scores and each attack's successful adversarials'
    scores as distributions (from the comparison's `scores.csv`)."""

    dir: Path
    document: dict[str, Any]
    scores: dict[str, tuple[Distribution, dict[str, Distribution]]]


def is_runs_comparison(run_dir: str | Path) -> bool:
    layout = RunLayout(Path(run_dir))
    return layout.runs_comparison.is_file() and not layout.spec.is_file()


def read_runs_comparison(run_dir: str | Path) -> RunsData:
    """A directory written by `tracekit compare RUN_DIR...`, checked (`tracekit.readback`), or one
    clear error."""
    from ..engine.compare import COMPARE_COLUMNS

    path = Path(run_dir)
    try:
        document = read_document(path / RUNS_COMPARISON, RunsComparison)
        # two streamed passes: each detector's range of scores, then their distributions
        ranges: dict[str, list[float]] = {}
        for label, attack, scores in _successful_rows(path / SCORES, COMPARE_COLUMNS):
            span = ranges.setdefault(label, [np.inf, -np.inf])
            span[:] = min(span[0], float(scores.min())), max(span[1], float(scores.max()))
        found = {
            label: (Distribution.spanning(*ranges.get(label, [0, 1])), {})
            for label in document["detectors"]
        }  # fmt: skip
        for label, attack, scores in _successful_rows(path / SCORES, COMPARE_COLUMNS):
            if label not in found:
                raise TracekitError(
                    f"{path / SCORES}: rows of detector '{label}', which {RUNS_COMPARISON} does not list; {HOW_TO_FIX}"
                )
            clean, per_attack = found[label]
            target = clean if attack == "clean" else per_attack.get(attack)
            if target is None:
                target = per_attack[attack] = Distribution.spanning(*ranges[label])
            target.add(scores)
    except FileNotFoundError as exc:
        raise TracekitError(
            f"{path} is not a finished comparison of runs: {Path(exc.filename).name} is missing"
        ) from None
    for label, per_attack in document["detectors"].items():
        clean, adversarial = found[label]
        for attack in per_attack:
            adversarial.setdefault(attack, Distribution.spanning(*ranges.get(label, [0, 1])))
    return RunsData(path, document, found)


def _successful_rows(path: Path, columns: tuple[str, ...], rows: int = 65_536) -> Iterator[tuple[str, str, np.ndarray]]:
    """`(detector, attack, scores)` of a comparison's `scores.csv`, the clean rows and the
    successful adversarials' ones, in batches of at most `rows` rows per pair."""
    pending: dict[tuple[str, str], list[float]] = {}
    count = 0
    for row in score_rows(path, columns):
        if row["attack"] == "clean" or row["success"] == "1":
            pending.setdefault((row["detector"], row["attack"]), []).append(float(row["score"]))
            count += 1
        if count >= rows:
            yield from ((label, attack, np.asarray(v)) for (label, attack), v in pending.items())
            pending, count = {}, 0
    yield from ((label, attack, np.asarray(v)) for (label, attack), v in pending.items())
