"""Time `tracekit.scores.local_entropy_map` against scikit-image's rank entropy.

Both run on the same random 8-bit images (scikit-image one image at a time, as it must); the
maps are checked to agree before anything is timed. Prints one row per image size:

    python benchmarks/entropy.py [--n N] [--device cpu|cuda] [--footprint 3] [--repeats 5] [--threads T]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from skimage.filters.rank import entropy as skimage_entropy
from skimage.morphology import footprint_rectangle

from tracekit.scores import local_entropy_map

from timing import median_seconds  # benchmarks/timing.py

# (side, number of images) timed by default
CASES = ((32, 256), (224, 32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, help="images per size (default: 256 at 32x32, 32 at 224x224)")
    parser.add_argument("--device", default="cpu", help="torch device for tracekit (default: cpu)")
    parser.add_argument("--footprint", type=int, default=3, help="odd window side (default: 3)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs; the median is shown (default: 5)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    footprint = footprint_rectangle((args.footprint, args.footprint))
    rng = np.random.default_rng(0)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, tracekit on {device}")
    print(f"footprint {args.footprint}x{args.footprint}, median of {args.repeats} runs after a warm-up")
    header = f"{'size':>9} {'N':>5} {'skimage s':>10} {'tracekit s':>11} {'speedup':>8} {'max |diff|':>11}"
    print(header)
    print("-" * len(header))
    for side, default_n in CASES:
        n = args.n or default_n
        images = rng.integers(0, 256, size=(n, side, side), dtype=np.uint8)
        tensor = torch.from_numpy(images).to(device)
        expected = np.stack([skimage_entropy(image, footprint) for image in images])
        diff = float(np.abs(local_entropy_map(tensor, args.footprint).cpu().numpy() - expected).max())
        if diff > 1e-6:
            raise SystemExit(f"{side}x{side}: tracekit and scikit-image disagree by {diff:.3g}")
        reference = median_seconds(
            lambda: [skimage_entropy(image, footprint) for image in images], args.repeats, torch.device("cpu")
        )
        ours = median_seconds(lambda: local_entropy_map(tensor, args.footprint), args.repeats, device)
        print(f"{f'{side}x{side}':>9} {n:>5} {reference:>10.4f} {ours:>11.4f} {reference / ours:>7.1f}x {diff:>11.1e}")


if __name__ == "__main__":
    main()
