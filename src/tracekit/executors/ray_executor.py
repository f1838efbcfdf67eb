"""The `ray` executor: a run's per-image stages mapped over shards of chunks by long-lived Ray
actors, on one machine or a cluster (`pip install 'tracekit[ray]'`).

Each actor (`ShardWorker`, one per GPU where the cluster has GPUs) builds its model, data
reader and attacks once from the run's `Job` (`job.context()`, `tracekit.executing`) and then
runs shard after shard of every stage; the driver keeps the global steps (split, detector fit,
calibration, metrics, report) and hands fitted detectors to the actors through Ray's object
store. Shards go out as actors become free, so a slow node does not hold the others up. A shard
writes its results chunk by chunk, atomically, into the run directory and the attack cache,
which must therefore be on storage every node sees; a worker that cannot see them says so.

Faults. A worker lost mid-shard (its process killed, or its whole node gone) fails its task at
once (`max_task_retries=0`): the shard goes back to the queue and the next free living worker
takes it, skipping the chunks already written; the run says once which worker and node was lost
and Ray's reason, and goes on with the workers it has. Ray restarts a lost worker (`max_restarts`)
wherever it can place it, on its own node or on one that joins later: each stage asks every
worker whether it is there (`ready`), hands work to each as soon as it answers, and keeps a lost
worker's question open until Ray has restarted it (then it takes work again) or given it up.
When no worker is left, or none has finished a shard for `stall_timeout` seconds while work
waits (a node that hangs rather than dies), the run stops with one line; the finished chunks are
kept and the same command resumes. A shard that has lost its worker `RETRIES + 1` times stops the
run too (a shard that kills its worker, out of memory for example, would otherwise go round the
cluster). Ctrl-C on the driver kills the actors (their finished chunks stay) and the same command
resumes.

This is deliberately not a home-made scheduler: placement, restarts and object transfer are
Ray's; this module cuts stages into shards, hands them to the workers that are there and puts
back the shards of those that are lost.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

from ..cache import cache_dir
from ..containment import describe
from ..errors import PluginFault, TracekitError
from ..executing import Chunk, Done, Job, Stage
from ..stopping import STOPS

RETRIES = 3  # restarts of a lost worker, and workers a shard may lose before the run stops
POLL = 1.0  # seconds between checks for a stalled cluster while waiting for shards
RESUME = "the finished chunks are kept: run the same command (same --out) to resume"
EXTRA = "pip install 'tracekit[ray]'"


class Remote:
    """A value in Ray's object store, fetched by the workers that need it (once per worker)."""

    def __init__(self, ref: Any) -> None:
        self.ref = ref

    def get(self) -> Any:
        import ray

        return ray.get(self.ref)


class ShardWorker:
    """One Ray actor: a worker's context, built once from the job, and the shards it runs."""

    def __init__(self, job: Job, decoders: int) -> None:
        self.job, self.decoders = job, decoders
        self.context: Any = None  # built from the job on first use

    def _context(self) -> Any:
        if self.context is None:
            self.context = self.job.context(self.decoders)
        return self.context

    def ready(self) -> dict[str, Any]:
        """Build the context now (so that a worker's set-up errors come before any work); say where it runs."""
        import ray

        context = self._context()
        node = ray.get_runtime_context().get_node_id()
        return {"node": socket.gethostname(), "node_id": node, "pid": os.getpid(), "device": str(context.device)}

    def run(self, stage: Stage, shard: list[Chunk]) -> tuple[int, list[str]]:
        """Run `stage` on `shard`; return its images and the warnings it raised."""
        context = self._context()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                images = sum(stage.run(context, shard))
            except (Exception, KeyboardInterrupt):
                raise
            except BaseException as exc:  # a plugin's sys.exit would end this worker, and read as a crash
                raise PluginFault(describe(exc) or f"a worker's stage raised {exc!r}, which is a bug") from None
        return images, list(dict.fromkeys(str(w.message) for w in caught))


class RayExecutor:
    """Maps stages over shards with `workers` long-lived actors."""

    def __init__(
        self,
        address: str | None,
        workers: int | None,
        gpus_per_worker: float | None,
        cpus_per_worker: float,
        shard_chunks: int | None,
        connect_timeout: float,
        stall_timeout: float = 1800.0,
    ) -> None:
        self.address, self.workers, self.gpus, self.cpus = address, workers, gpus_per_worker, cpus_per_worker
        self.shard_chunks, self.connect_timeout = shard_chunks, connect_timeout
        self.stall_timeout = stall_timeout
        self.actors: list[Any] = []
        self.pending: dict[Any, int] = {}  # open `ready` questions to workers -> worker number
        self.lost: set[int] = set()  # workers lost and not back yet
        self.where: dict[int, dict[str, Any]] = {}  # worker number -> where it last said it runs
        self.info: dict[str, Any] = {"name": "ray", "address": address}
        self._started_ray = False

    def open(self) -> None:
        """Join the cluster (or start a local instance) before any work."""
        import ray

        if not ray.is_initialized():
            _connect(self.address, self.connect_timeout)
            self._started_ray = True
        elif self.address not in (None, "auto"):
            joined = ray.get_runtime_context().gcs_address
            if joined != self.address.split("://", 1)[-1]:
                raise TracekitError(
                    f"executor.address: this process is already connected to the Ray cluster at {joined}, "
                    f"not {self.address}; use address: auto (or null) to run on it"
                )

    def start(self, job: Job, here: Any) -> None:
        import ray

        resources = ray.cluster_resources()
        gpus = self.gpus if self.gpus is not None else (1.0 if resources.get("GPU", 0) >= 1 else 0.0)
        count = self.workers or _fitting(resources, self.cpus, gpus)
        _check_room(resources, count, self.cpus, gpus)
        worker = ray.remote(
            num_cpus=self.cpus,
            num_gpus=gpus,
            max_restarts=RETRIES,
            max_task_retries=0,  # a lost worker's shard goes back to the queue, to any living worker
            runtime_env={"env_vars": {"TRACEKIT_CACHE": str(cache_dir())}},
        )(ShardWorker)
        self.actors = [worker.remote(job, max(0, int(self.cpus) - 1)) for _ in range(count)]
        try:
            where = self._gather([actor.ready.remote() for actor in self.actors], "starting the workers")
        except _Lost as lost:
            raise TracekitError(
                f"starting the workers: a Ray worker died {RETRIES + 1} times ({lost.cause}); out of memory? "
                "try fewer workers per node or a smaller batch_size"
            ) from None
        self.where = dict(enumerate(where))
        self.info = {
            "name": "ray",
            "address": self.address,
            "workers": count,
            "gpus_per_worker": gpus,
            "cpus_per_worker": self.cpus,
            "nodes": sorted({w["node"] for w in where}),
            "devices": sorted({w["device"] for w in where}),
        }

    def share(self, value: Any) -> Remote:
        import ray

        return Remote(ray.put(value))

    def map(self, stage: Stage, pieces: list[Chunk]) -> Iterator[Done]:
        import ray

        if not pieces:
            return
        shards = _shards(pieces, len(self.actors), self.shard_chunks)
        staged = ray.put(stage)  # once in the object store, not once per shard
        what = f"a shard of {type(stage).__name__}"
        queue = _Queue(len(shards))
        # Every worker is asked whether it is there; each takes work as soon as it answers. A lost
        # worker's question stays open (across stages) until Ray has restarted it or given it up.
        asked = set(self.pending.values())
        pings = {
            **self.pending,
            **{self.actors[i].ready.remote(): i for i in range(len(self.actors)) if i not in asked},
        }
        self.pending = pings
        free: list[int] = []
        running: dict[Any, tuple[int, int]] = {}  # task -> (worker, shard)
        last = time.monotonic()
        try:
            while queue.left:
                while free and queue.waiting:
                    worker, shard = free.pop(0), queue.take()
                    running[self.actors[worker].run.remote(staged, shards[shard])] = (worker, shard)
                if not running and not pings:
                    raise TracekitError(f"{what}: no Ray worker is left ({len(self.actors)} lost); {RESUME}")
                finished, _ = ray.wait([*running, *pings], num_returns=1, timeout=POLL)
                if not finished:
                    if time.monotonic() - last > self.stall_timeout:
                        raise TracekitError(
                            f"{what}: no shard finished for {self.stall_timeout:g} s while {queue.left} waited "
                            f"(a Ray node that hangs?; executor.stall_timeout sets how long); {RESUME}"
                        )
                    continue
                ref = finished[0]
                if ref in pings:  # a worker answered: it is there (maybe restarted by Ray), or gone for good
                    worker = pings.pop(ref)
                    if self._answered(ref, worker):
                        free.append(worker)
                        if worker in self.lost:
                            self.lost.discard(worker)
                            yield Done(0, [f"Ray worker {worker} is back ({self._place(worker)}) and takes work again"])
                    continue
                worker, shard = running.pop(ref)
                try:
                    images, messages = self._gather([ref], what)[0]
                except _Lost as lost:
                    queue.put_back(shard, what, lost.cause)
                    pings[self.actors[worker].ready.remote()] = worker  # answers once Ray has restarted it
                    self.lost.add(worker)
                    yield Done(0, [self._lost_message(worker, lost.cause, len(free) + len(running))])
                    continue
                last = time.monotonic()
                queue.finish()
                free.append(worker)
                yield Done(images, messages)
        except BaseException:
            self._stop()  # Ctrl-C or a failed shard: no more work anywhere; finished chunks stay
            raise

    def _answered(self, ping: Any, worker: int) -> bool:
        """Whether worker `worker`'s finished `ping` says it is there (and where it now runs)."""
        try:
            self.where[worker] = self._gather([ping], "a worker's restart")[0]
        except _Lost:
            return False  # gone for good: Ray will not restart it again
        return True

    def _place(self, worker: int) -> str:
        where = self.where.get(worker, {})
        return f"node {where.get('node', '?')} {str(where.get('node_id', '?'))[:8]}, pid {where.get('pid', '?')}"

    def _lost_message(self, worker: int, cause: str, left: int) -> str:
        return (
            f"Ray worker {worker} ({self._place(worker)}) was lost: {cause}; its shard went back to the queue, "
            f"{left} worker(s) go on"
        )

    def close(self) -> None:
        self._stop()
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False

    def _stop(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors, self.pending, self.lost = [], {}, set()

    def _gather(self, refs: list[Any], what: str) -> list[Any]:
        """`ray.get`, with a worker's error re-raised as what it is (a `TracekitError` keeps its
        message; anything else comes with the worker's traceback)."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        try:
            return ray.get(refs)
        except RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, BaseException) else None
            if isinstance(cause, (TracekitError, PluginFault)):
                raise cause from None
            raise WorkerError(f"{what}: a worker failed:\n{exc}") from None
        except RayActorError as exc:
            raise _Lost(_death(exc)) from None


class _Lost(Exception):
    """A worker's task failed because the worker is gone (its process or its node); `cause`: Ray's reason."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


class _Queue:
    """The shards of one stage: those waiting (in order; a lost worker's shard first again), and
    how often each has lost its worker."""

    def __init__(self, count: int) -> None:
        self.waiting = list(range(count))
        self.left = count
        self.losses = [0] * count

    def take(self) -> int:
        return self.waiting.pop(0)

    def put_back(self, shard: int, what: str, cause: str) -> None:
        self.losses[shard] += 1
        if self.losses[shard] > RETRIES:
            raise TracekitError(
                f"{what}: the same shard lost its Ray worker {self.losses[shard]} times (last: {cause}); out of "
                f"memory? try fewer workers per node or a smaller batch_size; {RESUME}"
            )
        self.waiting.insert(0, shard)

    def finish(self) -> None:
        self.left -= 1


class WorkerError(RuntimeError):
    """An unexpected error in a worker (a bug, in tracekit or a plugin), with its traceback."""


def _connect(address: str | None, timeout: float) -> None:
    """Start a local Ray instance (`address` null) or join a running cluster, within `timeout` seconds."""
    import ray

    if address not in (None, "auto", "local"):
        host, port = _host_port(address)
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as exc:
            raise TracekitError(
                f"executor.address: cannot reach the Ray cluster at {address} within {timeout:g} s "
                f"({exc.strerror or exc}); is `ray start --head` running there, and is the port open?"
            ) from None
    started = time.perf_counter()
    # Ray retries a silent or wrong address about once a second, 20 times by default; bound it.
    wait = {"RAY_gcs_server_port_wait_time_s": str(max(1, math.ceil(timeout)))}
    try:
        with _env(wait), _held_stderr(), _own_stops():
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError ...
        where = "start a local Ray instance" if address is None else f"join the Ray cluster at {address}"
        hint = "; start one with `ray start --head`, or set executor.address to null for a local instance"
        raise TracekitError(
            f"executor.address: could not {where} ({_first_line(exc)}, after {time.perf_counter() - started:.0f} s)"
            + (hint if address else "")
        ) from None


@contextlib.contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    """Environment variables set for the duration (unless the user set them)."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


@contextlib.contextmanager
def _own_stops() -> Iterator[None]:
    """Keep this process's handlers of SIGINT, SIGTERM and SIGHUP (`ray.init` makes SIGTERM a
    `sys.exit`, which would skip the `interrupted` line and its exit code, `tracekit.stopping`)."""
    main = threading.current_thread() is threading.main_thread()
    saved = {signum: signal.getsignal(signum) for signum in STOPS} if main else {}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            if handler is not None and signal.getsignal(signum) is not handler:
                signal.signal(signum, handler)


@contextlib.contextmanager
def _held_stderr() -> Iterator[None]:
    """Silence file descriptor 2 while Ray connects: its core logs every retry there, so a
    failed connection would not be one clear line. Ray keeps its own logs in its session
    directory (`/tmp/ray/session_latest/logs`), workers' output included."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def _host_port(address: str) -> tuple[str, int]:
    rest = address.split("://", 1)[-1]
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise TracekitError(f"executor.address: expected HOST:PORT, 'auto' or null, got {address!r}")
    return host, int(port)


def _fitting(resources: dict[str, float], cpus: float, gpus: float) -> int:
    """Workers by default: one per GPU where the cluster has GPUs, else as many as its CPUs hold."""
    if gpus > 0:
        return max(1, int(resources.get("GPU", 0) // gpus))
    return max(1, int(resources.get("CPU", 1) // cpus))


def _check_room(resources: dict[str, float], count: int, cpus: float, gpus: float) -> None:
    """Refuse what the cluster cannot hold (Ray would wait for it forever)."""
    have_cpus, have_gpus = resources.get("CPU", 0), resources.get("GPU", 0)
    if count * cpus > have_cpus or count * gpus > have_gpus:
        raise TracekitError(
            f"executor: {count} workers need {count * cpus:g} CPUs and {count * gpus:g} GPUs, but the Ray cluster "
            f"has {have_cpus:g} CPUs and {have_gpus:g} GPUs; lower executor.workers, cpus_per_worker or gpus_per_worker"
        )


def _shards(pieces: list[Chunk], workers: int, size: int | None) -> list[list[Chunk]]:
    """`pieces` cut into shards of `size` chunks (default: about four shards per worker, at most
    16 chunks each), in order."""
    size = size or max(1, min(16, math.ceil(len(pieces) / (4 * workers))))
    return [pieces[i : i + size] for i in range(0, len(pieces), size)]


def _death(exc: BaseException) -> str:
    """Ray's reason a worker is gone, from its error: the sentence that says why ("The actor is
    dead because ...", or what follows "is unavailable:"), else its first line."""
    lines = [line.strip() for line in str(exc).splitlines()]
    why = next((line for line in lines if line.startswith("The actor is dead because")), None)
    if why:
        return why.removeprefix("The actor is dead because ").rstrip(".")
    unavailable = next((line for line in lines if " is unavailable: " in line), None)
    if unavailable:
        return unavailable.split(" is unavailable: ", 1)[1].rstrip(".")
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
