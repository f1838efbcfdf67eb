"""The scoring stage: a detector's scores of a stream of images, chunk by chunk, into a table.

Sources of images are iterators of `(chunk name, positions, ids, images)` that pass over the
chunks a table already holds without loading them: clean images from the dataset
(`clean_images`), an attack's adversarials from the attack cache (`AttackRun.adversarials`) and
noise of an adversarial's size (`noisy_images`, the noise control). Scores must be finite: a
detector that returns NaN or infinity stops the run with the component and the image named,
rather than turning into a meaningless AUC.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

import numpy as np
import torch

from ..errors import TracekitError
from ..progress import progress
from ..protocols import Detector, LoadedModel
from .reading import Reader, chunks
from .tables import Table

Source = Iterator[tuple[str, np.ndarray, list[str], torch.Tensor]]
NOISE_KINDS = ("sign", "gaussian")


def score_images(
    detector: Detector, model: LoadedModel, images: torch.Tensor, batch_size: int, device: torch.device, description: str
) -> np.ndarray:
    """Detector scores of images in memory, one device batch at a time."""
    out = []
    with progress(description, total=len(images)) as advance:
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size].to(device)
            out.append(detector.score(model.module, batch).detach().double().cpu())
            advance(len(batch))
    return torch.cat(out).numpy() if out else np.zeros(0)


def score_into(
    table: Table, source: Callable[[set[str]], Source], detector: Detector, model: LoadedModel, device: torch.device,
    description: str, total: int, extra: Callable[[torch.Tensor], dict[str, np.ndarray]] | None = None,
) -> dict[str, np.ndarray]:
    """Score every chunk of `source` not yet in `table`; return the whole table (by position).

    `extra(images)` adds columns computed from the same images (the noise control's predictions).
    """
    done = table.done()
    with progress(description, total=total) as advance:
        for name, positions, ids, images in source(done):
            scores = detector.score(model.module, images.to(device, non_blocking=True)).detach().double().cpu().numpy()
            if scores.shape != (len(ids),):
                raise TracekitError(f"{description}: the detector returned {scores.shape} scores for {len(ids)} images")
            if not np.isfinite(scores).all():
                bad = ids[int(np.flatnonzero(~np.isfinite(scores))[0])]
                raise TracekitError(f"{description}: the detector's score of '{bad}' is not finite ({scores[ids.index(bad)]})")
            table.write(name, {"index": positions, "sample_id": ids, "score": scores, **(extra(images) if extra else {})})
            advance(len(ids))
    return table.read() if table.exists() else {"index": np.zeros(0, np.int64), "score": np.zeros(0)}


def clean_images(reader: Reader, positions: np.ndarray, batch_size: int) -> Callable[[set[str]], Source]:
    """The dataset's images at `positions`, in chunks of `batch_size`."""

    def source(skip: set[str]) -> Source:
        todo = [c for c in chunks(positions, batch_size) if c.name not in skip]
        for batch in reader.read(todo):
            yield batch.chunk.name, batch.index, batch.ids, batch.images

    return source


def noisy_images(
    clean: Callable[[set[str]], Source], kind: str, l2: np.ndarray, linf: np.ndarray, seed: int
) -> Callable[[set[str]], Source]:
    """Each clean image plus random noise of its adversarial's size (`l2[position]`,
    `linf[position]`): sign noise of its L-inf size or Gaussian noise of its L2 size, clipped to
    [0, 1]; each image's noise is seeded from its id, so it is the same in any batch or shard."""

    def source(skip: set[str]) -> Source:
        for name, positions, ids, images in clean(skip):
            noise = torch.stack([_noise(kind, tuple(images.shape[1:]), seed, i) for i in ids])
            if kind == "sign":
                size = torch.from_numpy(linf[positions]).float()
            else:
                noise = noise / noise.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                size = torch.from_numpy(l2[positions]).float()
            yield name, positions, ids, (images + noise * size.view(-1, 1, 1, 1)).clamp(0, 1)

    return source


def _noise(kind: str, shape: tuple[int, ...], seed: int, sample_id: str) -> torch.Tensor:
    digest = hashlib.sha256(f"{seed}:{kind}:{sample_id}".encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "big") >> 1)
    if kind == "sign":
        return torch.randint(0, 2, shape, generator=gen).float() * 2 - 1
    return torch.randn(shape, generator=gen)
