"""SIGTERM and SIGHUP stop a run like Ctrl-C: one message, finished work kept, no empty run
directory, and the same command resumes. A stop sent at any point of a real run (while Python
imports, as DataLoader workers fork or shut down, between stages, after the last line; to the
process alone or to its whole process group, twice) ends it with 128 + the signal and one line."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SPEC = {
    "name": "signals",
    "model": {"name": "digits-cnn"},
    "device": "cpu",
    "batch_size": 2,
    "data": {"name": "digits", "split": "test", "limit": 24},
    "evaluation": {"bootstrap": 0},
    "attacks": [{"name": "pixel", "scale": 4, "max_iter": 6}],  # ART's, image by image: slow enough to stop
}


def as_from_a_terminal() -> None:
    """In the child, before it runs tracekit: the stops at their defaults, as a terminal starts a
    program. A test session started in the background by a shell without job control ignores
    SIGINT (POSIX), `nohup` SIGHUP; a child inherits that, and tracekit leaves an ignored stop
    ignored, as programs do."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_stopped_run_says_so_keeps_its_work_and_resumes(signum, tmp_path, cache_with_models):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    out = tmp_path / "run"
    command = [str(Path(sys.executable).parent / "tracekit"), "run", str(spec), "--out", str(out)]
    # no attack cached, so the run has work to stop; the session's trained model, so it does not retrain
    env = {**os.environ, "TRACEKIT_CACHE": str(cache_with_models)}
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=as_from_a_terminal
    )
    table = tmp_path / ".run.partial" / "tables" / "attack-00"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(table.glob("*.parquet"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert "interrupted" in err and "run the same command again" in err and "Traceback" not in err
    assert not out.exists() and len(list(table.glob("*.parquet"))) >= 2  # nothing published, work kept
    if signum != signal.SIGTERM:
        return  # a stop is a stop: the resume after one is the same, and SIGTERM's shows it
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    assert (out / "scores.csv").is_file()


# Stops that always stop: a stop at any point of a run (while Python imports, as a DataLoader forks
# its workers or shuts them down, between stages, after the last line) ends it with 128 + the
# signal and one `interrupted` line, never a traceback or "Exception ignored", never exit 0 unless
# the run had finished before the signal was sent, and no process of the run is left behind.

SMALL = {
    "name": "stops",
    "model": {"name": "digits-cnn"},
    "device": "cpu",
    "batch_size": 16,
    "num_workers": 2,  # DataLoader worker processes, forked and shut down at every per-image stage
    "data": {"name": "digits", "split": "test", "limit": 96},
    "evaluation": {"bootstrap": 0},
    "attacks": [{"name": "fgsm", "eps": 0.1}],
}
FINAL = b"report:"  # the last line `tracekit run` prints, once the run directory is in place


class Watched:
    """A `tracekit run` in a session of its own, watched without blocking: its output read as it
    comes, its DataLoader workers (forked copies of it) counted as they start and exit."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
            preexec_fn=as_from_a_terminal,
        )
        self.out, self.err = bytearray(), bytearray()
        for stream in (self.proc.stdout, self.proc.stderr):
            os.set_blocking(stream.fileno(), False)
        self.starts = self.exits = 0  # DataLoaders that started workers; times workers exited
        self._workers: set[str] = set()
        self._cmdline = b""

    def poll(self) -> bool:
        """Read what is there, count workers; whether the process still runs."""
        self._drain()
        workers = self._workers_now()
        if workers and not self._workers:
            self.starts += 1
        if self._workers - workers:
            self.exits += 1
        self._workers = workers
        return self.proc.poll() is None

    def handles_stops(self) -> bool:
        """Whether tracekit's handlers are installed (SIGTERM is caught), from /proc."""
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return False
        caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt")), 16)
        return bool(caught >> (signal.SIGTERM - 1) & 1)

    def wait_for(self, ready, timeout: float = 120) -> bool:
        """Poll until `ready(self)`; False when the process ended first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.poll():
                return False
            if ready(self):
                return True
            time.sleep(0.002)
        raise AssertionError(f"nothing happened in {timeout} s: {self.err.decode()[-2000:]}")

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        """Wait for the exit and the end of both outputs: (exit code, stdout, stderr)."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._drain()
            time.sleep(0.01)
        if self.proc.poll() is None:
            self.proc.kill()
            raise AssertionError(f"still running {timeout} s after the signal: {self.err.decode()[-2000:]}")
        while not self._drain() and time.monotonic() < deadline:  # workers may hold the pipes a moment
            time.sleep(0.01)
        return self.proc.returncode, self.out.decode(), self.err.decode()

    def left_behind(self, timeout: float = 15) -> list[int]:
        """Processes of the run's session still alive (zombies aside) after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            alive = []
            for stat in Path("/proc").glob("[0-9]*/stat"):
                try:
                    fields = stat.read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[3]) == self.proc.pid and fields[0] != "Z":  # pgrp; state
                    alive.append(int(stat.parent.name))
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.05)

    def _drain(self) -> bool:
        """Read what the pipes hold; True once both are at their end."""
        ended = True
        for stream, buffer in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            while True:
                try:
                    chunk = os.read(stream.fileno(), 65536)
                except BlockingIOError:
                    ended = False
                    break
                if not chunk:
                    break
                buffer += chunk
        return ended

    def _workers_now(self) -> set[str]:
        """The live children that are forked copies of the run (DataLoader workers, not `git`)."""
        if not self._cmdline:
            try:
                self._cmdline = Path(f"/proc/{self.proc.pid}/cmdline").read_bytes()
            except OSError:
                return set()
        found = set()
        for tasks in Path(f"/proc/{self.proc.pid}/task").glob("*/children"):
            try:
                children = tasks.read_text().split()
            except OSError:
                continue
            for child in children:
                try:
                    if Path(f"/proc/{child}/cmdline").read_bytes() == self._cmdline:
                        found.add(child)
                except OSError:
                    pass
        return found


def _complete(out: Path) -> bool:
    return all((out / name).is_file() for name in ("spec.resolved.yaml", "metrics.json", "scores.csv", "report.html"))


def _stop_run(tmp_path: Path, cache: Path, ready, signum: int, group: bool = False, again: float | None = None):
    """Start `tracekit run` on the small spec, wait until `ready(watched)`, send `signum` (to the
    whole process group with `group`, as a terminal's Ctrl-C; a second time `again` seconds later);
    check what every stop must give and return (exit code, stderr, the run directory)."""
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SMALL))
    out = tmp_path / "run"
    command = [str(Path(sys.executable).parent / "tracekit"), "run", str(spec), "--out", str(out), "--no-cache"]
    env = {**os.environ, "TRACEKIT_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
    env.pop("TRACEKIT_DEBUG", None)
    run = Watched(command, env)
    sent = run.wait_for(ready)
    finished_before = FINAL in run.out  # read just now: the run had printed its last line before the signal
    if sent:
        (os.killpg if group else os.kill)(run.proc.pid, signum)
        if again is not None:
            time.sleep(again)
            with contextlib.suppress(ProcessLookupError):
                (os.killpg if group else os.kill)(run.proc.pid, signum)
    code, _, err = run.finish()
    assert "Traceback" not in err and "Exception ignored" not in err and "DataLoader" not in err, err
    stops = [line for line in err.splitlines() if "interrupted" in line]
    if code == 0:  # only a run that had finished, its directory in place, before the stop was sent
        assert finished_before or not sent, err
        assert _complete(out) and not stops, err
    else:
        assert code == 128 + signum, err
        assert len(stops) == 1, err
        assert not out.exists() or _complete(out), err  # never a half-published run directory
    assert not run.left_behind(), "processes of the run left behind"
    return code, err, out


STOP_POINTS = {  # id: (signal, when it is sent)
    "importing": (signal.SIGINT, lambda r: r.handles_stops()),
    "first-workers-forking": (signal.SIGTERM, lambda r: r.starts >= 1),
    "first-workers-exiting": (signal.SIGINT, lambda r: r.exits >= 1),
    "attack-workers-forking": (signal.SIGTERM, lambda r: r.starts >= 2),
    "attack-workers-exiting": (signal.SIGHUP, lambda r: r.exits >= 2),
    "scoring": (signal.SIGINT, lambda r: r.starts >= 3),
    "scoring-workers-exiting": (signal.SIGTERM, lambda r: r.exits >= 4),
    "after-the-last-line": (signal.SIGTERM, lambda r: FINAL in r.out),
}


@pytest.mark.parametrize("point", list(STOP_POINTS))
def test_a_stop_at_any_point_of_a_run_ends_it_with_its_exit_code_and_one_line(point, tmp_path, cache_with_models):
    signum, ready = STOP_POINTS[point]
    code, err, out = _stop_run(tmp_path, cache_with_models, ready, signum)
    if point != "after-the-last-line":
        assert code == 128 + signum, err  # sent long before the end: a stop, never a finished run
        assert not out.exists()
        assert f"({signal.Signals(signum).name})" in err or signum == signal.SIGINT


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_sent_to_the_whole_process_group_while_scoring_is_quiet(signum, tmp_path, cache_with_models):
    """A terminal's Ctrl-C (twice: the second while the first stops the run) or a scheduler's
    SIGTERM reaches the DataLoader workers too: they print nothing, the run ends with one line."""
    again = 0.05 if signum == signal.SIGINT else None
    code, err, _ = _stop_run(tmp_path, cache_with_models, lambda r: r.starts >= 3, signum, group=True, again=again)
    assert code == 128 + signum, err
