"""The built-in executors' factories, each registered under its name where it is defined
(`@executors.register`): its parameters (its signature, checked when a spec loads) and summary.
This module stays light: a factory imports its executor (the engine, torch, Ray) in its body, so
that `tracekit validate` and `tracekit plugins` never import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from ..errors import TracekitError
from ..hookspecs import Components

if TYPE_CHECKING:
    from .local import LocalExecutor
    from .ray_executor import RayExecutor

executors = Components("executor")


@executors.register("local")
def local() -> LocalExecutor:
    """Run every stage in this process (the default)."""
    from .local import LocalExecutor

    return LocalExecutor()


@executors.register("ray")
def ray(
    address: str | None = None,
    workers: Annotated[int, Field(ge=1, le=100_000)] | None = None,
    gpus_per_worker: Annotated[float, Field(ge=0, le=64)] | None = None,
    cpus_per_worker: Annotated[float, Field(gt=0, le=1024)] = 1.0,
    shard_chunks: Annotated[int, Field(ge=1, le=100_000)] | None = None,
    connect_timeout: Annotated[float, Field(gt=0, le=3600)] = 30.0,
    stall_timeout: Annotated[float, Field(gt=0, le=7 * 86400)] = 1800.0,
) -> RayExecutor:
    """Run per-image stages on Ray actors (one per GPU), on a local Ray instance or a cluster.

    `address`: null starts a local instance, `auto` joins the one running on this machine,
    `HOST:PORT` a cluster's head. `workers` defaults to one per GPU (else one per
    `cpus_per_worker` CPUs); `shard_chunks` (chunks of `batch_size` images per task) defaults to
    about four shards per worker; `connect_timeout` bounds joining a cluster. A lost worker's shard
    goes to the others; the run stops when no worker is left, or when no shard has finished for
    `stall_timeout` seconds while work waits (docs/executors.md)."""
    from .ray_executor import EXTRA, RayExecutor

    try:
        import ray as _  # noqa: F401
    except ImportError:
        raise TracekitError(f"executor 'ray' needs Ray, which is not installed: {EXTRA}") from None
    return RayExecutor(address, workers, gpus_per_worker, cpus_per_worker, shard_chunks, connect_timeout, stall_timeout)
