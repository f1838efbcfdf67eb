"""The attack cache: adversarials (and predictions on them) stored per batch.

Attacks are the expensive step, so every finished batch is written at once, atomically
(temporary file + rename), under `<cache>/attacks/<key>/<batch>.pt`. The key fingerprints
the model weights, the attack's resolved parameters, the seed and the attack's code (its source
file, its distribution's name and version, and whatever the attack adds with `cache_key()`); a
batch file is named by the hash of its images' content keys (`<sample id>@<sha256 of the image's
float32 pixels>`), so an image whose pixels changed (another dataset with the same ids, a file
edited in place) is never served another image's adversarial. A second identical run recomputes
nothing; an interrupted run resumes at the first missing batch. Each batch is seeded from the run seed and its ids, so a
resumed run produces exactly what an uninterrupted one would. A corrupt entry is reported
once, recomputed and overwritten.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..bounded import read_json
from ..cache import atomic_torch_save, cache_dir, ensure_dir
from ..errors import TracekitError

if TYPE_CHECKING:  # torch is imported where it is used: `tracekit cache ls/clear` must not need it
    import torch
    from torch import nn


KEY = re.compile(r"[0-9a-f]{32}")  # an entry's directory name: `AttackCache.key`
META = "meta.json"


def model_fingerprint(module: nn.Module) -> str:
    """sha256 of the module's class and every parameter and buffer (names, shapes, values)."""
    import torch

    digest = hashlib.sha256(type(module).__qualname__.encode())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        t = tensor.detach().to("cpu").contiguous()
        digest.update(str((t.dtype, tuple(t.shape))).encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # 0-d buffers (BatchNorm's) too
    return digest.hexdigest()


def code_version(obj: object) -> str:
    """sha256 of the source file that defines `obj`'s class (plus tracekit's version), so a
    changed attack implementation never reuses adversarials cached by the old one."""
    from ..version import __version__

    digest = hashlib.sha256(__version__.encode())
    module = sys.modules.get(type(obj).__module__)
    path = getattr(module, "__file__", None)
    if path:
        try:
            digest.update(Path(path).read_bytes())
        except OSError:
            pass
    return digest.hexdigest()[:16]


def content_hashes(images: torch.Tensor) -> list[str]:
    """sha256 (32 hex digits) of each image's float32 pixels, shape included."""
    import torch

    flat = images.detach().to("cpu", torch.float32).contiguous()
    shape = "x".join(map(str, flat.shape[1:])).encode()
    return [hashlib.sha256(shape + image.numpy().tobytes()).hexdigest()[:32] for image in flat]


def content_keys(ids: list[str], hashes: list[str]) -> list[str]:
    """What the cache is addressed by: `<sample id>@<content hash>` per image."""
    return [f"{i}@{h}" for i, h in zip(ids, hashes)]


def ids_hash(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:32]


def batch_seed(seed: int, ids: list[str]) -> int:
    """A seed for one batch that depends only on the run seed and the batch's ids."""
    return int(hashlib.sha256(f"{seed}:{ids_hash(ids)}".encode()).hexdigest()[:8], 16)


@dataclass
class CacheEntry:
    adversarial: torch.Tensor
    preds: torch.Tensor
    probs: torch.Tensor
    seconds: float


class AttackCache:
    """Batches of one attack on one model; `enabled=False` bypasses reading and writing."""

    def __init__(
        self, model_fp: str, attack: dict[str, Any], seed: int, root: Path | None = None, enabled: bool = True
    ):
        meta = {"attack": attack, "seed": seed, "model": model_fp}
        key = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()[:32]
        self._start((root or cache_dir() / "attacks") / key, enabled)
        if enabled:
            ensure_dir(self.dir)
            if not (self.dir / META).exists():
                (self.dir / META).write_text(json.dumps({**meta, "created": time.time()}, default=str, indent=1))

    @classmethod
    def opened(cls, directory: Path) -> AttackCache:
        """The entries already in `directory` (a finished run's, named in its `attacks.json`), for
        reading: every entry is still checked against the directory's key."""
        cache = cls.__new__(cls)
        cache._start(directory, enabled=True)
        return cache

    def _start(self, directory: Path, enabled: bool) -> None:
        """The cache of `directory` (named by its key), with no entry read yet."""
        self.enabled, self.key, self.dir = enabled, directory.name, directory
        self.hits = self.corrupt = 0
        self.first_problem = ""

    def _path(self, keys: list[str]) -> Path:
        return self.dir / f"{ids_hash(keys)}.pt"

    def load(self, keys: list[str], image_shape: tuple[int, ...] | None = None) -> CacheEntry | None:
        """The cached batch, or None: missing, or unusable (then counted in `corrupt`, the first
        one's path and reason kept in `first_problem`, the file deleted, and never trusted).
        `image_shape` (C, H, W): what its adversarials must be, where the caller knows it."""
        if not self.enabled:
            return None
        path = self._path(keys)
        if not path.exists():
            return None
        import torch

        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(data, dict) or data.get("key") != self.key:
                raise ValueError("it belongs to another attack, model or seed")
            if data["ids"] != keys:
                raise ValueError("its images do not match")
            entry = CacheEntry(data["adversarial"], data["preds"], data["probs"], data["seconds"])
            _check_entry(entry, len(keys), image_shape)
        except Exception as exc:  # any unreadable entry is recomputed, never trusted
            if not self.corrupt:  # our own checks say what is wrong; anything else names its type
                reason = str(exc) if isinstance(exc, ValueError) and str(exc) else f"{type(exc).__name__}: {exc}"
                self.first_problem = f"{path}: {reason}"
            self.corrupt += 1
            path.unlink(missing_ok=True)
            return None
        self.hits += 1
        return entry

    def save(self, keys: list[str], entry: CacheEntry) -> None:
        if self.enabled:
            payload = {
                "key": self.key,
                "ids": keys,
                "adversarial": entry.adversarial,
                "preds": entry.preds,
                "probs": entry.probs,
                "seconds": entry.seconds,
            }
            atomic_torch_save(payload, self._path(keys))


def _check_entry(entry: CacheEntry, n: int, image_shape: tuple[int, ...] | None) -> None:
    """What a stored batch must be (`save` writes nothing else): `n` float adversarials in [0, 1]
    (of `image_shape` where given), `n` integer predictions, `n` rows of probabilities in [0, 1]
    over the classes the predictions index, and a finite, non-negative time; `ValueError` if not."""
    import torch

    adversarial, preds, probs, seconds = entry.adversarial, entry.preds, entry.probs, entry.seconds
    if not all(isinstance(t, torch.Tensor) for t in (adversarial, preds, probs)):
        raise ValueError("its adversarials, predictions or probabilities are not tensors")
    if not adversarial.is_floating_point() or adversarial.dim() != 4 or len(adversarial) != n:
        raise ValueError(f"its adversarials are {adversarial.dtype} {list(adversarial.shape)}, not {n} float images")
    if image_shape is not None and tuple(adversarial.shape[1:]) != tuple(image_shape):
        raise ValueError(f"its adversarials are {list(adversarial.shape[1:])}, the images {list(image_shape)}")
    if adversarial.numel() and not (
        torch.isfinite(adversarial).all() and 0 <= adversarial.min() <= adversarial.max() <= 1
    ):
        raise ValueError("its adversarials hold values that are not finite or outside [0, 1]")
    if preds.dtype != torch.long or preds.shape != (n,) or probs.dim() != 2 or len(probs) != n:
        raise ValueError(
            f"its predictions {list(preds.shape)} or probabilities {list(probs.shape)} are not for {n} images"
        )
    if probs.numel() and not (torch.isfinite(probs).all() and 0 <= probs.min() <= probs.max() <= 1):
        raise ValueError("its probabilities are not finite or outside [0, 1]")
    if len(preds) and not 0 <= int(preds.min()) <= int(preds.max()) < probs.shape[1]:
        raise ValueError("its predictions are not classes of its probabilities")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"its time is {seconds!r}, not a finite number of seconds")


def _entry_dirs(root: Path) -> list[Path]:
    """The directories under `root` that `AttackCache` made: named by a key, holding its meta.json.
    Anything else a user put there is not the cache's to list or remove."""
    if not root.is_dir():
        return []
    return sorted(d for d in root.iterdir() if d.is_dir() and KEY.fullmatch(d.name) and (d / META).is_file())


def _ours(path: Path) -> bool:
    """A file `AttackCache` writes: a batch (`<hash>.pt`), its meta.json, or a save's temporary file."""
    name = path.name
    return path.is_file() and (name.endswith(".pt") or name == META or (name.startswith(".") and name.endswith(".tmp")))


def list_entries(root: Path | None = None) -> list[dict[str, Any]]:
    """One record per cached attack: key, attack name, its parameters, model fingerprint, seed,
    batches, bytes, last modified."""
    root = root or cache_dir() / "attacks"
    out = []
    for directory in _entry_dirs(root):
        files = list(directory.glob("*.pt"))
        try:
            meta = read_json(directory / META, META)
        except (OSError, TracekitError):
            meta = None
        if not isinstance(meta, dict) or not isinstance(meta.get("attack"), dict):
            meta = {"attack": {"name": "? (meta.json unreadable)"}}
        stats = [f.stat() for f in files]
        out.append(
            {
                "key": directory.name,
                "attack": (meta.get("attack") or {}).get("name", "?"),
                "params": meta.get("attack", {}),
                "model": str(meta.get("model", "?")),
                "seed": meta.get("seed"),
                "batches": len(files),
                "bytes": sum(s.st_size for s in stats),
                "modified": max([s.st_mtime for s in stats], default=directory.stat().st_mtime),
                "path": str(directory),
            }
        )
    return out


@dataclass
class Cleared:
    """What `clear` really removed, and the entries it could not (`path: reason`)."""

    removed: int
    failed: list[str]


def clear(older_than_s: float | None = None, root: Path | None = None) -> Cleared:
    """Remove cached attacks (those untouched for `older_than_s` seconds): only the files the cache
    wrote, then their directory; an entry counts as removed only when its directory is gone."""
    now = time.time()
    cleared = Cleared(0, [])
    for entry in list_entries(root):
        if older_than_s is not None and now - entry["modified"] <= older_than_s:
            continue
        directory, problem = Path(entry["path"]), ""
        # meta.json goes last, and only when every batch went: it is what makes the entry an entry
        for path in [*sorted(p for p in directory.iterdir() if _ours(p) and p.name != META), directory / META]:
            if problem and path.name == META:
                break
            try:
                path.unlink()
            except OSError as exc:
                problem = problem or f"{path.name}: {exc.strerror}"
        try:
            directory.rmdir()
        except OSError as exc:
            left = [p.name for p in directory.iterdir() if not _ours(p)] if directory.is_dir() else []
            problem = problem or (
                f"holds files tracekit did not write ({', '.join(left[:3])})" if left else exc.strerror
            )
        if directory.exists():
            cleared.failed.append(f"{directory}: {problem}")
        else:
            cleared.removed += 1
    return cleared
