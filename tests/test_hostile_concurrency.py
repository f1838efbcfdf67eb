"""Hostile concurrency, given to the CLI as a user would: two runs into one `--out`, a comparison
written over the runs it compares, locks left by killed processes or planted as FIFOs and links,
runs sharing the attack cache, `cache clear` while a run writes. Every case ends with exit 0 and
complete results, or exit 2 and one clear line naming the other process, never a crash, a hang
or files of two processes mixed (issue 25, item 3)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tracekit.engine.rundir import lock_path

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="no fcntl: no locks on Windows")

# The CLI helpers of the hostile-input corpus: `invoke` (bounded in time) and the one-clear-error rule.
_spec = importlib.util.spec_from_file_location("_hostile_inputs", Path(__file__).with_name("test_hostile_inputs.py"))
assert _spec is not None and _spec.loader is not None
_hostile = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_hostile)
invoke, assert_one_clear_error, spec_file = _hostile.invoke, _hostile.assert_one_clear_error, _hostile.spec_file

TINY = {
    "name": "concurrency",
    "device": "cpu",
    "model": {"name": "tiny-cnn"},
    "data": {"name": "random-images", "n": 48},
    "attacks": [{"name": "sign-noise", "eps": 0.3}],
    "detector": {"name": "feature-response", "score": {"name": "mean-abs"}},
    "batch_size": 8,
    "evaluation": {"bootstrap": 0},
}
COMPARE = {
    **{k: v for k, v in TINY.items() if k != "detector"},
    "detectors": [
        {"name": "feature-response", "score": {"name": "mean-abs"}, "label": "a"},
        {"name": "feature-response", "score": {"name": "mean-abs"}, "label": "b"},
    ],
}

HOLD = """
import sys
from tracekit.locks import Lock
lock = Lock(sys.argv[1])
assert lock.acquire() is None, "held by another process already"
print("held", flush=True)
sys.stdin.readline()  # until told, or killed
lock.release()
"""


class Holder:
    """Another process holding the lock file `path` (as a running tracekit would)."""

    def __init__(self, path: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.pid = self.process.pid
        assert self.process.stdout is not None and self.process.stdout.readline().strip() == "held"

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def __enter__(self) -> Holder:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.kill()


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACEKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _contents(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _earlier_run(out: Path) -> dict[str, bytes]:
    """A stand-in for a finished run in `out` (it has the marker a run directory has)."""
    out.mkdir(parents=True)
    (out / "spec.resolved.yaml").write_text("name: earlier\n")
    (out / "metrics.json").write_text('{"earlier": true}\n')
    return _contents(out)


@pytest.mark.parametrize("command", ["run", "compare"])
def test_a_run_into_an_out_another_process_writes_stops_at_once_naming_it(command, tmp_path, testing_plugin):
    out = tmp_path / "out"
    before = _earlier_run(out)
    spec = spec_file(tmp_path, TINY if command == "run" else COMPARE)
    with Holder(lock_path(out)) as other:
        started = time.monotonic()
        result = invoke(command, spec, "--out", out)
        assert time.monotonic() - started < 20  # no waiting for the other run
    assert_one_clear_error(
        result,
        rf"--out {re.escape(str(out))} is in use by another tracekit process \(pid {other.pid}: .*\); "
        "wait for it to finish, or choose another --out",
    )
    assert _contents(out) == before  # the other run's directory untouched
    assert not (tmp_path / ".out.partial").exists()  # nothing shared with the other run


def test_compare_of_runs_into_one_of_them_is_refused_before_any_work(tmp_path, monkeypatch):
    from tracekit.engine import compare as engine

    def no_work(*args, **kwargs):
        raise AssertionError("the runs were read before --out was checked")

    monkeypatch.setattr(engine, "compare_runs", no_work)
    x, y = tmp_path / "runs" / "x", tmp_path / "runs" / "y"
    before = _earlier_run(x)
    _earlier_run(y)
    assert_one_clear_error(
        invoke("compare", x, y, "--out", x),
        rf"--out {re.escape(str(x))} is the run directory {re.escape(str(x))} being compared.*choose another --out",
    )
    link = tmp_path / "link"
    link.symlink_to(y)
    assert_one_clear_error(invoke("compare", x, y, "--out", link), r"is the run directory .*y being compared")
    assert_one_clear_error(invoke("compare", x, y, "--out", tmp_path / "runs"), r"holds the run directory .*x being")
    assert _contents(x) == before
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["x", "y"]  # no .partial, no .lock


def test_compare_of_runs_into_a_locked_out_is_refused_before_any_work(tmp_path, monkeypatch):
    from tracekit.engine import compare as engine

    monkeypatch.setattr(engine, "compare_runs", lambda *a, **k: pytest.fail("the runs were read"))
    x, y, out = tmp_path / "x", tmp_path / "y", tmp_path / "cmp"
    _earlier_run(x)
    _earlier_run(y)
    with Holder(lock_path(out)) as other:
        assert_one_clear_error(
            invoke("compare", x, y, "--out", out), rf"--out {re.escape(str(out))} is in use by .*pid {other.pid}"
        )
    assert not out.exists() and not (tmp_path / ".cmp.partial").exists()


def test_a_failed_comparison_leaves_neither_a_partial_directory_nor_a_lock(tmp_path):
    x = tmp_path / "x"
    x.mkdir()  # not a finished run
    out = tmp_path / "cmp"
    assert_one_clear_error(invoke("compare", x, "--out", out), re.escape(str(x)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]


def test_a_lock_left_by_a_killed_run_does_not_block(tmp_path, testing_plugin, own_cache):
    out = tmp_path / "out"
    with Holder(lock_path(out)) as other:
        other.kill()
    assert lock_path(out).exists()  # left behind, as a SIGKILL leaves it
    result = invoke("run", spec_file(tmp_path, TINY), "--out", out)
    assert result.exit_code == 0, result.output
    assert (out / "metrics.json").is_file() and (out / "scores.csv").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == ["out", "spec.yaml"]  # lock file gone


@pytest.mark.parametrize("kind", ["fifo", "link-to-dev-zero", "directory"])
def test_a_lock_file_planted_as_something_else_is_one_clear_line_without_hanging(
    kind, tmp_path, testing_plugin, own_cache
):
    out, planted = tmp_path / "out", lock_path(tmp_path / "out")
    if kind == "fifo":
        os.mkfifo(planted)
    elif kind == "directory":
        planted.mkdir()
    else:
        planted.symlink_to("/dev/zero")
    said = {
        "fifo": "is not a regular file",
        "directory": "cannot create lock file|not a regular",
        "link-to-dev-zero": "symbolic link",
    }
    result = invoke("run", spec_file(tmp_path, TINY), "--out", out)
    assert_one_clear_error(result, said[kind])
    assert ".out.lock" in result.output
    assert not out.exists() and not (tmp_path / ".out.partial").exists()


def test_cache_clear_leaves_an_entry_being_written_and_says_who_writes_it(tmp_path, testing_plugin, own_cache):
    assert invoke("run", spec_file(tmp_path, TINY), "--out", tmp_path / "out").exit_code == 0
    (entry,) = (own_cache / "attacks").iterdir()
    batches = _contents(entry)
    batch = sorted(p for p in entry.iterdir() if p.suffix == ".pt")[0]
    with Holder(entry / f".{batch.stem}.lock") as writer:
        result = invoke("cache", "clear")
        assert_one_clear_error(result, rf"in use by a running tracekit process \(pid {writer.pid}\)")
        assert "removed 0" in result.output and "permissions" not in result.output
        assert {k: v for k, v in _contents(entry).items() if not k.endswith(".lock")} == batches  # untouched
        writer.kill()  # leaves its lock file behind
    assert (entry / f".{batch.stem}.lock").exists()
    cleared = invoke("cache", "clear")
    assert cleared.exit_code == 0 and "removed 1" in cleared.output, cleared.output
    assert not entry.exists()  # the dead writer's lock file went with the entry, as the cache's own


def test_a_default_run_directory_taken_by_a_run_started_the_same_second_is_not_shared(tmp_path, monkeypatch):
    from tracekit.engine import rundir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(rundir.time, "strftime", lambda fmt, *a: "20250101-000000")
    with Holder(tmp_path / "runs" / ".x-20250101-000000.lock"):
        with rundir.open_run_dir(None, "x") as mine:
            assert mine.final == Path("runs/x-20250101-000000-2")
            assert mine.work == Path("runs/.x-20250101-000000-2.partial") and mine.work.is_dir()
    left = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert left == [".x-20250101-000000.lock"]  # the killed holder's alone: nothing of the one that ran


# Real runs in other processes (the command line, as a shell would start it).

RUNNER = """
import os, sys, time
import torch
from tracekit import hookimpl, plugins
from tracekit.testing import testing_plugin


class LoggedNoise:
    # Sign noise that logs every batch it attacks (pid per line) and, while the file named by
    # $GATE is missing, waits for it: so that the test decides when a run may go on.
    def generate(self, model, images, labels):
        with open(os.environ["ATTACK_LOG"], "a") as fh:
            fh.write(f"{os.getpid()}\\n")
        while os.environ.get("GATE") and not os.path.exists(os.environ["GATE"]):
            time.sleep(0.05)
        time.sleep(float(os.environ.get("ATTACK_SLEEP", "0")))
        return (images + 0.3 * torch.sign(torch.randn_like(images))).clamp(0, 1)


class Plugin:
    @hookimpl
    def tracekit_register_attacks(self, register):
        register("logged-noise", lambda: LoggedNoise())


plugins.register_plugin(testing_plugin, "tracekit-testing")
plugins.register_plugin(Plugin(), "hostile-concurrency")
from tracekit.cli import main

sys.argv = ["tracekit", *sys.argv[1:]]
main()
"""

LOGGED = {**TINY, "attacks": [{"name": "logged-noise"}], "data": {"name": "random-images", "n": 128}}


def _start(tmp_path: Path, *args: object, **env: str) -> subprocess.Popen:
    runner = tmp_path / "runner.py"
    runner.write_text(textwrap.dedent(RUNNER))
    return subprocess.Popen(
        [sys.executable, str(runner), *map(str, args)],
        env={
            **os.environ,
            "TRACEKIT_CACHE": str(tmp_path / "cache"),
            "ATTACK_LOG": str(tmp_path / "attacks.log"),
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(condition, what: str, process: subprocess.Popen, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the first run ended before {what}: {process.communicate()[0]}")
        assert time.monotonic() < deadline, f"waited {limit} s for {what}"
        time.sleep(0.05)


@pytest.fixture
def logged_noise(testing_plugin):
    """`logged-noise` in this process too (the second run here stops before it would attack)."""
    from tracekit import hookimpl, plugins

    class Plugin:
        @hookimpl
        def tracekit_register_attacks(self, register):
            register("logged-noise", lambda: pytest.fail("the second run attacked"))

    plugins.register_plugin(Plugin(), "hostile-concurrency")
    yield
    plugins.unregister_plugin("hostile-concurrency")


@pytest.mark.slow
def test_two_runs_into_one_out_a_second_apart(tmp_path, logged_noise):
    """The issue's case: the second run used to share the first's `.partial` and crash. Now it
    stops at once naming the first, which finishes untouched."""
    spec, out, gate = spec_file(tmp_path, LOGGED), tmp_path / "out", tmp_path / "gate"
    first = _start(tmp_path, "run", spec, "--out", out, GATE=str(gate))
    try:
        _wait_for(lambda: (tmp_path / "attacks.log").exists(), "its attack started", first)
        second = invoke("run", spec, "--out", out)
        said = rf"--out {re.escape(str(out))} is in use by another tracekit process \(pid {first.pid}: "
        assert_one_clear_error(second, said)
        assert "FileNotFoundError" not in second.output
        gate.touch()
        output, _ = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, output
    assert (out / "metrics.json").is_file() and (out / "report.html").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no .partial, no .lock left


@pytest.mark.slow
def test_runs_sharing_the_attack_cache_compute_each_entry_once_and_agree(tmp_path):
    """Two runs of one spec started together into two directories: every batch is attacked by
    exactly one of them, the other waits and reads its entry, and both report the same scores."""
    spec = spec_file(tmp_path, LOGGED)
    runs = [_start(tmp_path, "run", spec, "--out", tmp_path / name, ATTACK_SLEEP="0.3") for name in ("a", "b")]
    outputs = [process.communicate(timeout=300)[0] for process in runs]
    assert [process.returncode for process in runs] == [0, 0], outputs
    log = (tmp_path / "attacks.log").read_text().split()
    (entry,) = (tmp_path / "cache" / "attacks").iterdir()
    batches = sorted(p.name for p in entry.iterdir() if p.suffix == ".pt")
    assert len(log) == len(batches)  # each batch attacked once, by one run or the other
    assert not [p for p in entry.iterdir() if p.name.endswith((".lock", ".tmp"))]
    assert (tmp_path / "a" / "scores.csv").read_bytes() == (tmp_path / "b" / "scores.csv").read_bytes()
    metrics = [json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("a", "b")]
    cached = [m["attacks"]["logged-noise"]["cached_images"] for m in metrics]
    assert sum(cached) == metrics[0]["data"]["n_test"], cached  # what one computed, the other read
