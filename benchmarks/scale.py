"""Peak memory of `tracekit run` over a small and a large image folder, and the data loader's
speed against the model's forward+backward on the same batches.

    python benchmarks/scale.py                 # 500 and 4,000 JPEGs of 224x224 (a few minutes on 2 cores)
    python benchmarks/scale.py --small 100 --large 800 --size 96
    python benchmarks/scale.py --executor ray --workers 2 --large 800 --size 96   # speed-up over local

Each run is a separate process (`tracekit run` on an imagefolder of seeded JPEGs, a small CNN
with random weights, FGSM and the paper's detector, `labels: predicted`), its peak resident
memory read from `resource.getrusage(RUSAGE_CHILDREN)`. The streaming engine's goal: the large
run's peak within 1.25x of the small one's. Then one process reads the large folder through
the engine's reader and times it against forward+backward passes of the same model on the same
batches: loading should never be the bottleneck.

With `--executor ray --workers K` it instead runs the large folder twice, with the `local`
executor and with `ray` (K actors on a local Ray instance), and prints both times, the
speed-up and whether the two `scores.csv` are byte-identical.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SPEC = """
name: scale
seed: 0
device: cpu
model: {{name: torchscript, path: {model}, input_size: [3, {size}, {size}]}}
data: {{name: imagefolder, root: {root}, labels: predicted}}
attacks:
  - {{name: fgsm, eps: 0.03, backend: native}}
detector: {{name: feature-response, score: {{name: local-entropy}}}}
evaluation: {{bootstrap: 0}}
batch_size: {batch}
executor: {executor}
"""


def make_model(path: Path, size: int) -> None:
    """A small VGG-style CNN with random weights, saved as TorchScript (3 x size x size input)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
        nn.Flatten(), nn.Linear(32 * 16, 10),
    ).eval()  # fmt: skip
    torch.jit.save(torch.jit.trace(module, torch.rand(1, 3, size, size)), str(path))


def make_images(root: Path, n: int, size: int) -> None:
    """`n` seeded smooth JPEGs in ten class folders."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"class{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        low = rng.random((8, 8, 3))
        image = Image.fromarray((low * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
        image.save(folder / f"img{i:06d}.jpg", quality=90)


LOCAL = "{name: local}"


def peak_of_run(
    work: Path, n: int, model: Path, batch: int, size: int, executor: str = LOCAL, tag: str = ""
) -> tuple[float, float]:
    """(peak resident MiB of the driver, seconds) of one `tracekit run` over the first `n` images."""
    root = work / f"images-{n}"
    spec = work / f"spec-{n}{tag}.yaml"
    spec.write_text(SPEC.format(model=model, root=root, batch=batch, size=size, executor=executor))
    script = (
        "import resource, sys, time, tracekit\n"
        "t = time.perf_counter()\n"
        f"tracekit.run({str(spec)!r}, out={str(work / f'run-{n}{tag}')!r}, use_cache=False)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, time.perf_counter() - t)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    peak, seconds = done.stdout.split()[-2:]
    return float(peak), float(seconds)


def loader_vs_model(work: Path, n: int, model_path: Path, batch: int, size: int) -> tuple[float, float]:
    """Images/s of the engine's reader alone and of forward+backward on the same batches."""
    import tracekit
    from tracekit.engine.reading import Reader, chunks, default_workers

    model = tracekit.create("model", "torchscript", path=str(model_path), input_size=[3, size, size])
    dataset = tracekit.create("dataset", "imagefolder", root=str(work / f"images-{n}"))
    reader = Reader(dataset, model, default_workers())
    start = time.perf_counter()
    batches = [b.images for b in reader.read(chunks(np.arange(len(reader)), batch))]
    loading = n / (time.perf_counter() - start)
    start = time.perf_counter()
    for images in batches:
        x = images.clone().requires_grad_(True)
        model.module(x).max(1).values.sum().backward()
    compute = n / (time.perf_counter() - start)
    return loading, compute


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--large", type=int, default=4000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--executor", choices=("local", "ray"), default="local")
    parser.add_argument("--workers", type=int, default=2, help="Ray actors (with --executor ray)")
    args = parser.parse_args()
    if args.executor == "ray":
        ray_speedup(args)
        return
    with tempfile.TemporaryDirectory(prefix="tracekit-scale-") as tmp:
        work = Path(tmp)
        model = work / "model.pt"
        make_model(model, args.size)
        for n in (args.small, args.large):
            make_images(work / f"images-{n}", n, args.size)
        small = peak_of_run(work, args.small, model, args.batch, args.size)
        large = peak_of_run(work, args.large, model, args.batch, args.size)
        loading, compute = loader_vs_model(work, args.large, model, args.batch, args.size)
    print(json.dumps({"size": args.size, "batch_size": args.batch}))
    print(f"peak RSS, {args.small:>6} images: {small[0]:8.0f} MiB ({small[1]:.0f} s)")
    print(f"peak RSS, {args.large:>6} images: {large[0]:8.0f} MiB ({large[1]:.0f} s)")
    print(
        f"ratio large / small: {large[0] / small[0]:.2f} (goal <= 1.25; the images alone would be "
        f"{args.large / args.small:.1f}x)"
    )
    print(
        f"data loader: {loading:,.0f} img/s; model forward+backward: {compute:,.0f} img/s; "
        f"loader / model = {loading / compute:.1f}x"
    )


def ray_speedup(args: argparse.Namespace) -> None:
    """The large folder with the local executor, then with `args.workers` Ray actors."""
    with tempfile.TemporaryDirectory(prefix="tracekit-scale-") as tmp:
        work = Path(tmp)
        model = work / "model.pt"
        make_model(model, args.size)
        make_images(work / f"images-{args.large}", args.large, args.size)
        ray = f"{{name: ray, workers: {args.workers}}}"
        local = peak_of_run(work, args.large, model, args.batch, args.size)
        remote = peak_of_run(work, args.large, model, args.batch, args.size, ray, "-ray")
        same = (work / f"run-{args.large}" / "scores.csv").read_bytes() == (
            work / f"run-{args.large}-ray" / "scores.csv"
        ).read_bytes()
    print(json.dumps({"images": args.large, "size": args.size, "batch_size": args.batch, "workers": args.workers}))
    print(f"local executor: {local[1]:7.1f} s")
    print(f"ray, {args.workers} workers: {remote[1]:7.1f} s (including starting Ray and the actors)")
    print(f"speed-up ray / local: {local[1] / remote[1]:.2f}x; scores.csv identical: {same}")


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
