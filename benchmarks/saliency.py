"""Time tracekit's guided backprop against Captum's `GuidedBackprop` on the same images.

Both compute maps for the predicted class of the same batch; the maps are checked to agree
before anything is timed. Captum hooks `nn.ReLU` modules only; tracekit also guides
functional ReLUs, so the check uses models built from `nn.ReLU` modules.

    python benchmarks/saliency.py [--device cpu|cuda] [--repeats 5] [--threads T]
"""

from __future__ import annotations

import argparse

import torch
import torchvision
from captum.attr import GuidedBackprop as CaptumGuidedBackprop

import tracekit

from timing import median_seconds  # benchmarks/timing.py


def cases(device: torch.device) -> list[tuple[str, torch.nn.Module, torch.Tensor]]:
    """(name, eval model, batch): the embedded digits CNN and a random-weight ResNet-18."""
    gen = torch.Generator().manual_seed(0)
    digits = tracekit.create("model", "digits-cnn").module
    resnet = torchvision.models.resnet18(weights=None)
    return [
        ("digits-cnn 256x1x32x32", digits.to(device).eval(), torch.rand((256, 1, 32, 32), generator=gen).to(device)),
        ("resnet18 16x3x224x224", resnet.to(device).eval(), torch.rand((16, 3, 224, 224), generator=gen).to(device)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ours = tracekit.create("saliency", "guided-backprop")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device {device}")
    header = f"{'case':<24} {'Captum s':>9} {'tracekit s':>11} {'Captum/tracekit':>16} {'max |diff|':>11}"
    print(header)
    print("-" * len(header))
    for name, model, images in cases(device):
        with torch.no_grad():
            target = model(images).argmax(1)
        captum = CaptumGuidedBackprop(model)
        reference = captum.attribute(images, target=target).detach()
        diff = float((ours.maps(model, images) - reference).abs().max())
        scale = float(reference.abs().max())
        if diff > 1e-5 * max(scale, 1e-12):
            raise SystemExit(f"{name}: tracekit and Captum disagree by {diff:.3g} (scale {scale:.3g})")
        theirs = median_seconds(lambda: captum.attribute(images, target=target), args.repeats, device)
        mine = median_seconds(lambda: ours.maps(model, images, target), args.repeats, device)
        print(f"{name:<24} {theirs:>9.4f} {mine:>11.4f} {theirs / mine:>15.2f}x {diff:>11.1e}")


if __name__ == "__main__":
    main()
