"""The one-pixel attack (Su et al.) through ART's `PixelAttack`, with the paper's stopping rule.

In ART 1.20.1 `PixelAttack(th=k)` changes at most `k` pixels (each to any value of the 8-bit
range, all channels of the pixel); `th=None` binary-searches k in 1..127. `pixels` is that `th`.

Two changes to ART's search, both in the subclass built by `_paper_pixel_attack`:
- ART minimizes the classifier's output for the true class, which for our models is a logit;
  the attack runs on the model followed by a softmax, so it minimizes the true class's
  *probability*, as Su et al. do.
- ART stops the evolution at the first misclassification. The paper (after Su et al.) stops once
  the true class's probability is below `stop_probability` (5%). A search that ends without
  reaching that but with the image misclassified still counts as a success (ART would have
  stopped there; its result is kept); `stop_probability=1` is ART's rule.
The evolution draws from NumPy's global random state (the engine seeds it per batch). Each
generation evaluates about 400 candidates per image, so the cost is about `max_iter` times 400
forward passes for every image that resists.

`scale` (tracekit's, not ART's) searches pixels of the image at 1/`scale` of its resolution: for
images that were upsampled from a coarser grid, such as the embedded digits (8x8 scans shown at
32x32), a pixel of the input is a fraction of one real pixel, and one pixel *of the scan* is the
faithful unit. The low-resolution image is the input's area average; a change of one of its pixels
reaches the input upsampled bilinearly (the way the digits were made), added to the input and
clipped to [0, 1], so the input is unchanged wherever the search changed nothing. ART's search runs
unmodified on that low-resolution view, one image at a time (as it does anyway).
"""

import functools
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .art_classifier import ArtAttack, art_classifier
from .evolution import check_grid

if TYPE_CHECKING:
    from art.estimators.classification import PyTorchClassifier


@functools.cache
def _paper_pixel_attack() -> type:
    """ART's `PixelAttack`, stopping once the true class's probability is below `stop_probability`."""
    from art.attacks.evasion import PixelAttack

    class PaperPixelAttack(PixelAttack):  # type: ignore[misc]
        def __init__(self, classifier: Any, stop_probability: float, **params: Any) -> None:
            super().__init__(classifier, **params)
            self.stop_probability = stop_probability
            self._fooling: np.ndarray | None = None

        def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs: Any) -> np.ndarray:
            # ART's evolution reports `tol / spread` of the population's fitness to its callback, which
            # ignores it; a population whose fitness is all equal (a saturated softmax) divides by zero.
            with np.errstate(divide="ignore"):
                return super().generate(x, y, **kwargs)

        def _attack_success(self, adv_x: np.ndarray, x: np.ndarray, target_class: int) -> bool:
            adv = self._perturb_image(adv_x, x)
            probs = self.estimator.predict(self.rescale_input(adv) if self.rescale else adv)[0]
            fooled = bool(np.argmax(probs) != target_class)
            if fooled:
                self._fooling = adv_x
            return fooled and bool(probs[target_class] < self.stop_probability)

        def _attack(self, image: np.ndarray, target_class: int, limit: int) -> tuple[bool, np.ndarray]:
            self._fooling = None
            success, result = super()._attack(image, target_class, limit)
            if success or self._fooling is None:
                return success, result
            return True, self._perturb_image(self._fooling, image)[0]

    return PaperPixelAttack


def _upsample(low: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(low, size=size, mode="bilinear", align_corners=False)


class _LowResolution(nn.Module):
    """`model` seen through a coarse view of one image `base`: input = clip(base + upsample(z - low))."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.base = self.low = torch.empty(0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        change = _upsample(z - self.low, tuple(self.base.shape[-2:]))
        return self.model((self.base + change).clamp(0.0, 1.0))


class OnePixel(ArtAttack):
    """Differential evolution (or CMA-ES) over `pixels` (row, column, value) triples per image; the
    engine runs it image by image (ART evolves each image on its own anyway), each seeded from its
    id, so an image's result never depends on its batch."""

    per_image = True

    def __init__(self, pixels: int, max_iter: int, es: int, stop_probability: float, scale: int) -> None:
        super().__init__()
        self.pixels, self.max_iter, self.es, self.stop_probability = pixels, max_iter, es, stop_probability
        self.scale = scale
        self._view: _LowResolution | None = None

    def check(self, input_size: tuple[int, ...]) -> None:
        check_grid(input_size, self.scale, self.pixels)

    def generate(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Adversarial versions of `images`; with `scale` > 1, found among changes of the coarse view's pixels."""
        if self.scale == 1:
            return super().generate(model, images, labels)
        self.check(tuple(images.shape[1:]))
        height, width = images.shape[-2:]
        if self._view is None or self._view.model is not model:
            self._view = _LowResolution(model)
        view = self._view
        lows = F.avg_pool2d(images, self.scale)
        changes = []
        for image, low, label in zip(images, lows, labels):
            view.base, view.low = image[None], low[None]
            change = super().generate(view, low[None], label[None]) - low[None]
            # ART returns a pixel it did not change through an 8-bit round trip: keep only real changes.
            changes.append(change.masked_fill(change.abs() < 1e-5, 0.0))
        return (images + _upsample(torch.cat(changes), (height, width))).clamp(0.0, 1.0)

    def build(self, classifier: "PyTorchClassifier") -> Any:
        probabilities = art_classifier(
            nn.Sequential(classifier.model, nn.Softmax(dim=1)),
            torch.zeros(1, *classifier.input_shape),
            classifier.nb_classes,
        )
        return _paper_pixel_attack()(
            probabilities,
            stop_probability=self.stop_probability,
            th=self.pixels,
            es=self.es,
            max_iter=self.max_iter,
            targeted=False,
            verbose=False,
        )
