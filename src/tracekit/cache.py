"""The user cache directory and atomic writes into it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import TracekitError


def cache_dir() -> Path:
    """`$TRACEKIT_CACHE`, else `$XDG_CACHE_HOME/tracekit`, else `~/.cache/tracekit`."""
    if os.environ.get("TRACEKIT_CACHE"):
        return Path(os.environ["TRACEKIT_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "tracekit"
    return Path.home() / ".cache" / "tracekit"


def ensure_dir(path: Path) -> Path:
    """Create `path` (and parents), or explain why it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TracekitError(
            f"cannot create directory {path}: {exc.strerror}; set TRACEKIT_CACHE to a writable directory"
        ) from None
    if not os.access(path, os.W_OK):
        raise TracekitError(f"directory {path} is not writable; set TRACEKIT_CACHE to a writable directory")
    return path


def atomic_torch_save(obj: Any, path: Path) -> None:
    """`torch.save` to a temporary file beside `path`, then rename: never a half-written file."""
    import torch  # here, not at the top: `tracekit cache ls` and the spec's checks must not need it

    ensure_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to a temporary file beside `path`, then rename: a reader sees the old
    file or the new one, never a half-written one."""
    ensure_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
