"""ART attacks against tracekit's native torch ones, side by side on the same model and images.

For each attack (fgsm, gradient, pgd, deepfool; built with `tracekit.create` and `backend: art` or
`backend: native`, parameters in `ATTACKS`) it prints ART's seconds, the native seconds, their
ratio, and the native time over the *floor*: one bare forward + backward pass of the model over the
same images (cross-entropy, gradient with respect to the input only). Floor, ART and native take
turns: one warm-up round, then the median of `--repeats` rounds, each over all `--n` images in
batches of `--batch-size`; ART gets that batch size as its own `batch_size`, and its classifier is
built once, in the warm-up. It also prints each backend's success rate and the largest pixel
difference between their adversarials.

    python benchmarks/attacks.py --device cpu --model digits-cnn --n 256 --batch-size 128
    python benchmarks/attacks.py --device cuda --model resnet18 --n 512 --batch-size 128
    python benchmarks/attacks.py --only pixel boundary --n 40   # the search attacks: ART against native

The search attacks (`pixel`: one scan pixel, `scale` 4, `max_iter` 10; `boundary`: 100 steps;
examples/paper.yaml's parameters) have another floor: the forward passes of as many candidate
images as the native search evaluated, at the fastest batch size for the model (tried: 32 to
4096), timed after each of `--repeats` native runs (nat/floor: the median of the pairs'
ratios). ART runs once, image by image (as the engine runs it, each seeded from its image),
native on the whole batch; each backend's model evaluations per image are printed beside the
times, and for boundary the median L2 of the adversarials and in how many images native's is
the smaller.

Models: `digits-cnn` (the embedded model on correctly classified digits test images), `tiny`
(tracekit.testing's TinyCNN, 3x32x32, random images) and `resnet18` (torchvision, randomly
initialised, 10 classes, 3x64x64 random images); the last two attack the model's own predictions.
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import tracekit
from tracekit.protocols import Attack

ATTACKS: dict[str, dict[str, object]] = {
    "fgsm": {"eps": 0.1},
    "gradient": {"eps": 1.0},
    "pgd": {"norm": "inf", "eps": 0.1, "eps_step": 0.01, "max_iter": 10},
    "deepfool": {"max_iter": 50, "overshoot": 0.02, "nb_grads": 10},
}


def attacks(batch_size: int) -> dict[str, tuple[Attack, Attack]]:
    """(ART, native) pairs with the same parameters, built as a spec builds them."""
    return {
        name: (
            tracekit.create("attack", name, **params, backend="art", batch_size=batch_size),
            tracekit.create("attack", name, **params, backend="native"),
        )
        for name, params in ATTACKS.items()
    }


def load(name: str, n: int, device: torch.device) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The model (eval mode, on `device`), `n` images it classifies as `labels`, and those labels."""
    gen = torch.Generator().manual_seed(0)
    if name == "digits-cnn":
        from tracekit.datasets.digits import digits_arrays

        model = tracekit.create("model", "digits-cnn").module
        _, images, labels = digits_arrays("test")
        with torch.no_grad():
            right = model(images).argmax(1) == labels
        images, labels = images[right][:n], labels[right][:n]
    else:
        if name == "tiny":
            from tracekit.testing import TinyCNN

            torch.manual_seed(0)
            model, shape = TinyCNN(channels=3, size=32, num_classes=10), (3, 32, 32)
        else:
            from torchvision.models import resnet18

            torch.manual_seed(0)
            model, shape = resnet18(num_classes=10), (3, 64, 64)
        images = torch.rand((n, *shape), generator=gen)
        with torch.no_grad():
            labels = model.eval()(images).argmax(1)
    if len(images) < n:
        raise SystemExit(f"only {len(images)} images available for model {name}; use --n {len(images)} or less")
    return model.eval().to(device), images.to(device), labels.to(device)


def floor_pass(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One bare forward + backward pass: the cross-entropy's gradient with respect to the input only."""
    x = images.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), labels, reduction="sum"), x)
    return grad


def measure(
    runs: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]],
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    repeats: int,
) -> dict[str, tuple[float, torch.Tensor]]:
    """Median seconds of each run over all images in batches, and its last output.

    The runs take turns (one warm-up round, then `repeats` timed rounds), so that a machine's
    changing load affects them alike.
    """
    sync = torch.cuda.synchronize if images.is_cuda else (lambda: None)
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    outputs: dict[str, torch.Tensor] = {}
    for i in range(repeats + 1):
        for name, run in runs.items():
            torch.manual_seed(0)
            np.random.seed(0)
            sync()
            start = time.perf_counter()
            outputs[name] = torch.cat(
                [run(images[j : j + batch_size], labels[j : j + batch_size]) for j in range(0, len(images), batch_size)]
            )
            sync()
            if i > 0:
                seconds[name].append(time.perf_counter() - start)
    return {name: (statistics.median(seconds[name]), outputs[name]) for name in runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--n", type=int, default=256, help="images attacked (default 256)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--model", choices=["digits-cnn", "tiny", "resnet18"], default="digits-cnn")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--only", nargs="+", choices=["fgsm", "gradient", "pgd", "deepfool", "pixel", "boundary"], help="attacks to run"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch finds no CUDA device here; use --device cpu")
    device = torch.device(args.device)
    model, images, labels = load(args.model, args.n, device)

    print(
        f"model {args.model}  device {device}  images {len(images)}x{tuple(images.shape[1:])}  "
        f"batch {args.batch_size}  threads {torch.get_num_threads()}  median of {args.repeats} after a warm-up"
    )
    print("floor: one forward+backward pass (input gradient only) over the same images, timed alongside each attack")
    print_header(f"{'success ART/nat':>16} {'max|diff|':>10}")
    for name, (art, native) in attacks(args.batch_size).items():
        if args.only and name not in args.only:
            continue
        runs = {
            "floor": functools.partial(floor_pass, model),
            "art": functools.partial(art.generate, model),
            "native": functools.partial(native.generate, model),
        }
        result = measure(runs, images, labels, args.batch_size, args.repeats)
        (floor, _), (art_s, art_adv), (nat_s, nat_adv) = result["floor"], result["art"], result["native"]
        with torch.no_grad():
            success = [float((model(adv).argmax(1) != labels).float().mean()) for adv in (art_adv, nat_adv)]
        diff = float((art_adv - nat_adv).abs().max())
        print(
            f"{name:<9} {floor:>8.4f} {art_s:>9.4f} {nat_s:>9.4f} {art_s / nat_s:>7.1f}x {nat_s / floor:>8.2f}x "
            f"{success[0]:>7.1%} / {success[1]:>6.1%} {diff:>10.2e}",
            flush=True,
        )

    searches = [name for name in SEARCHES if not args.only or name in args.only]
    if searches:
        print()
        print(
            "search attacks: floor = forward passes of the native search's candidate images at the fastest batch size, "
            f"timed after each of {args.repeats} native runs (ART: one run)"
        )
        print_header(f"{'evals/img ART/nat':>18} {'success ART/nat':>16}  L2 median ART/nat (nat smaller)")
    for name in searches:
        search_row(name, model, images, labels, args.repeats)


def print_header(rest: str) -> None:
    header = f"{'attack':<9} {'floor s':>8} {'ART s':>9} {'native s':>9} {'ART/nat':>8} {'nat/floor':>9} {rest}"
    print(header)
    print("-" * len(header))


SEARCHES = {"pixel": {"pixels": 1, "scale": 4, "max_iter": 10}, "boundary": {"max_iter": 100}}  # examples/paper.yaml's


class Counting(nn.Module):
    """The model, counting the images it is given."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.images = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += len(x)
        return self.model(x)


def fastest_batch(model: nn.Module, images: torch.Tensor) -> int:
    """The batch size at which forward passes cost least per image (tried: 32 to 4096)."""
    return min((32, 64, 128, 256, 512, 1024, 4096), key=lambda size: forward_seconds(model, images, 4 * size, size))


def forward_seconds(model: nn.Module, images: torch.Tensor, count: int, size: int) -> float:
    """Seconds `count` forward passes take in batches of `size` copies of `images` (one batch
    first, untimed); at least 0.5 s of them, scaled to `count`."""
    sync = torch.cuda.synchronize if images.is_cuda else (lambda: None)
    batch = images.repeat(math.ceil(size / len(images)), 1, 1, 1)[:size]
    with torch.no_grad():
        model(batch)
        sync()
        start, done = time.perf_counter(), 0
        while done < count or time.perf_counter() - start < 0.5:
            model(batch)
            done += size
        sync()
    return (time.perf_counter() - start) / done * count


def search_row(name: str, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, repeats: int) -> None:
    """One search attack, ART image by image against native on the whole batch. Native runs
    `repeats` times, each followed by its floor (its evaluations' forward passes at the fastest
    batch size): the times are medians, and nat/floor is the median of the pairs' ratios."""
    from tracekit.engine.attack_cache import batch_seed
    from tracekit.engine.attacking import seed_everything

    art = tracekit.create("attack", name, **SEARCHES[name])
    counted = Counting(model).eval()
    seeds = [batch_seed(0, [f"image-{i}"]) for i in range(len(images))]
    start = time.perf_counter()
    art_adv = []
    for i, seed in enumerate(seeds):
        seed_everything(seed)
        art_adv.append(art.generate(counted, images[i : i + 1], labels[i : i + 1]))
    art_s, art_evals = time.perf_counter() - start, counted.images
    size = fastest_batch(model, images)
    pairs = []
    for _ in range(repeats):
        native = tracekit.create("attack", name, **SEARCHES[name], backend="native")
        start = time.perf_counter()
        nat_adv = native.generate_seeded(model, images, labels, torch.tensor(seeds, device=images.device))
        nat_s = time.perf_counter() - start
        pairs.append((nat_s, forward_seconds(model, images, native.evaluations, size)))
    nat_s, floor = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
    ratio = statistics.median(p[0] / p[1] for p in pairs)
    adversarials = (torch.cat(art_adv), nat_adv)
    with torch.no_grad():
        success = [float((model(adv).argmax(1) != labels).float().mean()) for adv in adversarials]
    l2 = [(adv - images).flatten(1).norm(dim=1) for adv in adversarials]
    n = len(images)
    print(
        f"{name:<9} {floor:>8.2f} {art_s:>9.2f} {nat_s:>9.2f} {art_s / nat_s:>7.1f}x {ratio:>8.2f}x "
        f"{art_evals / n:>8.0f} / {native.evaluations / n:>6.0f} {success[0]:>7.1%} / {success[1]:>6.1%}  "
        f"{float(l2[0].median()):.3f} / {float(l2[1].median()):.3f} ({int((l2[1] < l2[0]).sum())}/{n})",
        flush=True,
    )


if __name__ == "__main__":
    main()
