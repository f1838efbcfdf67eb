"""Per-sample tables in the run directory: Parquet files written chunk by chunk.

A table is a folder `tables/<name>/` of Parquet files, one per finished chunk of images
(`<chunk>.parquet`, written to a temporary file and renamed, so a killed run never leaves half
a chunk). A stage skips the chunks its table already holds, which is what makes every stage
resumable and lets any shard of the images write its own chunks. Every table has an `index`
column (the image's position in the dataset) and is read back sorted by it; pandas opens one
with `pd.read_parquet("RUN_DIR/tables/clean")`, polars with `pl.read_parquet("RUN_DIR/tables/clean/*.parquet")`.

The tables of a run and their columns: `tracekit.layout.TableNames`. What is read back is checked
(a run directory is something people share and edit): chunk files must be regular files of
bounded size, and every column read is checked by its name (`COLUMN_CHECKS`: indices whole,
non-negative and unique, scores finite, confidences in [0, 1], ...), so a broken table is one
clear error naming it rather than a wrong figure or a crash later.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..bounded import check_file
from ..errors import TracekitError
from ..executing import Chunk
from ..layout import RunLayout

MAX_CHUNK_BYTES = 4 * 2**30


class Table:
    """One per-sample table: `write(chunk, columns)` once per chunk, `read()` all of it."""

    def __init__(self, run_dir: Path, name: str) -> None:
        self.name = name
        self.dir = RunLayout(Path(run_dir)).table(name)

    def done(self) -> set[str]:
        """Names of the chunks already written."""
        return {p.stem for p in self.dir.glob("*.parquet")} if self.dir.is_dir() else set()

    def write(self, chunk: str, columns: Mapping[str, Any]) -> None:
        """Write one chunk's rows atomically (temporary file in the same folder, then rename)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        table = pa.table({k: _column(v) for k, v in columns.items()})
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f".{chunk}.", suffix=".tmp")
        os.close(fd)
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, self.dir / f"{chunk}.parquet")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def chunks(self) -> list[Chunk]:
        """The table's chunks as written: each file's name and its rows' positions, sorted."""
        out = []
        for file in self._files():
            try:
                index = pq.read_table(file, columns=["index"]).column("index").to_numpy()
            except (OSError, KeyError, pa.ArrowInvalid) as exc:
                raise TracekitError(f"{file}: unreadable table chunk ({exc}){TABLE_FIX}") from None
            _check_column(file, "index", index)
            out.append(Chunk(file.stem, np.sort(index.astype(np.int64))))
        return out

    def _files(self) -> list[Path]:
        """The chunk files, each checked to be a regular file of at most `MAX_CHUNK_BYTES`."""
        files = sorted(self.dir.glob("*.parquet"))
        for file in files:
            check_file(file, "a table chunk", MAX_CHUNK_BYTES, TABLE_FIX)
        return files

    def exists(self) -> bool:
        return self.dir.is_dir() and any(self.dir.glob("*.parquet"))

    def stream(self, columns: list[str], rows: int = 65_536) -> Iterator[dict[str, np.ndarray]]:
        """The table's rows in batches of at most `rows`, file by file (not sorted): memory bounded
        whatever the table's size. Each batch's columns are checked as `read` checks them (an
        index repeated across batches is not seen: `read` sees it)."""
        if not self.exists():
            raise TracekitError(f"{self.dir} is missing: the run directory has no '{self.name}' table")
        for file in self._files():
            try:
                batches = pq.ParquetFile(file).iter_batches(batch_size=rows, columns=columns)
                for batch in batches:
                    out = {name: batch.column(name).to_numpy(zero_copy_only=False) for name in batch.schema.names}
                    missing = set(columns) - set(out)
                    if missing:
                        raise TracekitError(f"{file}: no column '{sorted(missing)[0]}'{TABLE_FIX}")
                    for name, values in out.items():
                        _check_column(file, name, values)
                    yield out
            except (OSError, KeyError, pa.ArrowInvalid) as exc:
                raise TracekitError(f"{file}: unreadable table chunk ({exc}){TABLE_FIX}") from None

    def read(self, columns: list[str] | None = None) -> dict[str, np.ndarray]:
        """Every row, sorted by `index`, as NumPy arrays (strings as object arrays)."""
        if not self.exists():
            raise TracekitError(f"{self.dir} is missing: the run directory has no '{self.name}' table")
        files = self._files()
        try:
            table = pa.concat_tables([pq.read_table(f, columns=columns) for f in files])
        except (OSError, KeyError, pa.ArrowInvalid) as exc:
            raise TracekitError(f"{self.dir}: unreadable table ({exc}){TABLE_FIX}") from None
        table = table.sort_by("index") if "index" in table.column_names else table
        out = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
        for name, values in out.items():
            _check_column(self.dir, name, values)
        return out


def _column(values: Any) -> pa.Array:
    if isinstance(values, np.ndarray):
        return pa.array(values)
    return pa.array(list(values))


TABLE_FIX = "; the run directory is broken: run its spec again with the same --out (the table is recomputed)"


def _whole(values: np.ndarray) -> str | None:
    if values.dtype.kind not in "iu":
        return f"holds {values.dtype} values, not whole numbers"
    if len(values) and values.min() < 0:
        return f"holds negative values ({int(values.min())})"
    return None


def _index(values: np.ndarray) -> str | None:
    problem = _whole(values)
    if problem is None and len(np.unique(values)) != len(values):
        return "holds one image more than once"
    return problem


def _finite(values: np.ndarray) -> str | None:
    if values.dtype.kind != "f":
        return f"holds {values.dtype} values, not numbers"
    bad = ~np.isfinite(values)
    return f"holds {int(bad.sum())} values that are not finite numbers" if bad.any() else None


def _non_negative(values: np.ndarray) -> str | None:
    problem = _finite(values)
    if problem is None and len(values) and values.min() < 0:
        return f"holds negative values ({float(values.min())})"
    return problem


def _probability(values: np.ndarray) -> str | None:
    problem = _finite(values)
    if problem is None and len(values) and (values.min() < 0 or values.max() > 1):
        return "holds values outside [0, 1]"
    return problem


def _flag(values: np.ndarray) -> str | None:
    return None if values.dtype == np.bool_ else f"holds {values.dtype} values, not true/false"


def _text(values: np.ndarray) -> str | None:
    if values.dtype != object or not all(isinstance(v, str) for v in values):
        return "holds values that are not text"
    return None


def _unique_text(values: np.ndarray) -> str | None:
    problem = _text(values)
    if problem is None and len(set(values)) != len(values):
        return "holds one sample id more than once"
    return problem


COLUMN_CHECKS: dict[str, Callable[[np.ndarray], str | None]] = {
    "index": _index,
    "sample_id": _unique_text,
    "label": _whole,
    "pred": _whole,
    "score": _finite,
    "confidence": _probability,
    "gt_confidence": _probability,
    "target_confidence": _probability,
    "l2": _non_negative,
    "linf": _non_negative,
    "seconds": _non_negative,
    "success": _flag,
    "correct": _flag,
    "cached": _flag,
    "part": _text,
    "content": _text,
    "reason": _text,
}


def _check_column(where: Path, name: str, values: np.ndarray) -> None:
    """The values of column `name` as `COLUMN_CHECKS` wants them (columns it does not name pass)."""
    check = COLUMN_CHECKS.get(name)
    problem = check(values) if check is not None else None
    if problem is not None:
        raise TracekitError(f"{where}: column '{name}' {problem}{TABLE_FIX}")
