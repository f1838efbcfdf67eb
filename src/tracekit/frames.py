"""`tracekit.read_tables(run_dir)`: a finished run's per-sample tables as pandas DataFrames, named by
attack and detector labels rather than by the numbers the run directory uses on disk.

On disk a table is `tables/attack-01`, `tables/scores-d00-attack-01`, ... (`tracekit.layout`),
numbered in spec order; `attacks.json` and `metrics.json` say which attack and detector a number
is. Here the same tables are called `attack/<label>`, `scores/<detector>/<what>` (`what`: `fit`,
`fit-subset`, `clean`, an attack's label, or `<label>/noise-<kind>`), with the randomized-model
and transfer controls' detectors as `<detector> (randomized model)` and `<detector> (fitted on
<attack>)`. pandas is an optional extra: `pip install 'tracekit[pandas]'`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .errors import TracekitError
from .layout import RunLayout, TableNames
from .spec import component_label

_SCORES = re.compile(r"^scores-(d\d\d)(-random|-transfer(\d\d))?-(.+)$")


def table_labels(run_dir: str | Path) -> dict[str, str]:
    """`{table folder name: readable name}` for every table of a finished run."""
    from .report.rundata import read_attacks, read_run

    run = read_run(run_dir)
    layout = RunLayout(run.dir)
    attacks = read_attacks(run.dir) if layout.attacks.is_file() else []
    detectors = list(run.metrics["detectors"]) if run.is_comparison else [component_label(run.spec.detector)]
    tags = {TableNames.detector(i): label for i, label in enumerate(detectors)}
    tables = {a.table: f"{a.label}@{tags.get(a.tag, a.tag)}" if a.bound else a.label for a in attacks}
    unbound = [a.label for a in attacks if not a.bound]
    names = {TableNames.CLEAN: TableNames.CLEAN, TableNames.SKIPPED: TableNames.SKIPPED}
    for folder in sorted(p.name for p in layout.tables.iterdir() if p.is_dir()) if layout.tables.is_dir() else []:
        if folder in tables:
            names[folder] = f"attack/{tables[folder]}"
        elif match := _SCORES.match(folder):
            tag, variant, source, what = match.groups()
            detector = tags.get(tag, tag)
            if variant == "-random":
                detector += " (randomized model)"
            elif variant:
                k = int(source)
                detector += f" (fitted on {unbound[k] if k < len(unbound) else source})"
            names[folder] = f"scores/{detector}/{_what(what, tables)}"
    return names


def _what(what: str, tables: dict[str, str]) -> str:
    """The scored set of a scores table: an attack's label (and noise control) for an attack table."""
    for table, label in tables.items():
        if what == table:
            return label
        if what.startswith(f"{table}-noise-"):
            return f"{label}/noise-{what.removeprefix(f'{table}-noise-')}"
    return what


def read_tables(run_dir: str | Path) -> dict[str, Any]:
    """Every per-sample table of a finished run as a pandas DataFrame, by readable name
    (`table_labels`), rows sorted by dataset position (`index`)."""
    try:
        import pandas as pd
    except ImportError:
        raise TracekitError("read_tables needs pandas: pip install 'tracekit[pandas]'") from None
    from .engine.tables import Table

    frames = {}
    for folder, name in table_labels(run_dir).items():
        table = Table(Path(run_dir), folder)
        if table.exists():
            frames[name] = pd.DataFrame(table.read())
    return frames
