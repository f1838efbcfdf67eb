"""How many CPU threads torch computes with: the spec's `threads:`, `--threads`, and `auto`.

torch's default is one intra-op thread per core. On a machine that other work also uses, those
threads wait for busy cores at every parallel region (OpenMP threads spin, then sleep, at each
barrier), and tracekit's many small operations (small models, attacks that query them thousands of
times) run several times slower than on one thread (`benchmarks/threads.py` measures it). So
tracekit chooses the count itself:

- `threads: N` (or `--threads N`, which beats the spec): exactly N.
- `threads: auto` (the default) with `OMP_NUM_THREADS` set in the environment: that number (the
  user asked for it; torch reads the same variable).
- otherwise `auto` = `policy(cores, quota, others, machine)`: the cores this process may run on
  (its CPU affinity), capped by a cgroup CPU quota (`cpu.max`, or cgroup v1's `cfs_quota_us`),
  less the cores other processes are using right now. "Right now" is the kernel's count of
  runnable threads (`/proc/loadavg`'s fourth field), less this process's own, averaged over a
  few samples in about 20 ms: an instantaneous measure, unlike the 1-minute load average, which
  would still count a tracekit run that has just finished (used only where there is no `/proc`).

The choice is made once, when a run starts, and recorded in `spec.resolved.yaml` (`threads:` the
number, `provenance.threads` how it was chosen). Reading the machine costs about 20 ms and
imports nothing heavy; torch is imported only to apply the count (`applied`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import SpecError

AUTO = "auto"
MAX_THREADS = 1024
SAMPLES, INTERVAL = 8, 0.0025  # runnable-thread samples and the pause between them (about 20 ms)
CGROUP = Path("/sys/fs/cgroup")
LOADAVG = Path("/proc/loadavg")  # its fourth field: runnable threads now / all threads


def policy(cores: int, quota: float | None = None, others: float = 0.0, machine: int | None = None) -> int:
    """Threads for `cores` usable cores (affinity), a CPU `quota` in cores (None: no limit), and
    `others` cores' worth of other processes' runnable threads on a `machine` of that many cores
    (None: `cores`).

    Others are taken to be spread evenly over the machine, so `others * cores / machine` of them
    run on our cores; the quota then caps the rest (a quota is a share of time, not of cores: with
    a quota of 2 on a busy 64-core host, 2 threads still find free cores). Never below 1.
    """
    cores = max(1, int(cores))
    machine = max(cores, int(machine or cores))
    usable = cores if quota is None else max(1, min(cores, math.floor(quota + 1e-9)))
    busy = math.floor(max(0.0, others) * cores / machine + 0.5)  # rounded half up
    return max(1, min(usable, cores - busy))


def parse_cpu_max(text: str) -> float | None:
    """Cores allowed by a cgroup v2 `cpu.max` ("QUOTA PERIOD", or "max PERIOD": no limit)."""
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = float(parts[0]), float(parts[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def cpu_quota(root: Path = CGROUP, membership: Path = Path("/proc/self/cgroup")) -> float | None:
    """The tightest CPU quota (in cores) on this process's cgroup (`membership`) and its
    ancestors, v2 or v1, under the cgroup file system at `root`; None when there is none or it
    cannot be read."""
    quotas: list[float] = []
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":  # cgroup v2: cpu.max on the path and every ancestor
            here = root / path.lstrip("/")
            for directory in (here, *here.parents):
                if directory != root and root not in directory.parents:
                    break
                quota = _read_quota(directory / "cpu.max")
                if quota is not None:
                    quotas.append(quota)
        elif "cpu" in controllers.split(","):  # cgroup v1: cfs_quota_us / cfs_period_us
            for mount in (root / "cpu", root / "cpu,cpuacct"):
                for directory in (mount / path.lstrip("/"), mount):
                    quota = _read_quota_v1(directory)
                    if quota is not None:
                        quotas.append(quota)
    quota = _read_quota(root / "cpu.max")  # a container's own cgroup, mounted at the root
    if quota is not None:
        quotas.append(quota)
    return min(quotas) if quotas else None


def _read_quota(path: Path) -> float | None:
    try:
        return parse_cpu_max(path.read_text())
    except OSError:
        return None


def _read_quota_v1(directory: Path) -> float | None:
    try:
        quota = float((directory / "cpu.cfs_quota_us").read_text())
        period = float((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def others_running(samples: int = SAMPLES, interval: float = INTERVAL) -> float:
    """Other processes' runnable threads (cores' worth of demand), averaged over `samples` reads
    of `/proc/loadavg` `interval` seconds apart; without `/proc`, the 1-minute load average."""
    seen: list[int] = []
    for i in range(samples):
        try:
            running = int(LOADAVG.read_text().split()[3].partition("/")[0])
        except (OSError, ValueError, IndexError):
            break
        seen.append(max(0, running - _own_running()))
        if i + 1 < samples:
            time.sleep(interval)
    if seen:
        return sum(seen) / len(seen)
    try:
        return max(0.0, os.getloadavg()[0])
    except (OSError, AttributeError):
        return 0.0


def _own_running() -> int:
    """This process's threads that are running or runnable now (at least the one asking)."""
    count = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 1
    for task in tasks:
        try:
            stat = Path(f"/proc/self/task/{task}/stat").read_text()
        except OSError:
            continue
        if stat.rpartition(")")[2].split()[:1] == ["R"]:
            count += 1
    return max(1, count)


def omp_num_threads() -> int | None:
    """`OMP_NUM_THREADS` when the environment sets it to a positive number (else None)."""
    raw = os.environ.get("OMP_NUM_THREADS", "").strip()
    try:
        value = int(raw.split(",")[0])  # OpenMP also allows a list for nested levels: the first is ours
    except ValueError:
        return None
    return min(value, MAX_THREADS) if value >= 1 else None


@dataclass(frozen=True)
class Choice:
    """The thread count and how it was chosen: `by` is `--threads`, `spec`, `OMP_NUM_THREADS` or
    `auto` (then with what the machine showed: usable `cores`, CPU `quota`, `others`' load, the
    `machine`'s cores)."""

    threads: int
    by: str
    cores: int | None = None
    quota: float | None = None
    others: float | None = None
    machine: int | None = None

    def record(self) -> dict[str, Any]:
        """What `provenance.threads` records (the fields that apply)."""
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(self).items() if v is not None}


def measure() -> Choice:
    """`auto` on this machine, now."""
    cores, quota, others, machine = usable_cores(), cpu_quota(), others_running(), os.cpu_count() or 1
    return Choice(policy(cores, quota, others, machine), AUTO, cores, quota, others, machine)


def choose(setting: int | str = AUTO, override: int | None = None) -> Choice:
    """The count for a spec's `threads:` (`setting`) and a `--threads` `override` (wins)."""
    if override is not None:
        if isinstance(override, bool) or not isinstance(override, int) or not 1 <= override <= MAX_THREADS:
            raise SpecError(f"--threads: a number of CPU threads from 1 to {MAX_THREADS}, got {override!r}")
        return Choice(override, "--threads")
    if setting != AUTO:
        return Choice(int(setting), "spec")
    omp = omp_num_threads()
    if omp is not None:
        return Choice(omp, "OMP_NUM_THREADS")
    return measure()


@contextmanager
def applied(threads: int) -> Iterator[None]:
    """torch computes with `threads` intra-op threads inside; the previous count is restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
