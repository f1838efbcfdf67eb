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

Every entry read back is checked against what the attack promises (`_check_entry`): shapes,
dtypes, finite values in [0, 1], predictions and probabilities for every image, and, for an
attack with a norm budget (`norm_budget`), adversarials within it of the clean images, where the
reader has them (the attack stage does; later stages read back entries it checked).

Two processes (two runs, or two workers of one) that miss the same entry never both write it:
the writer holds the entry's lock (`writing`, a `.<hash>.lock` file beside it) from the second
look into the cache until the entry is saved, and the other waits for it (in the kernel: a
blocking `flock`, which a Ctrl-C interrupts), then reads the finished entry instead of computing
its own. Readers of finished entries take no lock: a file is only ever replaced whole (rename).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ..bounded import read_json
from ..cache import atomic_torch_save, atomic_write_text, cache_dir, ensure_dir
from ..errors import TracekitError
from ..locks import Lock, holder

if TYPE_CHECKING:  # torch is imported where it is used: `tracekit cache ls/clear` must not need it
    import torch
    from torch import nn


KEY = re.compile(r"[0-9a-f]{32}")  # an entry's directory name: `AttackCache.key`
META = "meta.json"
LOCK_SUFFIX = ".lock"  # `.<batch hash>.lock`: held while that batch is computed and saved (`writing`)
BUDGET_RELATIVE = 1e-5  # slack of a norm budget, relative to eps (the attack's own float32 sums)
FLOAT32_ROUNDING = 2.0**-23  # per pixel: storing `clean + delta` in float32 moves each pixel up to this


def model_fingerprint(module: nn.Module) -> str:
    """sha256 of the module's class and every parameter and buffer (names, shapes, values)."""
    digest = hashlib.sha256(type(module).__qualname__.encode())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        _update(digest, tensor)
    return digest.hexdigest()


def state_fingerprint(state: Any) -> str:
    """sha256 of a fitted detector's `state_dict()` (tensors, arrays, numbers, strings, lists and
    dicts, by value): what a detector-bound attack's cached adversarials are keyed by, beside the
    detector's spec and threshold, so that a refitted detector is never served another's."""
    digest = hashlib.sha256()
    stack = [state]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            digest.update(f"dict{len(item)}".encode())
            for key in sorted(item, key=str, reverse=True):
                stack += [item[key], str(key)]
        elif isinstance(item, (list, tuple)):
            digest.update(f"list{len(item)}".encode())
            stack += reversed(item)
        elif hasattr(item, "detach") or hasattr(item, "__array__"):
            _update(digest, item)
        else:
            digest.update(repr(item).encode())
    return digest.hexdigest()


def _update(digest: Any, tensor: Any) -> None:
    """A tensor's (or array's) dtype, shape and bytes into `digest`."""
    import torch

    t = torch.as_tensor(tensor.detach() if hasattr(tensor, "detach") else tensor).to("cpu").contiguous()
    digest.update(str((t.dtype, tuple(t.shape))).encode())
    digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # 0-d buffers (BatchNorm's) too


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


class Budget(NamedTuple):
    """The ball an attack's adversarials stay in around their clean images: L-`order` norm at most `eps`."""

    order: float  # math.inf, 2.0 or 1.0
    eps: float

    def __str__(self) -> str:
        return f"L{'-inf' if self.order == math.inf else int(self.order)} eps {self.eps:g}"


_UNDECLARED = object()


def norm_budget(attack: object, params: Mapping[str, Any] | None = None) -> Budget | None:
    """The norm budget `attack` promises its adversarials stay within, or None (no budget, or none
    tracekit can tell). Declared, in order of precedence, by:

    - a `norm_budget` attribute of the attack: `(order, eps)`, or None for "no budget" (a component
      whose `norm` and `eps` mean something else says so this way);
    - its `norm` and `eps` attributes (`fgsm`, `gradient`, native `pgd`, `autoattack`,
      `adaptive-entropy`: the norm as `inf`/"inf", 2 or 1);
    - its resolved parameters `params` (the cache key's), where they hold both `norm` and `eps`
      (ART's `pgd`, which keeps them inside the ART attack it builds).
    """
    declared = _attribute(attack, "norm_budget", _UNDECLARED)
    if declared is not _UNDECLARED:
        try:
            return None if declared is None else _budget(*declared)  # type: ignore[misc]
        except TypeError:
            return None
    found = _budget(_attribute(attack, "norm", None), _attribute(attack, "eps", None))
    if found is None and params is not None:
        found = _budget(params.get("norm"), params.get("eps"))
    return found


def _attribute(obj: object, name: str, default: object) -> object:
    try:
        return getattr(obj, name, default)
    except Exception:  # a plugin's property that raises declares nothing
        return default


def _budget(norm: object, eps: object) -> Budget | None:
    """A `Budget` from a norm (`inf`, "inf", 2, 1) and a positive finite eps, else None."""
    if isinstance(norm, bool) or isinstance(eps, bool) or not isinstance(eps, (int, float)):
        return None
    try:
        order = math.inf if isinstance(norm, str) and norm.strip().lower() == "inf" else float(norm)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if order not in (math.inf, 2.0, 1.0) or not (math.isfinite(eps) and eps > 0):
        return None
    return Budget(order, float(eps))


@dataclass
class CacheEntry:
    adversarial: torch.Tensor
    preds: torch.Tensor
    probs: torch.Tensor
    seconds: float


class AttackCache:
    """Batches of one attack on one model; `enabled=False` bypasses reading and writing."""

    params: dict[str, Any]  # the attack's resolved parameters (part of the key; {} when `opened`)

    def __init__(
        self, model_fp: str, attack: dict[str, Any], seed: int, root: Path | None = None, enabled: bool = True
    ):
        meta = {"attack": attack, "seed": seed, "model": model_fp}
        key = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()[:32]
        self._start((root or cache_dir() / "attacks") / key, enabled)
        self.params = attack
        if enabled:
            ensure_dir(self.dir)
            if not (self.dir / META).exists():  # written whole: a second run may be reading it
                atomic_write_text(self.dir / META, json.dumps({**meta, "created": time.time()}, default=str, indent=1))

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
        self.params = {}
        self.hits = self.corrupt = 0
        self.first_problem = ""

    def _path(self, keys: list[str]) -> Path:
        return self.dir / f"{ids_hash(keys)}.pt"

    def _lock_path(self, keys: list[str]) -> Path:
        return self.dir / f".{ids_hash(keys)}{LOCK_SUFFIX}"

    def load(
        self,
        keys: list[str],
        image_shape: tuple[int, ...] | None = None,
        *,
        clean: torch.Tensor | None = None,
        budget: Budget | None = None,
    ) -> CacheEntry | None:
        """The cached batch, or None: missing, or unusable (then counted in `corrupt`, the first
        one's path and reason kept in `first_problem`, the file deleted, and never trusted).
        `image_shape` (C, H, W): what its adversarials must be, where the caller knows it;
        `clean`: the batch's clean images, where the caller has them, against which the
        adversarials must keep to the attack's `budget` (`norm_budget`)."""
        if not self.enabled:
            return None
        path = self._path(keys)
        if not path.exists():
            return None
        import torch

        if clean is not None and image_shape is None:
            image_shape = tuple(clean.shape[1:])
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(data, dict) or data.get("key") != self.key:
                raise ValueError("it belongs to another attack, model or seed")
            if data["ids"] != keys:
                raise ValueError("its images do not match")
            entry = CacheEntry(data["adversarial"], data["preds"], data["probs"], data["seconds"])
            _check_entry(entry, len(keys), image_shape, clean, budget)
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

    @contextmanager
    def writing(self, entries: Sequence[list[str]]) -> Iterator[None]:
        """Hold the write lock of each of `entries` (each the content keys of one entry, as `load`
        and `save` take them) for the block: look into the cache again inside it, and compute and
        save only what is still missing. A process holding one of the locks (another run, or
        another worker of this one, computing the same entry) is waited for until it has saved
        its entry, which the look then finds. The locks are taken in one fixed order (by file
        name), so that processes locking overlapping entries never wait for each other in a
        cycle; each is released (its file removed) at the block's end, and by the kernel when
        its process dies. Nothing is locked when the cache is disabled."""
        if not self.enabled:
            yield
            return
        with ExitStack() as stack:
            for path in sorted({self._lock_path(keys) for keys in entries}):
                stack.enter_context(Lock(path))
            yield


def _check_entry(
    entry: CacheEntry,
    n: int,
    image_shape: tuple[int, ...] | None,
    clean: torch.Tensor | None = None,
    budget: Budget | None = None,
) -> None:
    """What a stored batch must be (`save` writes nothing else): `n` float adversarials in [0, 1]
    (of `image_shape` where given) within `budget` of the `clean` images (where both are given),
    `n` integer predictions, `n` rows of probabilities in [0, 1] over the classes the predictions
    index, and a finite, non-negative time; `ValueError` if not."""
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
    if budget is not None and clean is not None and adversarial.numel():
        _check_budget(adversarial, clean, budget)
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


def _check_budget(adversarial: torch.Tensor, clean: torch.Tensor, budget: Budget) -> None:
    """`ValueError` when an adversarial is farther from its clean image than the attack's budget
    allows: eps, plus `BUDGET_RELATIVE` of it, plus float32 rounding of every pixel (measured in
    the budget's norm: `FLOAT32_ROUNDING * pixels ** (1 / order)`). One vectorized pass over the batch."""
    if tuple(clean.shape) != tuple(adversarial.shape):
        raise ValueError(f"its adversarials are {list(adversarial.shape)}, the clean images {list(clean.shape)}")
    delta = (adversarial.double() - clean.detach().to("cpu").double()).flatten(1)
    if budget.order == math.inf:
        size, rounding = delta.abs().amax(dim=1), FLOAT32_ROUNDING
    else:
        size, rounding = delta.norm(p=budget.order, dim=1), FLOAT32_ROUNDING * delta.shape[1] ** (1 / budget.order)
    allowed = budget.eps * (1 + BUDGET_RELATIVE) + rounding
    worst = float(size.max())
    if not worst <= allowed:
        over = int((size > allowed).sum())
        raise ValueError(
            f"{over} of its {len(size)} adversarials lie outside the attack's budget ({budget}; up to {worst:.6g})"
        )


def _entry_dirs(root: Path) -> list[Path]:
    """The directories under `root` that `AttackCache` made: named by a key, holding its meta.json.
    Anything else a user put there is not the cache's to list or remove."""
    if not root.is_dir():
        return []
    return sorted(d for d in root.iterdir() if d.is_dir() and KEY.fullmatch(d.name) and (d / META).is_file())


def _ours(path: Path) -> bool:
    """A file `AttackCache` writes: a batch (`<hash>.pt`), its meta.json, a save's temporary file,
    or a writer's lock file (`.<hash>.lock`, left behind only by a killed writer)."""
    name = path.name
    hidden = name.startswith(".") and (name.endswith(".tmp") or name.endswith(LOCK_SUFFIX))
    return path.is_file() and not path.is_symlink() and (name.endswith(".pt") or name == META or hidden)


def _writer(directory: Path) -> dict[str, Any] | None:
    """The record of a process writing into the entry `directory` now (holding a batch's lock), or None."""
    for path in directory.glob(f".*{LOCK_SUFFIX}"):
        record = holder(path)
        if record is not None:
            return record
    return None


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
        writer = _writer(directory)
        if writer is not None:  # its run would only write the batch again, into no entry
            pid = writer.get("pid") if isinstance(writer.get("pid"), int) else "unknown"
            cleared.failed.append(
                f"{directory}: in use by a running tracekit process (pid {pid}); clear it when that run has finished"
            )
            continue
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
