"""How often can ANY attacker evade feature squeezing on the digit scenes at L-inf 0.1, against how
often `adaptive` does: the strength check of the adaptive attack where it stays below 90%.

Feature squeezing's score is the largest L1 distance between the softmax of the input and of a
squeezed input. On the scenes (gray, so the paper's 1-bit squeezer: `round(x)`), an L-inf `eps`
attacker can change the squeezed image only at the pixels within `eps` of 0.5, a few dozen of
2304. An adversarial `x` is misclassified, so its true class has probability `p_t(x) <= 0.5`, and
`|p(x) - p(squeezed x)|_1 >= 2 (p_t(squeezed x) - 0.5)`: it can evade a threshold `t` only if its
squeezed image's true-class probability can be brought to `0.5 + t / 2` or below. The script
searches each image's reachable squeezed images directly (PGD on the flippable pixels relaxed to
[0, 1], rounded at three cuts every step; 200 steps) for the lowest `p_t`: the share of images that
pass is the **ceiling** of any attack's evasion rate at that threshold (as good as this search; a
better search could only raise it a little).

Thresholds: the clean test scenes' score quantiles at the given false-positive rates (`--fprs`),
from all of the split's scenes. Against each: plain PGD's evasion, `adaptive`'s (the parameters of
`examples/adaptive.yaml`) and the ceiling, on the first `--limit` correctly classified scenes.

    python benchmarks/squeezing_ceiling.py --limit 100
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import tracekit
from tracekit.attacks.native import NativePGD
from tracekit.detectors.feature_squeezing import reduce_bit_depth

EPS, STEP, ITERS = 0.1, 0.01, 50


def lowest_squeezed_true(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 200) -> torch.Tensor:
    """Per image, the lowest true-class probability found for a 1-bit squeezed image an L-inf
    `EPS` attacker can reach (only pixels within `EPS` of 0.5 can change side)."""
    fixed, free = reduce_bit_depth(x, 1), ((x - 0.5).abs() < EPS).float()
    z = fixed.clone().requires_grad_(True)
    lowest = torch.ones(len(x))
    for _ in range(steps):
        loss = F.cross_entropy(model(fixed * (1 - free) + z * free), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, z)
        with torch.no_grad():
            z += 0.05 * grad.sign() * free
            z.clamp_(0, 1)
            for cut in (0.3, 0.5, 0.7):
                reached = fixed * (1 - free) + (z > cut).float() * free
                p = model(reached).softmax(1).gather(1, y[:, None]).squeeze(1)
                lowest = torch.minimum(lowest, p)
    return lowest


def evasion(model, detector, adversarial, y, threshold) -> float:
    with torch.no_grad():
        wrong = model(adversarial).argmax(1) != y
        return (wrong & (detector.score(model, adversarial) <= threshold)).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=100, help="correctly classified scenes attacked (default 100)")
    parser.add_argument("--fprs", type=float, nargs="+", default=[0.05, 0.07, 0.10])
    args = parser.parse_args()
    loaded = tracekit.create("model", "digit-scenes-cnn")
    model = loaded.module.eval()
    dataset = tracekit.create("dataset", "digit-scenes", split="test")
    _, images, labels = zip(*dataset.samples(loaded))
    x, y = torch.stack(images), torch.tensor(labels)
    detector = tracekit.create("detector", "feature-squeezing")
    with torch.no_grad():
        clean = torch.cat([detector.score(model, part) for part in x.split(128)]).double()
        right = torch.cat([model(part).argmax(1) for part in x.split(128)]) == y
    x, y = x[right][: args.limit], y[right][: args.limit]
    plain = NativePGD("inf", EPS, STEP, ITERS).generate(model, x, y)
    start = time.perf_counter()
    ceiling = lowest_squeezed_true(model, x, y)
    took = time.perf_counter() - start
    print(f"{len(x)} scenes attacked, {len(clean)} clean scenes for the thresholds; search {took:.0f} s")
    print("| FPR | threshold | ceiling | plain PGD | adaptive | adaptive s |\n|---|---|---|---|---|---|")
    for fpr in args.fprs:
        threshold = torch.quantile(clean, 1 - fpr).item()
        attack = tracekit.create("attack", "adaptive", eps=EPS, eps_step=STEP, max_iter=ITERS, restarts=3)
        attack.bind(detector, threshold)
        start = time.perf_counter()
        ours = attack.generate(model, x, y)
        took = time.perf_counter() - start
        bound = (ceiling <= 0.5 + threshold / 2).float().mean().item()
        rates = [evasion(model, detector, a, y, threshold) for a in (plain, ours)]
        print(f"| {fpr:.2f} | {threshold:.3f} | {bound:.2f} | {rates[0]:.2f} | {rates[1]:.2f} | {took:.0f} |")


if __name__ == "__main__":
    main()
