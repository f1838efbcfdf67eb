"""Running an attack over many images: device batches, per-batch (or per-image) seeds, the attack cache."""

from __future__ import annotations

import random
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import Interrupted
from ..progress import progress
from ..protocols import Attack
from .attack_cache import AttackCache, CacheEntry, batch_seed


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy's global state (ART draws from it) and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Generated:
    """Adversarials of a set of images, with the model's predictions on them (CPU tensors)."""

    adversarial: torch.Tensor
    preds: torch.Tensor
    probs: torch.Tensor
    seconds: float  # attack compute time (cached batches count the time they took when computed)
    cached_batches: int


def generate(
    attack: Attack,
    module: nn.Module,
    ids: list[str],
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    device: torch.device,
    seed: int,
    cache: AttackCache,
    description: str,
) -> Generated:
    """Attack `images` batch by batch; each finished batch goes to the cache at once.

    Cached batches are read first, so the progress bar's rate and ETA cover only the work left.

    A `per_image` attack gets batches of one image: each seeded from its own id, cached on its
    own (so runs that batch the same images differently share them, and an interrupted run loses
    at most one image's search).
    """
    step = 1 if getattr(attack, "per_image", False) else batch_size
    batches = [ids[start : start + step] for start in range(0, len(images), step)]
    entries: list[CacheEntry | None] = [cache.load(batch_ids) for batch_ids in batches]
    done = _images_done(batches, entries)
    if cache.corrupt:
        warnings.warn(
            f"{description}: {cache.corrupt} unusable cache entr{'y' if cache.corrupt == 1 else 'ies'} "
            f"(the first, {cache.first_problem}); recomputing {'it' if cache.corrupt == 1 else 'them'}",
            stacklevel=2,
        )
    if done:
        description += f" ({done} cached)"
    with progress(description, total=len(images), keep=True, done=done) as advance:
        for i, batch_ids in enumerate(batches):
            if entries[i] is None:
                start = i * step
                try:
                    entry = _attack_batch(
                        attack, module, images[start : start + step], labels[start : start + step],
                        device, batch_seed(seed, batch_ids),
                    )
                except KeyboardInterrupt:
                    kept = _kept(description, _images_done(batches, entries), len(images), cache.enabled)
                    raise Interrupted(kept) from None
                cache.save(batch_ids, entry)
                entries[i] = entry
                advance(len(batch_ids))
    finished = [e for e in entries if e is not None]  # every one, now
    if not finished:
        empty = images[:0].clone()
        return Generated(empty, labels[:0].clone(), torch.zeros(0, 0), 0.0, 0)
    return Generated(
        torch.cat([e.adversarial for e in finished]),
        torch.cat([e.preds for e in finished]),
        torch.cat([e.probs for e in finished]),
        sum(e.seconds for e in finished),
        cache.hits,
    )


def _images_done(batches: list[list[str]], entries: list[CacheEntry | None]) -> int:
    return sum(len(b) for b, e in zip(batches, entries) if e is not None)


def _kept(description: str, finished: int, total: int, cached: bool) -> str:
    """What an interruption leaves: `finished` of `total` images attacked, cached or not."""
    if not cached:
        return f"{description}: {finished}/{total} images were attacked; with --no-cache nothing was kept"
    return (
        f"{description}: {finished}/{total} images are attacked and cached, as is every finished attack; "
        "run the same command again to resume from there"
    )


def _attack_batch(
    attack: Attack, module: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device, seed: int
) -> CacheEntry:
    seed_everything(seed)
    x, y = images.to(device), labels.to(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    adversarial = attack.generate(module, x, y).detach().clamp(0, 1)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        probs = torch.softmax(module(adversarial).float(), dim=1)
    return CacheEntry(adversarial.to("cpu", torch.float32), probs.argmax(1).cpu(), probs.cpu(), seconds)
