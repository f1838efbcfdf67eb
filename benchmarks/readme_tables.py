"""The README's result tables, regenerated: runs the example specs (or reads finished runs) and
prints the tables as Markdown, with the versions of torch, ART and tracekit that produced them.

    python benchmarks/readme_tables.py                      # runs the six specs into runs/readme/
    python benchmarks/readme_tables.py --reuse              # only reads runs/readme/* (already run)
    python benchmarks/readme_tables.py --reuse --figures docs/figures   # and refreshes the README's figures

The specs: examples/compare.yaml and examples/challenge.yaml (the embedded digits),
examples/scenes.yaml, examples/scenes-compare.yaml, examples/adaptive.yaml and examples/field.yaml
(the digit scenes). Each run's wall time
(cold when the cache is empty, e.g. `TRACEKIT_CACHE=$(mktemp -d)`) is printed beside its table.
Other library versions train slightly different embedded models, so other numbers; the
versions printed are those of the runs read (their `spec.resolved.yaml`).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
RUNS = {  # run directory name -> (command, spec)
    "compare": ("compare", "examples/compare.yaml"),
    "challenge": ("run", "examples/challenge.yaml"),
    "scenes": ("run", "examples/scenes.yaml"),
    "scenes-compare": ("compare", "examples/scenes-compare.yaml"),
    "adaptive": ("compare", "examples/adaptive.yaml"),
    "field": ("compare", "examples/field.yaml"),
}
BASELINES = ["paper", "feature-squeezing", "kd-bu", "lid", "mahalanobis"]
BASELINE_NAMES = ["paper's detector", "feature squeezing", "KD+BU", "LID", "Mahalanobis"]
PAPERS = ["fgsm", "gradient", "pixel", "deepfool", "boundary"]


def run(out: Path, reuse: bool) -> dict[str, float | None]:
    """Run each spec into `out/<name>` (unless `reuse`); its wall seconds, None when reused."""
    seconds: dict[str, float | None] = {}
    for name, (command, spec) in RUNS.items():
        target = out / name
        if reuse:
            if not (target / "metrics.json").is_file():
                raise SystemExit(f"{target} holds no finished run; run without --reuse first")
            seconds[name] = None
            continue
        if target.exists():
            raise SystemExit(f"{target} exists; remove it or pass --reuse")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "tracekit", command, spec, "--out", str(target)], cwd=ROOT, check=True)
        seconds[name] = time.perf_counter() - start
    return seconds


def metrics(out: Path, name: str) -> dict[str, Any]:
    return json.loads((out / name / "metrics.json").read_text())


def cell(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def baselines_table(m: dict[str, Any]) -> list[str]:
    """AUC per attack of the paper's detector and the four baselines, and each attack's success."""
    detectors = m["detectors"]
    lines = ["| attack | success | " + " | ".join(BASELINE_NAMES) + " |", "|---" * (len(BASELINES) + 2) + "|"]
    for attack in PAPERS:
        first = detectors["paper"]["attacks"][attack]
        aucs = [cell(detectors[d]["attacks"][attack].get("auc")) for d in BASELINES]
        lines.append(f"| {attack} | {cell(first['success_rate'])} | " + " | ".join(aucs) + " |")
    return lines


def field_table(m: dict[str, Any]) -> list[str]:
    """Every detector of the field: AUC per attack (the paper's five), fit seconds and scoring
    milliseconds per image."""
    lines = ["| detector | " + " | ".join(PAPERS) + " | fit s | score ms/image |", "|---" * (len(PAPERS) + 3) + "|"]
    for label, entry in m["detectors"].items():
        aucs = [cell(entry["attacks"][attack].get("auc")) for attack in PAPERS]
        cost = entry.get("cost") or {}
        per_image = 1000 * cost["score_seconds"] / cost["scored_images"] if cost.get("scored_images") else None
        lines.append(
            f"| {label} | " + " | ".join(aucs) + f" | {cell(cost.get('fit_seconds'), 1)} | {cell(per_image)} |"
        )
    return lines


def adaptive_table(m: dict[str, Any]) -> list[str]:
    """Per detector, plain PGD and the adaptive attack side by side: AUC, TPR at 5% FPR, the
    evasion rate at the detector's calibrated threshold ("n/a" where no adaptive attack could run)
    and the adaptive attack's seconds (0 when it was read from the attack cache)."""
    lines = [
        "| detector | PGD AUC | PGD TPR@5% | PGD evades | adaptive AUC | adaptive TPR@5% | adaptive evades "
        "| adaptive s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    names = dict(zip(BASELINES, BASELINE_NAMES))
    for key, entry in m["detectors"].items():
        cells = []
        for attack in ("pgd", "adaptive"):
            a = entry["attacks"].get(attack)
            cells += (
                ["n/a"] * 3 if a is None else [cell(a["auc"]), cell(a["tpr_at_fpr"]["0.05"]), cell(a["evasion_rate"])]
            )
        adaptive = entry["attacks"].get("adaptive")
        cells.append("n/a" if adaptive is None else f"{adaptive['seconds']:.0f}")
        lines.append(f"| {names.get(key, key)} | " + " | ".join(cells) + " |")
    return lines


def side_by_side(digits: dict[str, Any], scenes: dict[str, Any]) -> list[str]:
    """Per attack, digits then scenes: AUC, TPR at 1/5/10% FPR, noise controls, randomized model, evasion."""
    lines = [
        "| attack | setting | success | AUC [95% CI] | TPR@1% | TPR@5% | TPR@10% "
        "| sign-noise AUC | gauss-noise AUC | random-model AUC | evades |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for attack in digits["attacks"]:
        for setting, m in (("digits", digits), ("scenes", scenes)):
            a = m["attacks"][attack]
            ci = a.get("auc_ci") or [None, None]
            tpr = a["tpr_at_fpr"]
            noise = a.get("noise", {})
            lines.append(
                f"| {attack if setting == 'digits' else ''} | {setting} | {cell(a['success_rate'])} | "
                f"{cell(a['auc'])} [{cell(ci[0])}, {cell(ci[1])}] | {cell(tpr['0.01'])} | {cell(tpr['0.05'])} | "
                f"{cell(tpr['0.1'])} | {cell(noise.get('sign', {}).get('auc'))} | "
                f"{cell(noise.get('gaussian', {}).get('auc'))} | "
                f"{cell(a.get('randomized_model', {}).get('auc'))} | {cell(a.get('evasion_rate'))} |"
            )
    return lines


def clean_entropy(out: Path, name: str) -> str:
    """Mean and median of the clean test images' scores (mean 3x3 local entropy, bits)."""
    with (out / name / "scores.csv").open() as rows:
        scores = [float(r["score"]) for r in csv.DictReader(rows) if r["attack"] == "clean"]
    return f"mean {statistics.mean(scores):.2f}, median {statistics.median(scores):.2f} bits ({len(scores)} images)"


def versions(out: Path) -> str:
    seen = []
    for name in RUNS:
        spec = yaml.safe_load((out / name / "spec.resolved.yaml").read_text())
        v = spec["provenance"]["versions"]
        line = (
            f"tracekit {v['tracekit']}, torch {v['torch']}, "
            f"adversarial-robustness-toolbox {v['adversarial-robustness-toolbox']}, python {v['python']}"
        )
        if line not in seen:
            seen.append(line)
    return "; ".join(seen)


def figures(out: Path, target: Path) -> None:
    """The README's figures: score histograms and FGSM example panels of the digits and the scenes,
    scaled to 1000 px wide, 256 colours."""
    from PIL import Image

    target.mkdir(parents=True, exist_ok=True)
    for name, setting in (("challenge", "digits"), ("scenes", "scenes")):
        for figure in ("score_hist", "examples_fgsm"):
            image = Image.open(out / name / f"{figure}.png").convert("RGB")
            image = image.resize((1000, round(image.height * 1000 / image.width)), Image.LANCZOS)
            image.quantize(256).save(target / f"{setting}_{figure}.png", optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=ROOT / "runs" / "readme", help="where the runs go (default runs/readme)"
    )
    parser.add_argument("--reuse", action="store_true", help="read the runs already in --out instead of running")
    parser.add_argument("--figures", type=Path, help="also write the README's figures into this folder")
    args = parser.parse_args()
    seconds = run(args.out, args.reuse)
    if args.figures:
        figures(args.out, args.figures)
    took = {name: "" if s is None else f" ({s:.0f} s)" for name, s in seconds.items()}
    print(f"Produced with {versions(args.out)}.\n")
    print(f"### The embedded digits: ROC AUC per attack (`tracekit compare examples/compare.yaml`{took['compare']})\n")
    print("\n".join(baselines_table(metrics(args.out, "compare"))))
    print(
        "\n### Digits against scenes, the paper's detector "
        f"(`tracekit run examples/challenge.yaml`{took['challenge']}, "
        f"`tracekit run examples/scenes.yaml`{took['scenes']})\n"
    )
    print("\n".join(side_by_side(metrics(args.out, "challenge"), metrics(args.out, "scenes"))))
    print(
        f"\nClean test images' mean 3x3 local entropy (the paper's score; at most log2 9 = 3.17 bits): "
        f"digits {clean_entropy(args.out, 'challenge')}; scenes {clean_entropy(args.out, 'scenes')}."
    )
    print(
        "\n### The digit scenes: ROC AUC per attack "
        f"(`tracekit compare examples/scenes-compare.yaml`{took['scenes-compare']})\n"
    )
    print("\n".join(baselines_table(metrics(args.out, "scenes-compare"))))
    print(
        "\n### The digit scenes against an attacker who knows each detector "
        f"(`tracekit compare examples/adaptive.yaml`{took['adaptive']})\n"
    )
    print("\n".join(adaptive_table(metrics(args.out, "adaptive"))))
    print(f"\n### The digit scenes, every detector (`tracekit compare examples/field.yaml`{took['field']})\n")
    print("\n".join(field_table(metrics(args.out, "field"))))


if __name__ == "__main__":
    main()
