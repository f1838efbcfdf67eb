"""The run directory's layout: every file and table a run, a comparison or a comparison of runs
writes, named in one place. The engine writes them; the report, `compare RUN_DIR...`, `detect` and
`explain` read them. This module imports neither torch nor the engine.

A run directory (`tracekit run`; `tracekit compare SPEC` writes the same with several detectors):

- `spec.resolved.yaml`: the spec with every default filled in, and the run's provenance.
- `metrics.json`: the per-attack numbers (a comparison's: per detector, then per attack).
- `scores.csv`: one row per scored image (a comparison's rows start with the detector's label).
- `detector.json` (+ `detector_state.pt` for a detector that learns): what `tracekit detect`
  needs; a comparison keeps one per detector under `detectors/<NN>-<label>/`.
- `attacks.json`: per attack (spec order), its label, name and, per detector tag, its outcomes
  table and the attack-cache directory holding its adversarials (`tracekit export` reads them).
- `examples.npz`: a few test images per attack, their adversarials and the detector's pictures of
  both (its maps and its score's map, where it has them), so the report needs neither torch nor
  the model.
- `tables/<name>/`: the per-sample tables (`TableNames`), Parquet files written chunk by chunk.
- while it runs, in its work directory only: `.stage-key` (what its tables were computed for) and
  `adversarials/` (the attack results of a run without the attack cache).

A comparison of finished runs (`tracekit compare RUN_DIR...`) writes `comparison.json` and
`scores.csv`. Both kinds get `report.html` and PNG figures from `tracekit report`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

RESOLVED_SPEC = "spec.resolved.yaml"
METRICS = "metrics.json"
SCORES = "scores.csv"
DETECTOR = "detector.json"
DETECTOR_STATE = "detector_state.pt"
DETECTORS = "detectors"
EXAMPLES = "examples.npz"
ATTACKS = "attacks.json"
TABLES = "tables"
REPORT = "report.html"
RUNS_COMPARISON = "comparison.json"  # marks (and describes) a directory of finished runs compared
KEY_FILE = ".stage-key"
ADVERSARIALS = "adversarials"
SCRATCH = (ADVERSARIALS, KEY_FILE)  # work files a finished run does not keep
DETECTOR_FORMAT = 1  # bump when detector.json changes incompatibly
ATTACKS_FORMAT = 1  # bump when attacks.json changes incompatibly


class TableNames:
    """The names of a run's per-sample tables (folders under `tables/`).

    - `clean`: every readable image: index, sample_id, label, pred, confidence (of pred),
      gt_confidence, correct, part (`fit`, `test`, or empty for misclassified images).
    - `skipped`: unreadable items (sample_id, reason).
    - `attack-<NN>`: per attacked image of attack NN: pred, success, gt/target confidence, L2 and
      L-inf size of the perturbation, seconds, cached, content (the hash of the clean image's
      pixels its cached adversarial is addressed by); `attack-<NN>-<tag>` for an attack bound to
      detector `tag` (an adaptive attack has one per detector).
    - `scores-<tag>-<what>`: detector `tag`'s scores of one set of images: `fit`, `fit-subset`
      (cross-fitted), `clean` (the test part), an attack table's name (its adversarials), and the
      noise controls' `<attack table>-noise-<kind>`.
    Detector tags: `d<NN>` (a run's detector is `d00`), `d<NN>-random` (fitted to the randomized
    model), `d<NN>-transfer<KK>` (fitted on attack KK's adversarials alone).
    """

    CLEAN = "clean"
    SKIPPED = "skipped"

    @staticmethod
    def attack(index: int, tag: str | None = None) -> str:
        return f"attack-{index:02d}" if tag is None else f"attack-{index:02d}-{tag}"

    @staticmethod
    def scores(tag: str, what: str) -> str:
        return f"scores-{tag}-{what}"

    @staticmethod
    def noise(attack_table: str, kind: str) -> str:
        return f"{attack_table}-noise-{kind}"

    @staticmethod
    def detector(index: int) -> str:
        return f"d{index:02d}"

    @staticmethod
    def randomized(tag: str) -> str:
        return f"{tag}-random"

    @staticmethod
    def transfer(tag: str, source: int) -> str:
        return f"{tag}-transfer{source:02d}"


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run directory (or of its work directory while it runs)."""

    root: Path

    @property
    def spec(self) -> Path:
        return self.root / RESOLVED_SPEC

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def scores(self) -> Path:
        return self.root / SCORES

    @property
    def detector(self) -> Path:
        return self.root / DETECTOR

    @property
    def examples(self) -> Path:
        return self.root / EXAMPLES

    @property
    def attacks(self) -> Path:
        return self.root / ATTACKS

    @property
    def report(self) -> Path:
        return self.root / REPORT

    @property
    def runs_comparison(self) -> Path:
        return self.root / RUNS_COMPARISON

    @property
    def tables(self) -> Path:
        return self.root / TABLES

    @property
    def key_file(self) -> Path:
        return self.root / KEY_FILE

    @property
    def adversarials(self) -> Path:
        return self.root / ADVERSARIALS

    def table(self, name: str) -> Path:
        return self.root / TABLES / name

    def detectors(self) -> Path:
        """Where a comparison keeps its fitted detectors."""
        return self.root / DETECTORS

    def detector_dir(self, index: int, label: str) -> Path:
        """Where a comparison keeps its detector number `index` (labels made safe for file names)."""
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._") or "detector"
        return self.root / DETECTORS / f"{index:02d}-{safe}"
