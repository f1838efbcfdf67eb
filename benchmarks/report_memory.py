"""`tracekit report`'s peak memory on a large run against a small one: the report streams its tables.

It runs `examples/quickstart.yaml` once (its own cache and run directory under `--work`), then
grows copies of that run directory to `--rows` clean test images and as many adversarials per
attack: the score and outcome tables are rewritten chunk by chunk (`--chunk` rows a file, the
scores drawn around the run's own), and `metrics.json`'s counts follow. `tracekit report` runs
on the original and on the grown copy, each in its own process; the script prints each one's
peak resident memory (the child's `ru_maxrss`), its seconds and the ratio large / small. Reading
whole tables, as the report did before it streamed, grows with the row count (about 3 GB at four
million rows); streamed, the ratio stays near 1.

    python benchmarks/report_memory.py --rows 4000000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]


def report(run_dir: Path) -> tuple[float, float]:
    """`(peak MiB, seconds)` of `tracekit report run_dir` in a fresh process."""
    code = (
        "import resource, sys; from tracekit.report import write_report; write_report(sys.argv[1]); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, str(run_dir)], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1]) / 1024, time.perf_counter() - started


def grow(source: Path, target: Path, rows: int, chunk: int) -> None:
    """A copy of run `source` whose test part has `rows` images, each attacked (see the module)."""
    shutil.copytree(source, target)
    rng = np.random.default_rng(0)
    metrics = json.loads((source / "metrics.json").read_text())
    clean_scores = pq.read_table(source / "tables" / "scores-d00-clean").column("score").to_numpy()
    mean, spread = float(clean_scores.mean()), float(clean_scores.std() or 1.0)
    index = np.arange(rows, dtype=np.int64)
    tables = {"scores-d00-clean": None}
    for k, key in enumerate(metrics["attacks"]):
        tables[f"attack-{k:02d}"] = key
        tables[f"scores-d00-attack-{k:02d}"] = key
    for name in tables:
        shutil.rmtree(target / "tables" / name)
        (target / "tables" / name).mkdir()
    for start in range(0, rows, chunk):
        part = index[start : start + chunk]
        ids = pa.array([f"img-{i}" for i in part])
        scores = pa.table({"index": part, "sample_id": ids, "score": rng.normal(mean, spread, len(part))})
        pq.write_table(scores, target / "tables" / "scores-d00-clean" / f"{start:09d}.parquet")
        for k, _ in enumerate(metrics["attacks"]):
            outcomes = pa.table({
                "index": part, "sample_id": ids, "label": np.zeros(len(part), np.int64),
                "pred": np.ones(len(part), np.int64), "success": np.ones(len(part), bool),
                "gt_confidence": np.full(len(part), 0.1), "target_confidence": np.full(len(part), 0.9),
                "l2": np.ones(len(part)), "linf": np.full(len(part), 0.1), "seconds": np.zeros(len(part)),
                "cached": np.zeros(len(part), bool), "content": pa.array(["-"] * len(part)),
            })  # fmt: skip
            pq.write_table(outcomes, target / "tables" / f"attack-{k:02d}" / f"{start:09d}.parquet")
            adversarial = scores.set_column(2, "score", pa.array(rng.normal(mean + spread, spread, len(part))))
            pq.write_table(adversarial, target / "tables" / f"scores-d00-attack-{k:02d}" / f"{start:09d}.parquet")
    metrics["data"]["n_test"] = rows
    for entry in metrics["attacks"].values():
        entry["n_attacked"] = rows
    (target / "metrics.json").write_text(json.dumps(metrics))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=4096)
    parser.add_argument("--work", type=Path, default=Path("/tmp/tracekit-report-memory"))
    args = parser.parse_args()
    if args.rows < 1000:  # the saved examples name images of the original run: the grown rows hold them
        parser.error("--rows: at least 1000")
    shutil.rmtree(args.work, ignore_errors=True)
    small, large = args.work / "small", args.work / "large"
    env = {**os.environ, "TRACEKIT_CACHE": str(args.work / "cache")}
    subprocess.run(
        [sys.executable, "-m", "tracekit", "run", str(ROOT / "examples" / "quickstart.yaml"), "--out", str(small)],
        check=True, env=env, capture_output=True,
    )  # fmt: skip
    grow(small, large, args.rows, args.chunk)
    small_mib, small_s = report(small)
    large_mib, large_s = report(large)
    n_small = json.loads((small / "metrics.json").read_text())["data"]["n_test"]
    print(f"{'run':>8} {'test images':>12} {'peak MiB':>9} {'seconds':>8}")
    print(f"{'small':>8} {n_small:>12,} {small_mib:>9.0f} {small_s:>8.1f}")
    print(f"{'large':>8} {args.rows:>12,} {large_mib:>9.0f} {large_s:>8.1f}")
    print(f"peak memory large / small: {large_mib / small_mib:.2f} for {args.rows / n_small:,.0f}x the rows")
    shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
