"""The attack stage: chunk by chunk, each chunk's adversarials cached, its outcomes in a table.

An attack runs on one device batch (a chunk) at a time; its adversarials go to the attack cache
(`AttackCache`, on disk, atomically) as soon as the batch is done, and one row per image goes
to the attack's table (`attack-<NN>`): prediction, success, confidences, perturbation size and
seconds. `AttackStage` is the picklable stage an executor runs on any shard of the chunks.
Later stages read the adversarials back from the cache chunk by chunk; nothing keeps them in
memory. A `per_image` attack gets one image at a time, each seeded from its own id and
cached on its own, so that any batching (or shard split) gives an image the same adversarial; a
`SeededAttack` gets whole batches with one seed per image, and is cached image by image too.
"""

from __future__ import annotations

import random
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from ..checks import checked, component
from ..errors import TracekitError
from ..executing import Chunk, Executor
from ..protocols import Attack, DetectorBound, SeededAttack
from .attack_cache import AttackCache, CacheEntry, batch_seed, content_hashes, content_keys, norm_budget
from .context import DetectorHandle, RunContext
from .dispatch import execute
from .predicting import probabilities
from .tables import Table


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy's global state (ART draws from it) and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class AttackRun:
    """Where one attack's results are: its outcomes table and its cached adversarials, per chunk."""

    key: str  # the attack's label
    table: Table
    cache: AttackCache
    chunks: list[Chunk]
    per_image: bool

    def _entry(self, keys: list[str]) -> CacheEntry:
        """The cached adversarials of one chunk's images (their content `keys`, in order)."""
        return _joined([self._load([k]) for k in keys] if self.per_image else [self._load(keys)])

    def _load(self, keys: list[str]) -> CacheEntry:
        corrupt = self.cache.corrupt
        entry = self.cache.load(keys)
        if entry is None:
            what = keys[0].rsplit("@", 1)[0]
            if self.cache.corrupt > corrupt:
                raise TracekitError(
                    f"attack {self.key}: the cached adversarial of '{what}' was unusable and is deleted "
                    f"({self.cache.first_problem}); run again with another --out to recompute it"
                )
            raise TracekitError(
                f"attack {self.key}: the adversarial of '{what}' is no longer in the attack cache "
                f"({self.cache.dir}; cleared while this run was resumed?); run again with another --out"
            )
        return entry

    def outcomes(self, within: np.ndarray) -> dict[str, np.ndarray]:
        """The outcome rows (columns of the attack's table) of the images at positions `within`."""
        rows = self.table.read()
        keep = np.isin(rows["index"], within)
        return {k: v[keep] for k, v in rows.items()}

    def successful(self, within: np.ndarray) -> np.ndarray:
        """Positions among `within` whose adversarial changed the prediction: the only ones that
        count as adversarials (scored as positives, fitted on)."""
        rows = self.table.read(["index", "success"])
        return rows["index"][rows["success"] & np.isin(rows["index"], within)]

    def pieces(self, wanted: np.ndarray) -> list[Chunk]:
        """The attack's chunks cut down to the positions `wanted` (those that keep any)."""
        cut = [Chunk(c.name, c.index[np.isin(c.index, wanted)]) for c in self.chunks]
        return [c for c in cut if len(c.index)]

    def adversarials(self, pieces: list[Chunk]) -> Iterator[tuple[str, np.ndarray, list[str], torch.Tensor]]:
        """`(chunk name, positions, ids, adversarials)` of the images of `pieces` (from `pieces()`),
        chunk by chunk, read from the attack cache."""
        wanted = {p.name: p.index for p in pieces}
        for chunk in self.chunks:
            if chunk.name not in wanted:
                continue
            keep = np.isin(chunk.index, wanted[chunk.name])
            ids, keys = zip(*(self._keys[int(p)] for p in chunk.index))
            adversarial = self._entry(list(keys)).adversarial[torch.from_numpy(keep)]
            yield chunk.name, chunk.index[keep], [i for i, k in zip(ids, keep) if k], adversarial

    @cached_property
    def _keys(self) -> dict[int, tuple[str, str]]:
        """(sample id, content key) by dataset position, from the finished outcomes table (read once)."""
        rows = self.table.read(["index", "sample_id", "content"])
        ids = rows["sample_id"].tolist()
        return dict(zip(rows["index"].tolist(), zip(ids, content_keys(ids, rows["content"].tolist()))))


@dataclass
class AttackStage:
    """Attack number `index` of the spec on chunks of images, into `results` (its table and the
    attack cache); `labels_of[position]` is the label each image is attacked with. `bind` =
    (fitted detector, threshold) for a detector-bound (adaptive) attack."""

    index: int
    results: AttackRun
    labels_of: np.ndarray
    bind: tuple[DetectorHandle, float] | None = None

    @property
    def table(self) -> Table:
        return self.results.table

    def run(self, context: RunContext, pieces: list[Chunk]) -> Iterator[int]:
        attack = context.attacks[self.index]
        if self.bind is not None:
            handle, threshold = self.bind
            cast(DetectorBound, attack).bind(context.detector(handle), threshold)  # screened as one
        done = self.table.done()  # a retried shard keeps the chunks it finished
        module, device, seed, key = context.model.module, context.device, context.spec.seed, self.results.key
        who = (component("attack", context.spec.attacks[self.index]["name"]), context.model_who)
        for batch in context.reader.read([p for p in pieces if p.name not in done]):
            if not np.array_equal(batch.index, batch.chunk.index):
                missing = sorted(set(batch.chunk.index.tolist()) - set(batch.index.tolist()))
                raise TracekitError(f"attack {key}: image at position {missing[0]} could no longer be read")
            labels = torch.from_numpy(self.labels_of[batch.index])
            entry, cached, hashes = _attack_chunk(
                attack, self.results, module, batch.ids, batch.images, labels, device, seed, who
            )
            outcomes = _outcomes(batch.index, batch.ids, batch.images, labels, entry, cached)
            self.table.write(batch.chunk.name, {**outcomes, "content": hashes})
            yield len(batch.ids)
        cache = self.results.cache
        if cache.corrupt:
            n = cache.corrupt
            warnings.warn(
                f"attack {key}: {n} unusable cache entr{'y' if n == 1 else 'ies'} (the first, {cache.first_problem}); "
                f"recomputed {'it' if n == 1 else 'them'}",
                stacklevel=2,
            )


def attack_stage(executor: Executor, stage: AttackStage) -> None:
    """Attack every chunk of the stage's images not yet in its table, through `executor`."""
    cache = stage.results.cache
    execute(
        executor,
        stage,
        stage.results.chunks,
        f"attack {stage.results.key}",
        keep=True,
        kept=lambda description, done, total: _kept(description, done, total, cache),
    )


def _attack_chunk(
    attack: Attack,
    run: AttackRun,
    module: nn.Module,
    ids: list[str],
    images: torch.Tensor,
    labels: torch.Tensor,
    device: torch.device,
    seed: int,
    who: tuple[str, str],
) -> tuple[CacheEntry, np.ndarray, list[str]]:
    """One chunk's adversarials (from the cache where it has them), which were cached, and each
    image's content hash. The cache is addressed by ids and content: an image whose pixels
    changed (another dataset with the same ids, a file edited in place) is attacked anew.

    Entries are per chunk, or per image (`run.per_image`) for an attack whose result for an
    image does not depend on its batch: a `per_image` attack, called one image at a time, and a
    `SeededAttack`, called once for the chunk's uncached images and cached image by image, so
    that a run cut into other chunks (a comparison's, another batch size) reuses them."""
    hashes = content_hashes(images)
    keys = content_keys(ids, hashes)
    seeds = [batch_seed(seed, [i]) for i in ids]
    budget = norm_budget(attack, run.cache.params)  # a cached adversarial outside it is recomputed

    def load(i: int | None) -> CacheEntry | None:  # the chunk's entry (None), or image i's
        if i is None:
            return run.cache.load(keys, clean=images, budget=budget)
        return run.cache.load([keys[i]], clean=images[i : i + 1], budget=budget)

    if not run.per_image:
        entry = load(None)
        if entry is None:
            with run.cache.writing([keys]):  # another process computing it: wait, then take its entry
                entry = load(None)
                if entry is None:
                    entry = _attack_batch(attack, module, images, labels, device, batch_seed(seed, ids), who, seeds)
                    run.cache.save(keys, entry)
                    return entry, np.zeros(len(ids), dtype=bool), hashes
        return entry, np.ones(len(ids), dtype=bool), hashes
    found = [load(i) for i in range(len(keys))]
    missing = [i for i, entry in enumerate(found) if entry is None]
    groups = [[i] for i in missing] if not isinstance(attack, SeededAttack) else ([missing] if missing else [])
    computed: list[int] = []
    for group in groups:
        with run.cache.writing([[keys[i]] for i in group]):  # as for a chunk, image by image
            for i in group:
                found[i] = load(i)
            group = [i for i in group if found[i] is None]
            if not group:
                continue
            pick = torch.tensor(group)
            entry = _attack_batch(
                attack,
                module,
                images[pick],
                labels[pick],
                device,
                batch_seed(seed, [ids[i] for i in group]),
                who,
                [seeds[i] for i in group],
            )
            for k, i in enumerate(group):
                one = CacheEntry(
                    entry.adversarial[k : k + 1],
                    entry.preds[k : k + 1],
                    entry.probs[k : k + 1],
                    entry.seconds / len(group),
                )
                run.cache.save([keys[i]], one)
                found[i] = one
            computed += group
    cached = np.ones(len(ids), dtype=bool)
    cached[computed] = False
    return _joined(found), cached, hashes  # type: ignore[arg-type]


def _joined(parts: list[CacheEntry]) -> CacheEntry:
    return CacheEntry(
        torch.cat([p.adversarial for p in parts]),
        torch.cat([p.preds for p in parts]),
        torch.cat([p.probs for p in parts]),
        sum(p.seconds for p in parts),
    )


def _outcomes(
    positions: np.ndarray,
    ids: list[str],
    images: torch.Tensor,
    labels: torch.Tensor,
    entry: CacheEntry,
    cached: np.ndarray,
) -> dict[str, Any]:
    delta = (entry.adversarial - images).flatten(1).double()
    return {
        "index": positions,
        "sample_id": ids,
        "label": labels.numpy(),
        "pred": entry.preds.numpy(),
        "success": (entry.preds != labels).numpy(),
        "gt_confidence": entry.probs.gather(1, labels[:, None])[:, 0].double().numpy(),
        "target_confidence": entry.probs.gather(1, entry.preds[:, None])[:, 0].double().numpy(),
        "l2": delta.norm(dim=1).numpy(),
        "linf": delta.abs().amax(dim=1).numpy(),
        "seconds": np.full(len(ids), entry.seconds / max(len(ids), 1)),
        "cached": cached,
    }


def _kept(description: str, finished: int, total: int, cache: AttackCache) -> str:
    """What an interruption leaves: `finished` of `total` images attacked and kept."""
    return (
        f"{description}: {finished}/{total} images are attacked and cached, as is every finished attack "
        f"(in {cache.dir.parent}); run the same command again to resume from there"
    )


def _attack_batch(
    attack: Attack,
    module: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    device: torch.device,
    seed: int,
    who: tuple[str, str],
    seeds: list[int],
) -> CacheEntry:
    """One batch's adversarials (checked: same shape as the images, finite), clipped to [0, 1],
    and the model's probabilities on them; `who` names the attack and the model. A `SeededAttack`
    gets each image's own seed (`seeds`); any other attack the batch's, through the global state."""
    seed_everything(seed)
    x, y = images.to(device), labels.to(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    if isinstance(attack, SeededAttack):
        raw = attack.generate_seeded(module, x, y, torch.tensor(seeds, dtype=torch.long, device=device))
    else:
        raw = attack.generate(module, x, y)
    adversarial = checked(raw, who[0], tuple(x.shape), "adversarials").detach().clamp(0, 1)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    probs = probabilities(module, adversarial, device, who[1])
    return CacheEntry(adversarial.to("cpu", torch.float32), probs.argmax(1), probs, seconds)
