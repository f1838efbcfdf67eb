"""Advisory file locks: one tracekit process at a time writes a run directory or a cache entry.

A lock is a small file beside what it guards (`.<name>.lock`), locked with `fcntl.flock`. The
kernel holds the lock, not the file: it is released when the holder closes it, exits, crashes or
is killed (even by SIGKILL), so a lock file left behind by a dead process never blocks anyone;
the next holder simply takes it over. While held, the file records who holds it (pid, host and
command line, as JSON), so that a second process can say which one is in its way.

- `locked(path, what)` stops at once: when another process holds the lock it raises
  `TracekitError` (exit 2 on the command line) with one line naming `what`, the holder's pid and
  how to get past it. There is no waiting and no polling loop.
- `Lock(path).acquire(wait=True)` waits in the kernel (a blocking `flock`, no polling) until the
  holder is done: for work that the holder will finish and the waiter can then reuse (an attack
  cache entry). A signal (Ctrl-C, SIGTERM) interrupts the wait.
- `holder(path)` says whether a lock is held now, and by whom, without taking it for longer than
  the probe.

Releasing removes the lock file. That is safe against the classic unlink race (a waiter that
opened the old file gets the lock on a file no longer in the directory): after every `flock` the
holder checks that the path still names the very file it locked, and starts over when it does not.

Limits: the locks are advisory (they bind tracekit processes, nothing else); on a network file
system they are as good as its `flock` (Linux emulates it with byte-range locks over NFS, so they
hold across hosts there; some older or FUSE file systems ignore them, and where `flock` says it
is not supported, `Lock.acquire` succeeds without a lock). On platforms without `fcntl`
(Windows) there is no lock at all: `Lock.acquire` always succeeds and records nothing.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from .errors import TracekitError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, see the module's docstring
    fcntl = None  # type: ignore[assignment]

HINT = "wait for it to finish, or choose another --out"
MAX_RECORD = 4096  # bytes of a lock file read for the holder's record: it is never trusted to be small
_RETRIES = 32  # starts over when the lock file was replaced or removed under us (see the docstring)
_BUSY = {errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK}  # what flock says when another process holds the lock
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}  # what it says on a file system without locks


class Busy(TracekitError):
    """Another process holds the lock; `holder` is what it recorded (pid, host, command)."""

    def __init__(self, message: str, holder: dict[str, Any]) -> None:
        super().__init__(message)
        self.holder = holder


class Lock:
    """An exclusive advisory lock on the file `path` (created, with its parent, when missing).

    Not reentrant: a second `Lock` on the same path, even in the same process, is another holder.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, wait: bool = False) -> dict[str, Any] | None:
        """Take the lock: None when taken (or when the platform has no locks), else the current
        holder's record (`wait=False` only). `wait=True` blocks in the kernel until it is free.
        `TracekitError` when the lock file cannot be made or is not a regular file."""
        if self._fd is not None:
            raise RuntimeError(f"lock {self.path} is already held by this object")
        if fcntl is None:
            return None
        for _ in range(_RETRIES):
            fd = _open(self.path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except OSError as exc:
                if exc.errno in _UNSUPPORTED:  # a file system without flock: no lock, as without fcntl
                    self._fd = fd
                    return None
                if exc.errno not in _BUSY:
                    os.close(fd)
                    raise TracekitError(f"cannot lock {self.path}: {exc.strerror}") from None
                record = _read_record(fd)
                os.close(fd)
                return record
            except BaseException:  # Ctrl-C while waiting
                os.close(fd)
                raise
            if _same_file(fd, self.path):
                self._fd = fd
                _write_record(fd)
                return None
            os.close(fd)  # the file was removed (or replaced) by its last holder: take the new one
        raise TracekitError(f"cannot lock {self.path}: it keeps being replaced by another process")

    def release(self) -> None:
        """Give the lock up and remove its file (when it is still ours). Idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if _same_file(fd, self.path):
                self.path.unlink(missing_ok=True)
        except OSError:
            pass  # a lock file left behind is harmless: the next holder takes it over
        finally:
            os.close(fd)  # releases the flock

    def __enter__(self) -> Lock:
        self.acquire(wait=True)
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def busy_message(what: str, record: dict[str, Any], hint: str = HINT) -> str:
    """`<what> is in use by another tracekit process (pid 123 on host: command); <hint>`."""
    pid = record.get("pid")
    who = f"pid {pid}" if isinstance(pid, int) else "pid unknown"
    host = record.get("host")
    if isinstance(host, str) and host and host != socket.gethostname():
        who += f" on {_printable(host, 64)}"
    command = record.get("command")
    if isinstance(command, str) and command:
        who += f": {_printable(command, 160)}"
    return f"{what} is in use by another tracekit process ({who}); {hint}"


def try_lock(path: str | Path, what: str, hint: str = HINT) -> Lock:
    """The lock on `path`, held; `Busy` (a `TracekitError`) at once when another process holds it."""
    lock = Lock(path)
    record = lock.acquire(wait=False)
    if record is not None:
        raise Busy(busy_message(what, record, hint), record)
    return lock


@contextmanager
def locked(path: str | Path, what: str, hint: str = HINT) -> Iterator[Lock]:
    """Hold the lock on `path` for the block; when another process holds it, raise `Busy` (a
    `TracekitError`, exit 2) at once, with one line naming `what`, the holder's pid and `hint`."""
    lock = try_lock(path, what, hint)
    try:
        yield lock
    finally:
        lock.release()


def holder(path: str | Path) -> dict[str, Any] | None:
    """The record of the process holding the lock on `path` now, or None when nobody does (or
    the file is missing, or the platform has no locks). Never creates the file."""
    if fcntl is None:
        return None
    try:  # read-write: over NFS an exclusive lock needs a descriptor open for writing
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            return _read_record(fd) if exc.errno in _BUSY else None
        return None  # closing the descriptor below drops the probe's lock
    finally:
        os.close(fd)


def _open(path: Path) -> int:
    """A descriptor of the lock file (made, with its parent, when missing); a link or anything but
    a regular file is refused, so a planted FIFO or `/dev/zero` can neither hang nor flood us."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise TracekitError(f"lock file {path} is a symbolic link; remove it") from None
        raise TracekitError(f"cannot create lock file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise TracekitError(f"lock file {path} is not a regular file; remove it")
    return fd


def _same_file(fd: int, path: Path) -> bool:
    """Whether `path` still names the file open as `fd` (not removed or replaced since)."""
    try:
        mine, there = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino)


def _write_record(fd: int) -> None:
    command = " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]) if sys.argv else ""
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": _printable(command, 500)}
    data = json.dumps(record).encode()
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    except OSError:
        pass  # a full disk: the lock holds all the same, only its record is missing


def _read_record(fd: int) -> dict[str, Any]:
    """What the holder wrote into the lock file (bounded; `{}` when unreadable or not ours)."""
    try:
        data = os.pread(fd, MAX_RECORD, 0)
        record = json.loads(data.decode("utf-8", errors="replace"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _printable(text: str, limit: int) -> str:
    """`text` without control characters (terminal escapes in a name are shown as `?`), cut to `limit`."""
    clean = "".join(c if c.isprintable() else "?" for c in text)
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."
