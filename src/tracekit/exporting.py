"""`tracekit.export`: a finished run's adversarials, to take away.

A run keeps its adversarials in the attack cache (they are the expensive step, and a run of
50,000 images cannot copy them all); its `attacks.json` names, per attack and detector, the
outcomes table and the cache directory. `export` reads them back chunk by chunk (every cache entry
checked, as a resumed run checks it), reads the clean originals from the run's dataset, and
writes per attack either one `.npz` per chunk (`original`, `adversarial`, `perturbation` float32
`[N,C,H,W]`, `sample_id`) or 8-bit PNG files (original, adversarial, and the perturbation mapped
from [-1, 1] to [0, 255]), plus `index.csv` (sample_id, attack, file, label, pred, success, score,
l2, linf). A PNG holds 8-bit pixels, so the PNG export predicts the quantized adversarials again
and says how many still change the model's prediction. Memory holds one chunk at a time.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import TracekitError, did_you_mean
from .layout import TableNames

FORMATS = ("npz", "png")
INDEX_COLUMNS = ("sample_id", "attack", "file", "label", "pred", "success", "score", "l2", "linf")


@dataclass
class Exported:
    """What `export` wrote: its directory, and per exported attack its images, successful ones,
    and (PNG) how many quantized adversarials still change the prediction."""

    out: Path
    attacks: dict[str, dict[str, Any]] = field(default_factory=dict)


def _safe(name: str, taken: set[str]) -> str:
    from .report.figures import file_stem

    return file_stem(name, taken)


def export(
    run_dir: str | Path,
    out: str | Path,
    attack: str | None = None,
    fmt: str = "npz",
    device: str | None = None,
    trust_code: bool = False,
) -> Exported:
    """Write the adversarials of `run_dir` (of its attack labelled `attack`, else all) into `out`
    as `fmt` (`npz` or `png`); see the module's docstring. `trust_code`: as `tracekit.detect`'s."""
    from .detecting import require_trust
    from .engine.attack_cache import AttackCache
    from .engine.attacking import AttackRun
    from .engine.context import build_context
    from .engine.device import resolve_device
    from .engine.tables import Table
    from .report.rundata import read_attacks, read_run

    if fmt not in FORMATS:
        raise TracekitError(f"--format {fmt!r}: one of {', '.join(FORMATS)}")
    run = read_run(run_dir)
    tables = {f"{t.label}@{t.tag}" if t.bound else t.label: t for t in read_attacks(run.dir)}
    if attack is not None:
        if attack not in tables and attack not in {t.label for t in tables.values()}:
            raise TracekitError(f"{run.dir} has no attack '{attack}'{did_you_mean(attack, list(tables))}")
        tables = {name: t for name, t in tables.items() if attack in (name, t.label)}
    require_trust(run.spec.model, run.dir, trust_code)
    context = build_context(run.spec, resolve_device(device or run.spec.device))
    target = Path(out)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TracekitError(f"cannot create the export directory {target}: {exc.strerror}") from None
    result = Exported(target)
    taken: set[str] = set()
    with open(target / "index.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(INDEX_COLUMNS)
        for name, entry in tables.items():
            if entry.cache is None:
                raise TracekitError(
                    f"attack {name}: the run kept its adversarials in its own folder, removed when it ended "
                    "(run with the attack cache, without --no-cache, to export them)"
                )
            table = Table(run.dir, entry.table)
            attack_run = AttackRun(name, table, AttackCache.opened(Path(entry.cache)), table.chunks(), entry.per_image)
            folder = target / _safe(name, taken)
            folder.mkdir(exist_ok=True)
            scores = _scores(run.dir, entry.tag, entry.table)
            result.attacks[name] = _export_attack(context, attack_run, folder, fmt, scores, writer)
    return result


def _scores(run_dir: Path, tag: str, table: str) -> dict[int, float]:
    """The run's detector `tag`'s scores of the attack's adversarials, by position (test images only)."""
    from .engine.tables import Table

    scores = Table(run_dir, TableNames.scores(tag, table))
    if not scores.exists():
        return {}
    rows = scores.read(["index", "score"])
    return dict(zip(rows["index"].tolist(), rows["score"].tolist()))


def _export_attack(
    context: Any, attack_run: Any, folder: Path, fmt: str, scores: dict[int, float], writer: Any
) -> dict[str, Any]:
    """One attack's adversarials, chunk by chunk, into `folder`, and its rows of `index.csv`."""
    from .engine.predicting import probabilities
    from .executing import Chunk

    outcomes = attack_run.table.read()
    at = {int(p): k for k, p in enumerate(outcomes["index"])}
    counts = {"images": 0, "successful": 0}
    still, stems = 0, set()
    for chunk_name, positions, ids, adversarial in attack_run.adversarials(attack_run.chunks):
        (batch,) = list(context.reader.read([Chunk(chunk_name, positions)]))
        if not np.array_equal(batch.index, positions):
            raise TracekitError(f"attack {attack_run.key}: an original of chunk {chunk_name} can no longer be read")
        rows = [at[int(p)] for p in positions]
        success = outcomes["success"][rows].astype(bool)
        original, adversarial = batch.images, adversarial.float()
        perturbation = adversarial - original
        if fmt == "npz":
            np.savez_compressed(
                folder / f"{chunk_name}.npz", original=original.numpy(), adversarial=adversarial.numpy(),
                perturbation=perturbation.numpy(), sample_id=np.asarray(ids, dtype=str),
            )  # fmt: skip
            files = [f"{chunk_name}.npz"] * len(ids)
        else:
            quantized = (adversarial * 255).round() / 255  # what the PNG files hold
            preds = probabilities(context.model.module, quantized, context.device, context.model_who).argmax(1)
            still += int((success & (preds.numpy() != outcomes["label"][rows])).sum())
            files = []
            for k, sample_id in enumerate(ids):
                stem = _safe(sample_id, stems)
                _png(folder / f"{stem}.original.png", original[k])
                _png(folder / f"{stem}.adversarial.png", adversarial[k])
                _png(folder / f"{stem}.perturbation.png", (perturbation[k] + 1) / 2)  # [-1, 1] -> [0, 1]
                files.append(f"{stem}.adversarial.png")
        for k, (sample_id, row) in enumerate(zip(ids, rows)):
            score = scores.get(int(positions[k]))
            writer.writerow([
                sample_id, attack_run.key, f"{folder.name}/{files[k]}", int(outcomes["label"][row]),
                int(outcomes["pred"][row]), int(success[k]),
                "" if score is None or not math.isfinite(score) else repr(float(score)),
                repr(float(outcomes["l2"][row])), repr(float(outcomes["linf"][row])),
            ])  # fmt: skip
        counts["images"] += len(ids)
        counts["successful"] += int(success.sum())
    if fmt == "png":
        counts["still_successful_after_8bit"] = still
    return counts


def _png(path: Path, image: Any) -> None:
    """`[C,H,W]` in [0, 1] as an 8-bit gray or RGB PNG."""
    from PIL import Image

    array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(array[..., 0] if array.shape[2] == 1 else array).save(path)
