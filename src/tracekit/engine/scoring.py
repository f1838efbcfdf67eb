"""The scoring stage: a detector's scores of a stream of images, chunk by chunk, into a table.

`ScoreStage` is the picklable stage an executor runs on any shard of a source's chunks. Sources
of images: clean images from the dataset (`CleanImages`), an attack's adversarials from the
attack cache (`Adversarials`) and noise of an adversarial's size (`NoisyImages`, the noise
control). Scores must be finite: a
detector that returns NaN or infinity stops the run with the component and the image named,
rather than turning into a meaningless AUC.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from ..checks import checked
from ..errors import TracekitError
from ..executing import Chunk, Executor
from ..progress import progress
from ..protocols import Detector, LoadedModel
from .attacking import AttackRun
from .context import DetectorHandle, RunContext
from .dispatch import execute
from .predicting import by_position, probabilities
from .reading import chunks
from .tables import Table

Images = Iterator[tuple[str, np.ndarray, list[str], torch.Tensor]]
NOISE_KINDS = ("sign", "gaussian")


def score_images(
    detector: Detector,
    model: LoadedModel,
    images: torch.Tensor,
    batch_size: int,
    device: torch.device,
    description: str,
) -> np.ndarray:
    """Detector scores of images in memory, one device batch at a time."""
    out = []
    with progress(description, total=len(images)) as advance:
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size].to(device)
            out.append(detector.score(model.module, batch).detach().double().cpu())
            advance(len(batch))
    return torch.cat(out).numpy() if out else np.zeros(0)


class Source(Protocol):
    """Images to score, in named chunks: `pieces()` on the driver, `images(context, pieces)`
    (`(chunk name, positions, ids, images)` per chunk) wherever the stage runs."""

    def pieces(self) -> list[Chunk]: ...

    def images(self, context: RunContext, pieces: list[Chunk]) -> Images: ...


@dataclass
class CleanImages:
    """The dataset's images at `positions`, in chunks of `batch_size`."""

    positions: np.ndarray
    batch_size: int

    def pieces(self) -> list[Chunk]:
        return chunks(self.positions, self.batch_size)

    def images(self, context: RunContext, pieces: list[Chunk]) -> Images:
        for batch in context.reader.read(pieces):
            yield batch.chunk.name, batch.index, batch.ids, batch.images


@dataclass
class Adversarials:
    """An attack's adversarials of the images at `positions`, from the attack cache."""

    results: AttackRun
    positions: np.ndarray

    def pieces(self) -> list[Chunk]:
        return self.results.pieces(self.positions)

    def images(self, context: RunContext, pieces: list[Chunk]) -> Images:
        return self.results.adversarials(pieces)


@dataclass
class NoisyImages:
    """Each clean image plus random noise of its adversarial's size in `attack` (its table's
    `l2` and `linf` columns): sign noise of the L-inf size or Gaussian noise of the L2 size,
    clipped to [0, 1]; each image's noise is seeded from its id, so it is the same in any batch
    or shard."""

    clean: CleanImages
    kind: str
    attack: Table
    seed: int

    def pieces(self) -> list[Chunk]:
        return self.clean.pieces()

    def images(self, context: RunContext, pieces: list[Chunk]) -> Images:
        rows = self.attack.read(["index", "l2", "linf"])
        size = int(rows["index"].max()) + 1 if len(rows["index"]) else 0
        l2, linf = (by_position(rows["index"], rows[key], size) for key in ("l2", "linf"))
        for name, positions, ids, images in self.clean.images(context, pieces):
            noise = torch.stack([_noise(self.kind, tuple(images.shape[1:]), self.seed, i) for i in ids])
            if self.kind == "sign":
                scale = torch.from_numpy(linf[positions]).float()
            else:
                noise = noise / noise.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                scale = torch.from_numpy(l2[positions]).float()
            yield name, positions, ids, (images + noise * scale.view(-1, 1, 1, 1)).clamp(0, 1)


@dataclass
class ScoreStage:
    """A fitted detector's scores of a source of images, chunk by chunk, into `table`;
    `predictions` adds the trained model's prediction of each image (the noise control's)."""

    table: Table
    source: Source
    detector: DetectorHandle
    description: str
    predictions: bool = False

    def run(self, context: RunContext, pieces: list[Chunk]) -> Iterator[int]:
        detector, model = context.detector(self.detector), context.model_for(self.detector.model)
        done = self.table.done()  # a retried shard keeps the chunks it finished
        todo = [p for p in pieces if p.name not in done]
        for name, positions, ids, images in self.source.images(context, todo):
            try:
                scores = checked(detector.score(model.module, images.to(context.device, non_blocking=True)),
                                 self.detector.who, (len(ids),), "scores")  # fmt: skip
            except TracekitError as exc:
                raise TracekitError(f"{self.description} (images {ids[0]} .. {ids[-1]}): {exc}") from None
            columns = {"index": positions, "sample_id": ids, "score": scores.detach().double().cpu().numpy()}
            if self.predictions:
                columns["pred"] = (
                    probabilities(context.model.module, images, context.device, context.model_who).argmax(1).numpy()
                )
            self.table.write(name, columns)
            yield len(ids)


def score_into(executor: Executor, stage: ScoreStage) -> dict[str, np.ndarray]:
    """Score every chunk of the stage's source not yet in its table; return the whole table."""
    execute(executor, stage, stage.source.pieces(), stage.description)
    table = stage.table
    return table.read() if table.exists() else {"index": np.zeros(0, np.int64), "score": np.zeros(0)}


def _noise(kind: str, shape: tuple[int, ...], seed: int, sample_id: str) -> torch.Tensor:
    digest = hashlib.sha256(f"{seed}:{kind}:{sample_id}".encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "big") >> 1)
    if kind == "sign":
        return torch.randint(0, 2, shape, generator=gen).float() * 2 - 1
    return torch.randn(shape, generator=gen)
