"""The `ray` executor on a real two-node Ray cluster in one machine (`ray.cluster_utils.Cluster`,
one CPU per node, one worker per node), the run's driver a separate `tracekit run` process joined
to it, as on a real cluster: a node removed while a stage runs, a node removed between stages, and a
node that joins after one was lost each end with the local run's `scores.csv`; hung workers stop
the run after `stall_timeout`, resumably; and when no worker is left, one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tracekit.engine.run import run
from tracekit.errors import TracekitError
from tracekit.testing import shard_worker_pids

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

DATA = {"name": "digits", "split": "test", "limit": 40}
SLOW = [{"name": "pixel", "max_iter": 10, "scale": 4}]  # ART's one-pixel, image by image: ~0.1 s each
TWO = {"name": "ray", "workers": 2, "cpus_per_worker": 1, "shard_chunks": 2}
CHUNKS = 20  # 40 digits in chunks of batch_size 2 (all classified correctly: 20 clean chunks)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("cache_with_models")]


def spec(executor: dict | None = None, limit: int = DATA["limit"]) -> dict:
    return {
        "name": "nodes",
        "model": {"name": "digits-cnn"},
        "data": {**DATA, "limit": limit},
        "attacks": SLOW,
        "batch_size": 2,
        "device": "cpu",
        "evaluation": {"bootstrap": 0},
        "executor": executor or {"name": "local"},
    }


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> Path:
    """The local run every cluster run must equal."""
    return run(spec(), out=tmp_path_factory.mktemp("local") / "run", use_cache=False).out_dir


@pytest.fixture(scope="module")
def head():
    """The cluster's head node, one CPU, for the module; this process connected (for `ray.kill`)."""
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    ray.init(address=nodes.address, configure_logging=False, log_to_driver=False)
    yield nodes
    ray.shutdown()
    nodes.shutdown()


@pytest.fixture
def cluster(head):
    """The head and exactly one other node, one CPU each (whatever the previous test left)."""
    for node in list(head.worker_nodes):
        head.remove_node(node)
    second = head.add_node(num_cpus=1)
    head.wait_for_nodes()
    return head, second


def start(nodes: Cluster, tmp_path: Path, limit: int = DATA["limit"], **executor) -> tuple[subprocess.Popen, Path]:
    """`tracekit run` of the spec on the cluster, in its own process; the run's table directory."""
    path = tmp_path / "spec.json"  # JSON is YAML
    path.write_text(json.dumps(spec({**TWO, "address": nodes.address, **executor}, limit)))
    command = [str(Path(sys.executable).parent / "tracekit"), "run", str(path), "--out", str(tmp_path / "run")]
    env = {**os.environ, "TRACEKIT_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return proc, tmp_path / ".run.partial" / "tables"


def when(proc: subprocess.Popen, table: Path, chunks: int, action: Callable[[], None]) -> None:
    """Call `action()` (here, in the main thread: Ray's node API needs it) once `table` holds
    `chunks` chunk files; fail if the run ends first."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if table.is_dir() and len(list(table.glob("*.parquet"))) >= chunks:
            action()
            return
        time.sleep(0.02)
    pytest.fail(f"the run ended (or took 300 s) before {table.name} held {chunks} chunks: {proc.communicate()[1]}")


def finished(proc: subprocess.Popen) -> str:
    """The run's standard error, once it has ended with exit code 0."""
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return " ".join(err.split())


def same(a: Path, b: Path) -> None:
    assert (a / "scores.csv").read_bytes() == (b / "scores.csv").read_bytes()


def test_a_node_lost_while_a_stage_runs(cluster, local, tmp_path):
    nodes, second = cluster
    proc, tables = start(nodes, tmp_path)
    when(proc, tables / "attack-00", 2, lambda: nodes.remove_node(second))
    said = finished(proc)
    assert said.count("was lost") == 1 and "its shard went back to the queue, 1 worker(s) go on" in said
    same(local, tmp_path / "run")


def test_a_node_lost_between_stages(cluster, local, tmp_path):
    nodes, second = cluster
    proc, tables = start(nodes, tmp_path)
    when(proc, tables / "clean", CHUNKS, lambda: nodes.remove_node(second))  # the first stage's last chunk
    finished(proc)
    same(local, tmp_path / "run")


def test_a_node_that_joins_takes_the_lost_workers_place(cluster, tmp_path):
    # Replaced while the clean images are predicted, with twice the images: the attack then has
    # work left for as long as Ray takes to start a worker on the new node (a loaded CI machine
    # took longer than the rest of the run when the node was replaced mid-attack on 40 images).
    nodes, second = cluster
    local = run(spec(limit=80), out=tmp_path / "local", use_cache=False).out_dir
    proc, tables = start(nodes, tmp_path, limit=80)

    def replace():
        nodes.remove_node(second)
        nodes.add_node(num_cpus=1)

    when(proc, tables / "clean", 2, replace)
    said = finished(proc)
    assert "was lost" in said and "is back" in said and "takes work again" in said, said
    same(local, tmp_path / "run")


def test_hung_workers_stop_the_run_resumably(cluster, tmp_path):
    nodes, _ = cluster
    proc, tables = start(nodes, tmp_path, stall_timeout=15)
    stopped = []

    def hang():  # nothing dies, nothing finishes
        for pid in shard_worker_pids():
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)

    try:
        when(proc, tables / "attack-00", 1, hang)
        _, err = proc.communicate(timeout=120)
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    said = " ".join(err.split())
    assert proc.returncode == 2, err
    assert "no shard finished for 15 s" in said and "run the same command (same --out) to resume" in said
    assert "Traceback" not in err
    assert list((tables / "attack-00").glob("*.parquet"))  # the finished chunks are kept for the resume


def test_no_worker_left_is_one_line(cluster, tmp_path, monkeypatch):
    from tracekit.executors.ray_executor import RayExecutor

    started: list[RayExecutor] = []
    begin = RayExecutor.start

    def remembered(self, job, here):
        started.append(self)
        begin(self, job, here)

    monkeypatch.setattr(RayExecutor, "start", remembered)
    attack = tmp_path / ".run.partial" / "tables" / "attack-00"

    def kill_for_good():  # without restarts: Ray gives the workers up
        deadline = time.monotonic() + 300
        while not (attack.is_dir() and list(attack.glob("*.parquet"))) and time.monotonic() < deadline:
            time.sleep(0.02)
        for actor in started[0].actors:
            ray.kill(actor, no_restart=True)

    import threading

    killer = threading.Thread(target=kill_for_good, daemon=True)
    killer.start()
    with pytest.raises(TracekitError) as caught:
        run(spec(TWO), out=tmp_path / "run", use_cache=False)
    killer.join()
    said = str(caught.value)
    assert "no Ray worker is left (2 lost)" in said and "run the same command (same --out) to resume" in said
    assert "\n" not in said
    assert list(attack.glob("*.parquet"))
