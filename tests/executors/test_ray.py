"""The `ray` executor on a local Ray instance (2 CPUs, no GPU), started once for this module:
identical results to the local executor, a killed worker recovered, an interrupted driver
resumed, and bad executor input as one clear error."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tracekit.engine.compare import compare
from tracekit.engine.run import run
from tracekit.errors import TracekitError
from tracekit.testing import shard_worker_pids

ray = pytest.importorskip("ray")

DATA = {"name": "digits", "split": "test", "limit": 96}
QUICK = [{"name": "fgsm", "eps": 0.1}]
SLOW = [{"name": "pixel", "max_iter": 10, "scale": 4}]  # ART's one-pixel, image by image: ~0.1 s each


@pytest.fixture(scope="module")
def cluster():
    """A local Ray instance with 2 CPUs; its address, for runs that join it from another process."""
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def spec(executor: dict | None = None, **overrides) -> dict:
    base = {
        "name": "ray-test",
        "model": {"name": "digits-cnn"},
        "data": DATA,
        "attacks": QUICK,
        "batch_size": 16,
        "device": "cpu",
        "evaluation": {"bootstrap": 50},
        "executor": executor or {"name": "local"},
    }
    return {**base, **overrides}


RAY2 = {"name": "ray", "workers": 2}


def without_timings(value):
    """metrics.json without what says how long work took or how much of it a cache saved."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in ("seconds", "cached_images", "cost")}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def assert_same(a: Path, b: Path) -> None:
    assert (a / "scores.csv").read_bytes() == (b / "scores.csv").read_bytes()
    metrics = [without_timings(json.loads((d / "metrics.json").read_text())) for d in (a, b)]
    assert metrics[0] == metrics[1]


@pytest.mark.slow
def test_a_run_on_ray_workers_equals_the_local_run(cluster, tmp_path):
    attacks = [*QUICK, {"name": "adaptive-entropy", "eps": 0.1, "max_iter": 3, "lambdas": [0.0, 3.0]}]
    common = {"attacks": attacks, "controls": ["noise", "randomized-model"]}
    local = run(spec(**common), out=tmp_path / "local", use_cache=False)
    for label, executor in [("two", RAY2), ("one-chunk-shards", {**RAY2, "shard_chunks": 1})]:
        remote = run(spec(executor, **common), out=tmp_path / label, use_cache=False)  # attacked on the workers
        assert_same(local.out_dir, remote.out_dir)
        assert remote.spec.provenance["executor"]["workers"] == 2
        assert remote.spec.provenance["executor"]["devices"] == ["cpu"]


@pytest.mark.slow
def test_a_comparison_with_a_learned_detector_on_ray_equals_the_local_one(cluster, tmp_path):
    detectors = [{"name": "feature-response"}, {"name": "lid", "k": 5, "batch_size": 32}]
    local = compare(spec(detectors=detectors), out=tmp_path / "local", use_cache=False)
    remote = compare(spec(RAY2, detectors=detectors), out=tmp_path / "ray", use_cache=False)
    assert_same(local.out_dir, remote.out_dir)


def _when_chunks(table: Path, count: int, action, timeout: float = 600) -> threading.Thread:
    """Call `action()` once `table` holds `count` chunk files (in a thread); the timeout is
    generous, for a loaded machine."""

    def watch():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if table.is_dir() and len(list(table.glob("*.parquet"))) >= count:
                action()
                return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_a_worker_killed_mid_stage_is_replaced_and_the_run_is_identical(cluster, tmp_path):
    slow = {"attacks": SLOW, "data": {**DATA, "limit": 40}, "batch_size": 2}
    local = run(spec(**slow), out=tmp_path / "local", use_cache=False)
    killed: list[tuple[int, int]] = []  # (pid, chunks finished when it was killed)
    attack_table = tmp_path / ".ray.partial" / "tables" / "attack-00"

    def kill_one():
        pid = min(shard_worker_pids())
        killed.append((pid, len(list(attack_table.glob("*.parquet")))))
        os.kill(pid, signal.SIGKILL)

    watcher = _when_chunks(attack_table, 2, kill_one)
    remote = run(spec({**RAY2, "shard_chunks": 2}, **slow), out=tmp_path / "ray", use_cache=False)
    watcher.join()
    total = len(list((remote.out_dir / "tables" / "attack-00").glob("*.parquet")))
    assert killed and killed[0][1] < total  # the kill came while the attack still had work left
    assert not Path(f"/proc/{killed[0][0]}").exists()
    assert_same(local.out_dir, remote.out_dir)


@pytest.mark.slow
@pytest.mark.usefixtures("cache_with_models")  # tmp_path / "cache" holds the session's trained digits-cnn
def test_an_interrupted_driver_resumes_with_the_same_command(cluster, tmp_path):
    slow = {"attacks": SLOW, "data": {**DATA, "limit": 40}, "batch_size": 2, "name": "resume"}
    reference = run(spec(**slow), out=tmp_path / "local", use_cache=False)
    path = tmp_path / "spec.json"  # JSON is YAML
    path.write_text(json.dumps(spec({**RAY2, "address": cluster}, **slow)))
    out = tmp_path / "ray"
    # Started with SIGINT at its default, as from a terminal: a test session started in the
    # background by a shell without job control (`bash -c 'pytest &'`, as scripts do) has SIGINT
    # ignored (POSIX), a child inherits that, and Python then leaves it ignored, so Ctrl-C would
    # never reach the run. (SIGTERM, which such jobs are stopped with, is handled either way.)
    command = [
        sys.executable,
        "-c",
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])",
        str(Path(sys.executable).parent / "tracekit"),
        "run",
        str(path),
        "--out",
        str(out),
    ]
    env = {**os.environ, "TRACEKIT_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    attack_table = tmp_path / ".ray.partial" / "tables" / "attack-00"
    _when_chunks(attack_table, 2, lambda: proc.send_signal(signal.SIGINT)).join()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "run the same command again" in err
    kept = {p.name: p.stat().st_mtime_ns for p in attack_table.glob("*.parquet")}
    total = len(list((reference.out_dir / "tables" / "attack-00").glob("*.parquet")))
    assert 2 <= len(kept) < total and not out.exists()
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    assert_same(reference.out_dir, out)
    resumed = {p.name: p.stat().st_mtime_ns for p in (out / "tables" / "attack-00").glob("*.parquet")}
    assert len(resumed) == total and all(resumed[name] == mtime for name, mtime in kept.items())  # not recomputed


@pytest.mark.slow
def test_bad_executor_input_is_one_clear_error(cluster, tmp_path, monkeypatch):
    from tracekit.spec import validate_spec

    with pytest.raises(TracekitError, match=r"executor.workers: Input should be greater than or equal to 1"):
        validate_spec(spec({"name": "ray", "workers": 0}))
    with pytest.raises(TracekitError, match=r"executor.name: unknown executor 'rey' \(did you mean 'ray'"):
        validate_spec(spec({"name": "rey"}))
    with pytest.raises(TracekitError, match=r"cluster has 2 CPUs .* lower executor.workers"):
        run(spec({"name": "ray", "workers": 3}), out=tmp_path / "r")


@pytest.mark.slow
def test_an_unreachable_address_fails_within_its_timeout(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec({"name": "ray"})))
    tracekit = str(Path(sys.executable).parent / "tracekit")
    for address, timeout, said in [
        ("127.0.0.1:9", 2, r"cannot reach the Ray cluster at 127.0.0.1:9 within 2 s"),  # refused at once
        # no answer, or (behind a proxy that accepts any connection) no Ray there
        ("10.255.255.1:6379", 1, r"(cannot reach|could not join) the Ray cluster at 10.255.255.1:6379"),
    ]:
        started = time.monotonic()
        overrides = ["--set", f"executor.address={address}", "--set", f"executor.connect_timeout={timeout}"]
        done = subprocess.run(
            [tracekit, "run", str(path), "--out", str(tmp_path / "r"), *overrides],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2 and re.search(said, done.stderr), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert time.monotonic() - started < 60


def test_ray_not_installed_names_the_extra(monkeypatch):
    from tracekit.executors.factories import ray as make

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(
        TracekitError, match=r"executor 'ray' needs Ray, which is not installed: pip install 'tracekit\[ray\]'"
    ):
        make()


def test_a_worker_that_cannot_see_the_run_directory_names_it(tmp_path):
    from tracekit.engine.context import worker_context
    from tracekit.executing import Job
    from tracekit.spec import validate_spec

    job = Job(
        validate_spec(spec()), tmp_path / "elsewhere", tmp_path, "model-fingerprint", "stage-key", 1, worker_context
    )
    with pytest.raises(
        TracekitError, match=rf"cannot see the run directory {tmp_path / 'elsewhere'}.*shared file system"
    ):
        job.context()


@pytest.mark.slow
def test_a_workers_error_stops_the_run_with_its_message(cluster, tmp_path):
    """The adaptive attack binds to the fitted detector on the worker, which refuses this one."""
    attacks = [{"name": "adaptive-entropy", "max_iter": 2, "lambdas": [0.0]}]
    detector = {"name": "feature-response", "score": {"name": "global-entropy"}}
    said = (
        r"attack 'adaptive-entropy' can only attack the feature-response detector "
        r".* got GuidedBackprop \+ GlobalEntropy"
    )
    for executor in ({"name": "local"}, RAY2):
        with pytest.raises(TracekitError, match=said):
            run(spec(executor, attacks=attacks, detector=detector), out=tmp_path / executor["name"], use_cache=False)
