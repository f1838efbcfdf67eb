"""Per-sample tables in the run directory: Parquet files written chunk by chunk.

A table is a folder `tables/<name>/` of Parquet files, one per finished chunk of images
(`<chunk>.parquet`, written to a temporary file and renamed, so a killed run never leaves half
a chunk). A stage skips the chunks its table already holds, which is what makes every stage
resumable and lets any shard of the images write its own chunks. Every table has an `index`
column (the image's position in the dataset) and is read back sorted by it; pandas opens one
with `pd.read_parquet("RUN_DIR/tables/clean")`, polars with `pl.read_parquet("RUN_DIR/tables/clean/*.parquet")`.

The tables of a run and their columns: `tracekit.layout.TableNames`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import TracekitError
from ..executing import Chunk
from ..layout import RunLayout


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
        for file in sorted(self.dir.glob("*.parquet")):
            try:
                index = pq.read_table(file, columns=["index"]).column("index").to_numpy()
            except (OSError, KeyError, pa.ArrowInvalid) as exc:
                raise TracekitError(f"{file}: unreadable table chunk ({exc})") from None
            out.append(Chunk(file.stem, np.sort(index.astype(np.int64))))
        return out

    def exists(self) -> bool:
        return self.dir.is_dir() and any(self.dir.glob("*.parquet"))

    def read(self, columns: list[str] | None = None) -> dict[str, np.ndarray]:
        """Every row, sorted by `index`, as NumPy arrays (strings as object arrays)."""
        if not self.exists():
            raise TracekitError(f"{self.dir} is missing: the run directory has no '{self.name}' table")
        files = sorted(self.dir.glob("*.parquet"))
        try:
            table = pa.concat_tables([pq.read_table(f, columns=columns) for f in files])
        except (OSError, pa.ArrowInvalid) as exc:
            raise TracekitError(f"{self.dir}: unreadable table ({exc})") from None
        table = table.sort_by("index") if "index" in table.column_names else table
        return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def _column(values: Any) -> pa.Array:
    if isinstance(values, np.ndarray):
        return pa.array(values)
    return pa.array(list(values))
