"""`tracekit.locks`: an advisory lock per file, held by one process at a time, released when its
holder closes it or dies, and a second process told at once who holds it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tracekit.errors import TracekitError
from tracekit.locks import Busy, Lock, holder, locked

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="no fcntl: no locks on Windows")

HOLD = """
import sys, time
from tracekit.locks import Lock
lock = Lock(sys.argv[1])
if sys.argv[2] == "wait":
    print("waiting", flush=True)
lock.acquire(wait=sys.argv[2] == "wait")
assert lock.held
print("held", flush=True)
sys.stdin.readline()  # until told (or killed)
lock.release()
print("released", flush=True)
"""


class Holder:
    """A second process holding (or waiting for, `how="wait"`) the lock on `path`."""

    def __init__(self, path: Path, how: str = "now") -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(path), how],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.pid = self.process.pid

    def expect(self, line: str) -> None:
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == line

    def release(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        self.expect("released")
        assert self.process.wait(timeout=10) == 0

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture
def lock_file(tmp_path):
    return tmp_path / ".run.lock"


def test_a_second_process_is_refused_at_once_naming_the_holder(lock_file):
    other = Holder(lock_file)
    try:
        other.expect("held")
        started = time.monotonic()
        with pytest.raises(TracekitError) as caught:
            with locked(lock_file, "--out run"):
                pytest.fail("two holders at once")
        assert time.monotonic() - started < 2  # no waiting
        message = str(caught.value)
        assert f"--out run is in use by another tracekit process (pid {other.pid}" in message
        assert message.endswith("wait for it to finish, or choose another --out") and "\n" not in message
        assert isinstance(caught.value, Busy) and caught.value.holder["pid"] == other.pid
        assert holder(lock_file)["pid"] == other.pid
    finally:
        other.kill()


def test_the_lock_is_free_once_its_holder_releases_it_and_its_file_is_gone(lock_file):
    other = Holder(lock_file)
    other.expect("held")
    other.release()
    assert not lock_file.exists() and holder(lock_file) is None
    with locked(lock_file, "--out run") as lock:
        assert lock.held and holder(lock_file)["pid"] == os.getpid()  # flock binds open files, not processes
        assert '"pid": %d' % os.getpid() in lock_file.read_text()
    assert not lock_file.exists()


def test_a_lock_left_by_a_killed_process_does_not_block(lock_file):
    other = Holder(lock_file)
    other.expect("held")
    other.process.send_signal(signal.SIGKILL)
    other.process.wait(timeout=10)
    assert lock_file.exists()  # the file stays behind, its lock died with the process
    with locked(lock_file, "--out run"):
        assert holder(lock_file)["pid"] == os.getpid()
    assert not lock_file.exists()


def test_a_waiter_blocks_until_the_holder_is_done(lock_file):
    with locked(lock_file, "--out run"):
        waiter = Holder(lock_file, "wait")
        try:
            waiter.expect("waiting")
            time.sleep(0.5)
            assert waiter.process.poll() is None  # still waiting
        except BaseException:
            waiter.kill()
            raise
    waiter.expect("held")  # got it once this process let go
    waiter.release()


def test_a_waiter_on_a_removed_lock_file_still_excludes_a_newcomer(lock_file):
    """The unlink race: the holder removes the file as it releases; a waiter that had opened the
    old file must take the new one, not a lock on a file no longer in the directory."""
    first = Lock(lock_file)
    assert first.acquire() is None
    waiter = Holder(lock_file, "wait")
    try:
        waiter.expect("waiting")
        time.sleep(0.3)  # the waiter has opened the file and sleeps in flock
        first.release()
        waiter.expect("held")
        with pytest.raises(Busy, match=f"pid {waiter.pid}"):
            with locked(lock_file, "x"):
                pass
        waiter.release()
    finally:
        waiter.kill()


def test_two_locks_in_one_process_exclude_each_other(lock_file):
    with locked(lock_file, "--out a"):
        with pytest.raises(Busy, match=rf"pid {os.getpid()}"):
            with locked(lock_file, "--out a"):
                pass


def test_a_lock_file_that_is_not_a_regular_file_is_refused(tmp_path):
    fifo = tmp_path / ".fifo.lock"
    os.mkfifo(fifo)
    with pytest.raises(TracekitError, match="is not a regular file"):
        Lock(fifo).acquire()
    link = tmp_path / ".link.lock"
    link.symlink_to("/dev/zero")
    with pytest.raises(TracekitError, match="symbolic link"):
        Lock(link).acquire()


def test_a_garbage_lock_file_still_locks_and_is_named_without_a_pid(lock_file):
    lock_file.write_bytes(b"\x1b[31m" * 5000)  # not JSON, larger than what is read of it
    with locked(lock_file, "--out x"):
        assert '"pid"' in lock_file.read_text()  # rewritten by the holder
    other = Holder(lock_file)
    try:
        other.expect("held")
        fd = os.open(lock_file, os.O_WRONLY)
        os.pwrite(fd, b"\x1b[2J not json", 0)
        os.close(fd)
        with pytest.raises(Busy, match=r"pid unknown") as caught:
            with locked(lock_file, "--out x"):
                pass
        assert "\x1b" not in str(caught.value)
    finally:
        other.kill()
