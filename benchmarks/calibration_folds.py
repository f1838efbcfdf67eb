"""How close each learning detector's threshold comes to its target FPR, by the number of
cross-fitting folds (`calibration.folds`), and what the folds cost.

A detector that learns scores its own fit images as cleaner than new ones, so the threshold comes
from cross-fitted scores (docs/method.md): each fold's images are scored by a copy fitted on the
other folds. That copy learned from fewer images than the detector that scores the test part, so
it scores new images a little higher, and the threshold is too high (a realized FPR below the
target): with 2 folds a copy has half the images (kNN's k-th neighbour among half the bank, ViM's
subspace from half the features). More folds shrink the gap and cost more fits.

One comparison of the ten learning detectors on the digit scenes (all 540 test-split scenes: 253 fit
and 274 clean test images; one attack, FGSM, whose adversarials LID, KD+BU and multiLID learn from),
once per fold count. Printed: the realized FPR on the clean test images per detector (target 5%;
with 274 images its standard error is 1.3 points) and the seconds each spent fitting and
cross-fitting (`cost.fit_seconds` of metrics.json), side by side.

    python benchmarks/calibration_folds.py                  # folds 2, 5, 10: about 9 minutes on 2 cores
    python benchmarks/calibration_folds.py --folds 2 5
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import tracekit

DETECTORS = ["lid", "mahalanobis", "kd-bu", "knn", "vim", "nss", "magnet", "multilid", "nic", "dnr"]


def spec(folds: int, limit: int) -> dict:
    return {
        "name": f"folds-{folds}",
        "seed": 0,
        "device": "cpu",
        "model": {"name": "digit-scenes-cnn"},
        "data": {"name": "digit-scenes", "split": "test", "limit": limit},
        "attacks": [{"name": "fgsm", "eps": 0.1, "backend": "native"}],
        "detectors": [{"name": "knn", "k": 5} if name == "knn" else {"name": name} for name in DETECTORS],
        "calibration": {"fit_fraction": 0.5, "target_fpr": 0.05, "folds": folds},
        "evaluation": {"bootstrap": 0, "transfer": False},
        "batch_size": 128,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folds", type=int, nargs="+", default=[2, 5, 10])
    parser.add_argument("--limit", type=int, default=600)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for folds in args.folds:
            path = Path(tmp) / f"folds-{folds}.json"
            path.write_text(json.dumps(spec(folds, args.limit)))
            result = tracekit.compare(tracekit.load_spec(path), out=Path(tmp) / f"run-{folds}")
            results[folds] = json.loads((result.out_dir / "metrics.json").read_text())
    first = results[args.folds[0]]
    print(f"\nrealized FPR on the {first['data']['n_test']} clean test images (target {first['target_fpr']:.0%}); "
          "seconds fitting and cross-fitting")  # fmt: skip
    print("| detector | " + " | ".join(f"FPR, {f} folds" for f in args.folds)
          + " | " + " | ".join(f"s, {f} folds" for f in args.folds) + " |")  # fmt: skip
    print("|---" * (1 + 2 * len(args.folds)) + "|")
    for name in DETECTORS:
        rows = [results[f]["detectors"][name] for f in args.folds]
        fprs = [next(iter(r["attacks"].values()))["fpr"] for r in rows]
        seconds = [r["cost"]["fit_seconds"] for r in rows]
        print(
            f"| {name} | "
            + " | ".join(f"{x:.3f}" for x in fprs)
            + " | "
            + " | ".join(f"{s:.0f}" for s in seconds)
            + " |"
        )
    totals = [sum(results[f]["detectors"][d]["cost"]["fit_seconds"] for d in DETECTORS) for f in args.folds]
    print("| all | " + " | ".join("" for _ in args.folds) + " | " + " | ".join(f"{s:.0f}" for s in totals) + " |")


if __name__ == "__main__":
    main()
