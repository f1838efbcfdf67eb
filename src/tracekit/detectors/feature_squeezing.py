"""Feature squeezing (Xu, Evans and Qi, NDSS 2018): an input is adversarial when the model's
softmax output moves much under "squeezing" that leaves clean inputs' predictions alone.

Squeezers, as in the paper: bit-depth reduction to `bits` bits per channel (`round(x (2^b - 1)) /
(2^b - 1)`) and median smoothing over `size x size` windows per channel, matching
`scipy.ndimage.median_filter(mode="reflect")` (the paper's implementation): an even window covers
offsets `-size//2 .. size - 1 - size//2` (so 2x2 pads one row and column before, none after),
borders are mirrored including the edge pixel, and the median of an even count is the upper of
the two middle values. The score is the largest L1 distance between the softmax of the input and
of a squeezed input. Unsupervised: nothing is learned; the engine calibrates the threshold.

Defaults follow the paper's joint detectors: 2x2 median smoothing with 1-bit depth for MNIST
(1 channel) and 5-bit for CIFAR-10 and ImageNet (colour). The paper's third squeezer for colour
images, non-local means, is not implemented.

Stand-in for adaptive attacks (`DifferentiableScore.score_for_attack`): the same score with BPDA
(Athalye, Carlini and Wagner, 2018) through the squeezers. Bit-depth reduction has zero gradient
almost everywhere, so each squeezed image is passed as a straight-through estimate,
`squeeze(x) + (x - x.detach())`: its forward is exactly the squeezed image (`x - x.detach()` is
exactly zero), its backward the identity. The median is also taken straight-through (its own
gradient reaches one pixel per window). The model's two softmax outputs keep their real gradients,
and the max over squeezers is kept as it is (its gradient flows through the arg-max squeezer), so
the stand-in's forward is the real score, the same operations on the same values.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import model_device

GRAY_BITS, COLOR_BITS = 1, 5  # the paper's joint detectors: MNIST; CIFAR-10 and ImageNet


def reduce_bit_depth(images: torch.Tensor, bits: int) -> torch.Tensor:
    """`images` in [0, 1] quantized to `2**bits` levels (rounding half to even, like `np.rint`)."""
    levels = 2**bits - 1
    return torch.round(images * levels) / levels


def _symmetric_index(length: int, before: int, after: int, device: torch.device) -> torch.Tensor:
    """Indices that pad an axis by mirroring with the edge repeated (scipy's `reflect`)."""
    index = torch.arange(-before, length + after, device=device)
    period = 2 * length
    index = index % period
    return torch.where(index < length, index, period - 1 - index)


def median_filter(images: torch.Tensor, size: int) -> torch.Tensor:
    """Per-channel `size x size` median of `[N,C,H,W]`, equal to `scipy.ndimage.median_filter`
    with `size=(1, 1, size, size)` and `mode="reflect"`."""
    n, c, h, w = images.shape
    before, after = size // 2, size - 1 - size // 2
    rows = _symmetric_index(h, before, after, images.device)
    cols = _symmetric_index(w, before, after, images.device)
    padded = images[:, :, rows][:, :, :, cols].reshape(n * c, 1, h + size - 1, w + size - 1)
    windows = nn.functional.unfold(padded, size)  # [N*C, size*size, H*W]
    median = windows.kthvalue(size * size // 2 + 1, dim=1).values
    return median.reshape(n, c, h, w)


class FeatureSqueezing:
    """Score = max over squeezers of `|softmax(x) - softmax(squeeze(x))|_1`."""

    needs_adversarial_fit = False

    def __init__(self, bits: int | None, median_sizes: list[int]) -> None:
        self.bits, self.median_sizes = bits, median_sizes

    def fit(
        self,
        model: nn.Module,
        clean_fit_images: torch.Tensor,
        adversarial_fit_images: torch.Tensor | None = None,
    ) -> None:
        """Nothing to learn: the engine calibrates the threshold on clean fit scores."""

    def squeezed(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The squeezed versions of a batch, one per squeezer."""
        bits = self.bits or (GRAY_BITS if images.shape[1] == 1 else COLOR_BITS)
        return [reduce_bit_depth(images, bits)] + [median_filter(images, s) for s in self.median_sizes]

    def score(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._score(model, images, straight_through=False)

    def score_for_attack(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The score with autograd through `images`, the squeezers straight-through (BPDA): the
        same value as `score`, the gradient of the softmax changes with each squeezer taken as the
        identity (`DifferentiableScore`)."""
        return self._score(model, images, straight_through=True)

    def _score(self, model: nn.Module, images: torch.Tensor, straight_through: bool) -> torch.Tensor:
        """The score under the caller's grad mode; `straight_through`: squeezers' backward is the identity."""
        images = images.to(model_device(model))
        squeezed = self.squeezed(images.detach())
        if straight_through:
            passed = images - images.detach()  # exactly zero, the identity's gradient
            squeezed = [s + passed for s in squeezed]
        probs = model(images).softmax(1)
        distances = [(model(s).softmax(1) - probs).abs().sum(1) for s in squeezed]
        return torch.stack(distances).amax(0)
