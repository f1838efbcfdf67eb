"""The clean stage: every image's prediction and its part (fit, test) in the `clean` table.

The split is decided image by image: an image's part depends only on its sample id and the
seed (`fit_score`: a seeded hash mapped to [0, 1), fit when below `calibration.fit_fraction`),
never on which other images a run, a shard or a batch holds. `fit_fraction` is therefore the
expected share of the fit part, not an exact count.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..checks import checked
from ..errors import TracekitError
from ..executing import Chunk, Executor
from ..layout import TableNames
from ..progress import progress
from .context import RunContext
from .dispatch import execute
from .reading import Batch, chunks
from .tables import Table

FIT, TEST = "fit", "test"


@torch.no_grad()
def predict(
    module: nn.Module, images: torch.Tensor, batch_size: int, device: torch.device, description: str = ""
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(predicted class [N], softmax probabilities [N,K])` of images in memory, on the CPU."""
    preds, probs = [], []
    with progress(description or "predicting", total=len(images)) as advance:
        for start in range(0, len(images), batch_size):
            p = probabilities(module, images[start : start + batch_size], device)
            preds.append(p.argmax(1))
            probs.append(p)
            advance(len(p))
    return torch.cat(preds), torch.cat(probs)


@torch.no_grad()
def probabilities(
    module: nn.Module, images: torch.Tensor, device: torch.device, who: str = "the model"
) -> torch.Tensor:
    """Softmax probabilities `[N,K]` of one batch, on the CPU; the logits checked (`who` names the model)."""
    logits = checked(module(images.to(device, non_blocking=True)), who, (len(images), None), "logits")
    return torch.softmax(logits.float(), dim=1).cpu()


def fit_score(ids: list[str], seed: int | str) -> np.ndarray:
    """A number in [0, 1) per sample id, from the id and the seed (or a seeded salt) alone (sha256)."""
    return np.array([int.from_bytes(hashlib.sha256(f"{seed}:{i}".encode()).digest()[:8], "big") / 2**64 for i in ids])


@dataclass
class Clean:
    """The `clean` table, read back: one entry per readable image, by dataset position."""

    index: np.ndarray
    ids: np.ndarray
    labels: np.ndarray
    preds: np.ndarray
    confidence: np.ndarray
    part: np.ndarray

    def positions(self, part: str) -> np.ndarray:
        return self.index[self.part == part]

    def by_position(self, values: np.ndarray) -> np.ndarray:
        """`values` (one per row) in an array indexed by dataset position."""
        return by_position(self.index, values, int(self.index.max()) + 1)


def by_position(index: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """An array of `size` indexed by position, holding `values[k]` at `index[k]` (zero elsewhere)."""
    out = np.zeros(size, dtype=values.dtype)
    out[index] = values
    return out


@dataclass
class PredictClean:
    """The clean stage: each image's prediction, confidences and part, one chunk at a time; the
    ids and reasons of unreadable items go to the `skipped` table."""

    table: Table
    skipped: Table
    seed: int
    fit_fraction: float
    predicted_labels: bool  # the model's prediction is the label (data.labels: predicted)

    def run(self, context: RunContext, pieces: list[Chunk]) -> Iterator[int]:
        done = self.table.done()  # a retried shard keeps the chunks it finished
        for batch in context.reader.read([p for p in pieces if p.name not in done]):
            self.write(batch, context)
            yield len(batch.chunk.index)

    def write(self, batch: Batch, context: RunContext) -> None:
        """One chunk's rows; a chunk none of whose images could be read (`Batch.empty`) is written
        without rows (the chunk is done: a resumed run passes over it) and never reaches the model."""
        if batch.empty:
            probs = torch.zeros(0, context.model.num_classes)
        else:
            probs = probabilities(context.model.module, batch.images, context.device, context.model_who)
        preds = probs.argmax(1)
        labels = preds if self.predicted_labels else batch.labels
        correct = (preds == labels).numpy()
        part = np.where(fit_score(batch.ids, self.seed) < self.fit_fraction, FIT, TEST)
        if batch.skipped:
            self.skipped.write(
                batch.chunk.name, {"sample_id": list(batch.skipped), "reason": list(batch.skipped.values())}
            )
        self.table.write(batch.chunk.name, {
            "index": batch.index,
            "sample_id": batch.ids or np.zeros(0, dtype=str),  # typed, even without rows
            "label": labels.numpy(),
            "pred": preds.numpy(),
            "confidence": probs.gather(1, preds[:, None])[:, 0].double().numpy(),
            "gt_confidence": probs.gather(1, labels[:, None])[:, 0].double().numpy(),
            "correct": correct,
            "part": np.where(correct, part, ""),
        })  # fmt: skip


def clean_stage(
    executor: Executor, context: RunContext, seed: int, fit_fraction: float, predicted_labels: bool, where: str = "data"
) -> Clean:
    """Predict every image not yet in the `clean` table and read the table back. A dataset with
    random access is cut into chunks for the executor; one that only iterates is read here, in
    one pass (its positions are known only by reading it)."""
    stage = PredictClean(
        context.table(TableNames.CLEAN), context.table(TableNames.SKIPPED), seed, fit_fraction, predicted_labels
    )
    reader, size = context.reader, context.spec.batch_size
    if reader.random_access:
        execute(executor, stage, chunks(np.arange(len(reader)), size), "predict clean")
    else:
        with progress("predict clean", total=None) as advance:
            for batch in reader.read_all(size, stage.table.done()):
                stage.write(batch, context)
                advance(len(batch.ids))
    return read_clean(stage.table, where)


def skipped_items(table: Table) -> dict[str, str]:
    """Unreadable items of the run: sample id -> reason."""
    if not table.exists():
        return {}
    rows = table.read()
    return dict(sorted(zip(rows["sample_id"].tolist(), rows["reason"].tolist())))


def read_clean(table: Table, where: str = "data") -> Clean:
    """The clean table, checked: some images, unique ids, both parts populated."""
    rows = table.read() if table.exists() else {}
    if not rows or not len(rows["index"]):
        raise TracekitError(f"{where}: the dataset has no (readable) images; check its path, split or limit")
    ids = rows["sample_id"]
    unique, counts = np.unique(ids, return_counts=True)
    if len(unique) != len(ids):
        raise TracekitError(
            f"{where}: the dataset yields duplicate sample ids (e.g. '{unique[counts > 1][0]}'); ids must be unique"
        )
    clean = Clean(rows["index"], ids, rows["label"], rows["pred"], rows["confidence"], rows["part"])
    n_fit, n_test = int((clean.part == FIT).sum()), int((clean.part == TEST).sum())
    if not n_fit or not n_test:
        raise TracekitError(
            f"only {n_fit + n_test} correctly classified image(s), {n_fit} in the fit part and {n_test} in the test "
            "part: too few to split; use more images (data.limit) or a better model"
        )
    return clean
