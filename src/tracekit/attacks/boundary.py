"""The boundary attack (Brendel et al.), untargeted, through ART's `BoundaryAttack`.

A decision-based (black-box) attack: it only reads the model's predicted class. It starts from a
uniform-noise image that is already misclassified and walks along the decision boundary towards
the original, shrinking the L2 distance. ART's default is *targeted*; the paper's is untargeted.
Where no misclassified noise image is found in `init_size` draws, ART returns the original.

Two changes to ART 1.20.1, in the subclass built by `_seeded_boundary_attack`:
- its initial noise comes from a fresh, unseeded `np.random.RandomState()`, so results differed
  from run to run; here it is drawn from NumPy's global random state (which the engine seeds per
  batch, and which ART's walk already uses), `batch_size` candidates per prediction;
- under NumPy 2 its orthogonal step comes out float64 (a NumPy float64 scalar times a float32
  array), which a float32 PyTorch model refuses (ART issue #2475, there for HopSkipJump); the step
  is cast back to float32.
"""

import functools
from typing import TYPE_CHECKING, Any

import numpy as np

from .art_classifier import ArtAttack

if TYPE_CHECKING:
    from art.estimators.classification import PyTorchClassifier


@functools.cache
def _seeded_boundary_attack() -> type:
    """ART's `BoundaryAttack` (untargeted use only, no `x_adv_init`): seeded initial noise, float32 steps."""
    from art.attacks.evasion import BoundaryAttack

    class SeededBoundaryAttack(BoundaryAttack):  # type: ignore[misc]
        def _orthogonal_perturb(self, delta: float, current: np.ndarray, original: np.ndarray) -> np.ndarray:
            return super()._orthogonal_perturb(delta, current, original).astype(current.dtype)

        def _init_sample(
            self, x: np.ndarray, y: int, y_p: int, init_pred: int, adv_init: Any, clip_min: float, clip_max: float
        ) -> tuple[np.ndarray, int] | None:
            for start in range(0, self.init_size, self.batch_size):
                shape = (min(self.batch_size, self.init_size - start), *x.shape)
                noise = np.random.uniform(clip_min, clip_max, size=shape).astype(x.dtype)
                preds = np.argmax(self.estimator.predict(noise, batch_size=self.batch_size), axis=1)
                fooled = np.flatnonzero(preds != y_p)
                if fooled.size:
                    return noise[fooled[0]], int(preds[fooled[0]])
            return None

    return SeededBoundaryAttack


class Boundary(ArtAttack):
    """ART's `BoundaryAttack` with `targeted=False`; the engine runs it image by image (ART walks
    each image on its own anyway), each seeded from its id, so an image's result never depends
    on its batch."""

    per_image = True

    def __init__(self, **params: Any) -> None:
        super().__init__()
        self.params = params

    def build(self, classifier: "PyTorchClassifier") -> Any:
        return _seeded_boundary_attack()(classifier, targeted=False, **self.params, verbose=False)
