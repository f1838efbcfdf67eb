"""Throughput of every stage of the paper's protocol on synthetic images, each as a ratio to the
model's own bare passes on the same batch, and the projected hours of the paper's Table 1.

    python benchmarks/throughput.py                                   # VGG19 (random weights), 32x32, CPU
    python benchmarks/throughput.py --device cuda --size 224 --n 256 --batch 64 --pixel-iters 100 --boundary-steps 100
    python benchmarks/throughput.py --model digits-cnn --n 512 --batch 128 --only detector fgsm   # a few stages

Model: torchvision's VGG19 with random weights by default (the paper's architecture; weights do
not change the cost), 1000 classes, attacking its own predictions on seeded uniform images.
Per stage it prints images/s and the ratio of its time to one bare forward pass (clean
prediction, the search attacks' evaluations) or one forward+backward pass (the detector, the
gradient attacks) over the same images at the same batch size, all measured in this invocation.
The search attacks run with `--pixel-iters` generations and `--boundary-steps` steps (small by
default, for a CPU); their cost per image scales with the number of model evaluations, printed.

The projection: the paper's workload (50,014 images for FGSM, the gradient attack, one-pixel
and DeepFool; 4,013 for Boundary) times each stage's measured seconds per image, scaled for the
searches to 100 generations (one-pixel, at the evaluations measured per generation) and 100
Boundary steps, plus the detector on every clean and adversarial image. It is a projection from
a short measurement on this device, not a measured run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from timing import median_seconds, paired_seconds  # benchmarks/timing.py
from torch import nn

import tracekit
from tracekit.engine.attack_cache import batch_seed
from tracekit.engine.predicting import probabilities

PAPER_IMAGES = {"fgsm": 50_014, "gradient": 50_014, "pixel": 50_014, "deepfool": 50_014, "boundary": 4_013}
PAPER_GPU_DAYS = {"fgsm": 3, "gradient": 15, "pixel": 32, "deepfool": 42, "boundary": 17}  # TitanX, the paper's Table 1
PAPER_SEARCH = {"pixel": 100, "boundary": 100}  # generations / steps projected to
STAGES = ["prediction", "detector", "fgsm", "gradient", "pgd-10", "deepfool", "pixel", "boundary"]


def build(name: str, size: int, classes: int, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    if name == "digits-cnn":
        return tracekit.create("model", "digits-cnn").module.to(device).eval()
    from torchvision import models

    return getattr(models, name)(weights=None, num_classes=classes).to(device).eval()


def in_batches(
    fn: Callable[[torch.Tensor, torch.Tensor], object], x: torch.Tensor, y: torch.Tensor, batch: int
) -> Callable[[], None]:
    def run() -> None:
        for start in range(0, len(x), batch):
            fn(x[start : start + batch], y[start : start + batch])

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg19", help="vgg19, resnet18, ... (torchvision) or digits-cnn")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--n", type=int, default=16, help="images per stage")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--pixel-iters", type=int, default=2)
    parser.add_argument("--boundary-steps", type=int, default=5)
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="timed runs per stage (median), each paired with a run of its floor, after a warm-up",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--only", nargs="+", choices=STAGES, default=STAGES, help="these stages only (the projection needs all)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = build(args.model, args.size, args.classes, device)
    channels = 1 if args.model == "digits-cnn" else 3
    size = 32 if args.model == "digits-cnn" else args.size
    x = torch.rand(args.n, channels, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        y = model(x).argmax(1)
    seeds = torch.tensor([batch_seed(0, [f"image-{i}"]) for i in range(args.n)], device=device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(
        f"model {args.model} (random weights)  images {args.n}x{channels}x{size}x{size}  "
        f"batch {args.batch}  device {name}"
    )

    def forward(xb: torch.Tensor, yb: torch.Tensor) -> None:
        with torch.no_grad():
            model(xb)

    def forward_backward(xb: torch.Tensor, yb: torch.Tensor) -> None:
        xb = xb.detach().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(model(xb), yb, reduction="sum"), xb)

    forward_batches = in_batches(forward, x, y, args.batch)
    fwd_bwd_batches = in_batches(forward_backward, x, y, args.batch)
    fwd = median_seconds(forward_batches, args.repeats, device)
    fwd_bwd = median_seconds(fwd_bwd_batches, args.repeats, device)
    floors = {"forward": forward_batches, "fwd+bwd": fwd_bwd_batches}
    per_image = {}  # stage -> seconds per image
    detector = tracekit.create("detector", "feature-response")
    rows: list[tuple[str, float, str, float, str]] = []

    def row(stage: str, seconds: float, ratio: float, floor_name: str, note: str = "") -> None:
        per_image[stage] = seconds / args.n
        rows.append((stage, args.n / seconds, floor_name, ratio, note))

    def paired(stage: str, fn: Callable[[torch.Tensor, torch.Tensor], object], floor_name: str) -> None:
        """A stage timed alternately with its floor: its ratio is the median of the pairs'."""
        row(
            stage,
            *paired_seconds(in_batches(fn, x, y, args.batch), floors[floor_name], args.repeats, device),
            floor_name,
        )

    row("forward (floor)", fwd, 1.0, "forward")
    row("forward+backward (floor)", fwd_bwd, 1.0, "fwd+bwd")
    if "prediction" in args.only:
        paired("clean prediction", lambda xb, yb: probabilities(model, xb, device), "forward")
    if "detector" in args.only:
        paired("paper's detector", lambda xb, yb: detector.score(model, xb), "fwd+bwd")
    gradient_attacks = {
        "fgsm": {"eps": 0.03},
        "gradient": {"eps": 2.0},
        "pgd-10": {"eps": 0.03, "eps_step": 0.01, "max_iter": 10},
        "deepfool": {"max_iter": 20},
    }
    for stage, params in gradient_attacks.items():
        if stage not in args.only:
            continue
        attack_name = "pgd" if stage == "pgd-10" else stage
        for backend in ("art", "native"):
            attack = tracekit.create("attack", attack_name, **params, backend=backend)
            paired(f"{stage} ({backend})", lambda xb, yb, a=attack: a.generate(model, xb, yb), "fwd+bwd")
    searches = {"pixel": {"pixels": 1, "max_iter": args.pixel_iters}, "boundary": {"max_iter": args.boundary_steps}}
    for stage, params in searches.items():
        if stage not in args.only:
            continue
        native = tracekit.create("attack", stage, **params, backend="native")
        start = time.perf_counter()
        for begin in range(0, args.n, args.batch):
            native.generate_seeded(
                model, x[begin : begin + args.batch], y[begin : begin + args.batch], seeds[begin : begin + args.batch]
            )
        seconds = time.perf_counter() - start
        evals = native.evaluations / args.n
        forward_now = median_seconds(forward_batches, args.repeats, device)  # the floor, timed next to the search
        row(f"{stage} (native)", seconds, seconds / (forward_now * evals), "its evals", f"{evals:,.0f} evals/img")
        art = tracekit.create("attack", stage, **params)
        start = time.perf_counter()
        for i in range(min(args.n, 4)):  # ART image by image: a few suffice
            art.generate(model, x[i : i + 1], y[i : i + 1])
        art_seconds = (time.perf_counter() - start) * args.n / min(args.n, 4)
        row(
            f"{stage} (art)",
            art_seconds,
            art_seconds / (forward_now * evals),
            "native's evals",
            "extrapolated from 4 images",
        )

    print(f"{'stage':<26} {'images/s':>10} {'x floor':>8}  {'floor':<15} note")
    for stage, rate, floor_name, ratio, note in rows:
        print(f"{stage:<26} {rate:>10.2f} {ratio:>7.2f}x  {floor_name:<15} {note}")

    if set(args.only) != set(STAGES):
        return
    print()
    print("projected hours of the paper's Table 1 on this device (native backends; the paper: TitanX GPU-days)")
    total = 0.0
    for attack, n in PAPER_IMAGES.items():
        key = {
            "fgsm": "fgsm (native)",
            "gradient": "gradient (native)",
            "deepfool": "deepfool (native)",
            "pixel": "pixel (native)",
            "boundary": "boundary (native)",
        }[attack]
        seconds = per_image[key]
        if attack == "pixel":
            seconds *= (1 + PAPER_SEARCH["pixel"]) / (1 + args.pixel_iters)  # the initial population + generations
        if attack == "boundary":
            seconds *= PAPER_SEARCH["boundary"] / args.boundary_steps
        hours = n * (seconds + 2 * per_image["paper's detector"]) / 3600  # attack, then score clean and adversarial
        total += hours
        print(f"  {attack:<9} {n:>6} images  {hours:>10.1f} h   (paper: {PAPER_GPU_DAYS[attack]} GPU-days)")
    print(f"  {'total':<9} {'':>13} {total:>10.1f} h   (paper: {sum(PAPER_GPU_DAYS.values())} GPU-days)")


if __name__ == "__main__":
    main()
