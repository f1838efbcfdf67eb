"""torch's CPU threads: tracekit's `threads: auto` against fixed counts, on a quiet and on a loaded
machine, in one invocation (issue 15's goals: on a loaded machine auto within 1.2x of the best
fixed count; on a quiet one within 1.1x of torch's default, one thread per core).

Two phases: *quiet* (nothing started by the script) and *loaded* (while `--load` CPU-bound
processes run: a Python busy loop each, or with `--load-kind matmul` a one-thread torch matmul
loop; started before the phase and stopped after it). In each phase two workloads, each with
every setting: fixed counts 1, 2 and the machine's cores (torch's default), and `auto`:

- run: `tracekit.run(examples/paper.yaml)` on the CPU with every attack cached (one untimed
  warm-up run first fills the attack cache), timed around the call: the whole run, report
  included, and for `auto` its reading of the machine (about 20 ms);
- attack: the native boundary attack (`--attack pixel`: the native one-pixel attack), paper
  parameters, on `--n` correctly classified digits, built with `tracekit.create`; for `auto` the
  count is chosen (`tracekit.threads.choose`) inside the timed call.

Settings take turns, repeat after repeat, and each cell is the median of `--repeats`, so that a
drifting load affects them alike. OMP_NUM_THREADS is removed from the environment first (it
would be auto's answer). Prints a table of seconds and the two ratios.

    python benchmarks/threads.py                  # the measurement (a few minutes on 2 cores once cached)
    python benchmarks/threads.py --quick          # seconds: checks that the script works, measures nothing
    python benchmarks/threads.py --load 2 --load-kind matmul --repeats 5 --json threads.json
"""

from __future__ import annotations

import os

OMP = os.environ.pop("OMP_NUM_THREADS", None)  # before torch reads it: auto and torch's default must be measured

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

import tracekit  # noqa: E402
from tracekit.threads import applied, choose  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEARCHES = {"boundary": {"max_iter": 100}, "pixel": {"pixels": 1, "scale": 4, "max_iter": 10}}  # examples/paper.yaml's
LOADS = {
    "busy": "while True: pass",
    "matmul": "import torch\ntorch.set_num_threads(1)\na = torch.randn(512, 512)\nwhile True: a @ a",
}
GOALS = {"loaded": 1.2, "quiet": 1.1}


@contextmanager
def load(count: int, kind: str) -> Iterator[None]:
    """`count` CPU-bound processes of `kind` while inside; stopped (by their ids) after."""
    procs = [
        subprocess.Popen([sys.executable, "-c", LOADS[kind]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(count)
    ]
    try:
        time.sleep(1.0)  # started (torch imported, for matmul) and busy before the first timing
        for proc in procs:
            if proc.poll() is not None:
                raise SystemExit(f"the load process {proc.pid} ended with {proc.returncode}")
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_workload(spec: Path, overrides: list[str], scratch: Path) -> Callable[[int | None], tuple[float, int]]:
    """A run of the cached spec with `threads` (None: auto); returns (seconds, threads used)."""
    counter = iter(range(10**9))

    def timed(threads: int | None) -> tuple[float, int]:
        loaded = tracekit.load_spec(spec, overrides)
        start = time.perf_counter()
        result = tracekit.run(loaded, out=scratch / f"run-{next(counter)}", threads=threads)
        seconds = time.perf_counter() - start
        return seconds, int(result.spec.threads)

    return timed


def attack_workload(name: str, n: int, max_iter: int | None) -> Callable[[int | None], tuple[float, int]]:
    """The native search attack `name` on `n` correctly classified test digits, seeded per image
    as the engine seeds it; returns (seconds, threads used)."""
    from tracekit.datasets.digits import digits_arrays
    from tracekit.engine.attack_cache import batch_seed

    model = tracekit.create("model", "digits-cnn").module.eval()
    _, images, labels = digits_arrays("test")
    with torch.no_grad():
        right = model(images).argmax(1) == labels
    images, labels = images[right][:n], labels[right][:n]
    params = {**SEARCHES[name], **({"max_iter": max_iter} if max_iter else {})}
    attack = tracekit.create("attack", name, **params, backend="native")
    seeds = torch.tensor([batch_seed(0, [f"image-{i}"]) for i in range(len(images))])

    def timed(threads: int | None) -> tuple[float, int]:
        start = time.perf_counter()
        count = choose(override=threads).threads
        with applied(count):
            attack.generate_seeded(model, images, labels, seeds)
        return time.perf_counter() - start, count

    return timed


def measure(
    workloads: dict[str, Callable[[int | None], tuple[float, int]]], settings: list[int | None], repeats: int
) -> dict[str, dict[str, tuple[float, list[int]]]]:
    """{workload: {setting: (median seconds, threads used per repeat)}}; settings take turns."""
    seconds: dict[str, dict[str, list[float]]] = {w: {label(s): [] for s in settings} for w in workloads}
    used: dict[str, dict[str, list[int]]] = {w: {label(s): [] for s in settings} for w in workloads}
    for _ in range(repeats):
        for workload, timed in workloads.items():
            for setting in settings:
                s, threads = timed(setting)
                seconds[workload][label(setting)].append(s)
                used[workload][label(setting)].append(threads)
    return {w: {k: (statistics.median(v), used[w][k]) for k, v in per.items()} for w, per in seconds.items()}


def label(setting: int | None) -> str:
    return "auto" if setting is None else str(setting)


def plural(threads: str) -> str:
    return f"{threads} thread" + ("" if threads == "1" else "s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--spec", type=Path, default=ROOT / "examples" / "paper.yaml", help="the spec of the run workload"
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="spec overrides"
    )
    parser.add_argument("--attack", choices=sorted(SEARCHES), default="boundary", help="the attack workload")
    parser.add_argument("--n", type=int, default=20, help="digits the attack workload attacks")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (median)")
    parser.add_argument("--load", type=int, default=1, help="CPU-bound processes in the loaded phase")
    parser.add_argument("--load-kind", choices=sorted(LOADS), default="busy")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--quick", action="store_true", help="tiny settings: checks the script works, measures nothing")
    args = parser.parse_args()
    warnings.filterwarnings("once")  # a run's warnings (e.g. small calibration sets) once, not per repeat

    cores = torch.get_num_threads()  # torch's default (OMP_NUM_THREADS removed above)
    overrides = ["device=cpu", *args.overrides]
    spec, n, max_iter, repeats = args.spec, args.n, None, args.repeats
    if args.quick:
        spec, n, max_iter, repeats = ROOT / "examples" / "quickstart.yaml", 4, 5, 1
        overrides += ["data.limit=30", "evaluation.bootstrap=20"]
    settings: list[int | None] = [*sorted({1, 2, cores}), None]
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, {cores} torch threads by default; "
        f"cpu affinity {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'}; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        + (f"; OMP_NUM_THREADS={OMP} removed" if OMP is not None else ""),
        flush=True,
    )
    print(
        f"run: {spec.relative_to(ROOT) if spec.is_relative_to(ROOT) else spec} {' '.join(overrides)}; "
        f"attack: native {args.attack} on {n} digits; median of {repeats}; loaded: {args.load} x {args.load_kind}",
        flush=True,
    )

    results: dict[str, dict[str, dict[str, tuple[float, list[int]]]]] = {}
    with tempfile.TemporaryDirectory(prefix="tracekit-threads-") as tmp:
        scratch = Path(tmp)
        workloads = {"run": run_workload(spec, overrides, scratch), "attack": attack_workload(args.attack, n, max_iter)}
        start = time.perf_counter()
        for workload in workloads.values():  # fills the attack cache; first-call costs (imports) out of the timings
            workload(1)
        print(f"warm-up (fills the attack cache): {time.perf_counter() - start:.1f} s", flush=True)
        results["quiet"] = measure(workloads, settings, repeats)
        with load(args.load, args.load_kind):
            results["loaded"] = measure(workloads, settings, repeats)

    labels = [label(s) for s in settings]
    print()
    print(f"{'seconds':<16}" + "".join(f"{'threads=' + k if k != 'auto' else 'auto (chose)':>16}" for k in labels))
    for phase, per_workload in results.items():
        for workload, cells in per_workload.items():
            row = f"{workload + ', ' + phase:<16}"
            for k in labels:
                seconds, used = cells[k]
                chose = f" ({'/'.join(map(str, sorted(set(used))))})" if k == "auto" else ""
                row += f"{f'{seconds:.2f}{chose}':>16}"
            print(row)
    print()
    for workload in ("run", "attack"):
        loaded = results["loaded"][workload]
        best = min((k for k in labels if k != "auto"), key=lambda k: loaded[k][0])
        ratio = loaded["auto"][0] / loaded[best][0]
        ok = "met" if ratio <= GOALS["loaded"] else "MISSED"
        print(
            f"{workload}: loaded, auto / best fixed ({plural(best)}): {ratio:.2f}x (goal <= {GOALS['loaded']}x: {ok})"
        )
        quiet = results["quiet"][workload]
        ratio = quiet["auto"][0] / quiet[str(cores)][0]
        ok = "met" if ratio <= GOALS["quiet"] else "MISSED"
        print(
            f"{workload}: quiet, auto / torch's default ({plural(str(cores))}): "
            f"{ratio:.2f}x (goal <= {GOALS['quiet']}x: {ok})"
        )
    if args.quick:
        print("(--quick: tiny workloads, one repeat; the ratios mean nothing)")
    if args.json:
        args.json.write_text(json.dumps({"cores": cores, "settings": labels, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
