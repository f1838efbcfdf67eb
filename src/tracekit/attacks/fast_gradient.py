"""The paper's single-step gradient attacks through ART's `FastGradientMethod`: FGSM (L-inf) and L2.

`backend: native` runs them as `NativeFastGradient` instead (same results, whole batches on the device).
Their factories (`fgsm`, `gradient`) are in `tracekit.attacks.factories`.
"""

from typing import TYPE_CHECKING, Any

from .art_classifier import ArtAttack
from .native import NativeFastGradient, minimal_step_count

if TYPE_CHECKING:
    from art.estimators.classification import PyTorchClassifier


class FastGradient(ArtAttack):
    """One step of size `eps` along the loss gradient normalized in the `norm` (inf: its sign).

    With `minimal`, each image gets the smallest of `eps_step, 2*eps_step, ..., eps` that changes its
    prediction (or `eps`): `eps_step` is shrunk to `eps / ceil(eps / eps_step)` so that `eps` itself is
    always the last size tried, and a minimal attack succeeds wherever the fixed-size one does.
    """

    def __init__(
        self, norm: float, eps: float, minimal: bool, eps_step: float, batch_size: int, num_random_init: int = 0
    ) -> None:
        super().__init__()
        self.norm, self.eps, self.minimal, self.eps_step, self.batch_size = norm, eps, minimal, eps_step, batch_size
        self.num_random_init = num_random_init

    def build(self, classifier: "PyTorchClassifier") -> Any:
        from art.attacks.evasion import FastGradientMethod

        eps, eps_step = self.eps, self.eps
        if self.minimal:
            eps_step = self.eps / minimal_step_count(self.eps, self.eps_step)
            # ART stops once the running sum of steps exceeds eps; allow for float rounding of that sum.
            eps = self.eps * (1 + 1e-7)
        return FastGradientMethod(
            classifier,
            norm=self.norm,
            eps=eps,
            eps_step=eps_step,
            minimal=self.minimal,
            num_random_init=self.num_random_init,
            batch_size=self.batch_size,
        )


def fast_gradient_attack(
    norm: float, eps: float, minimal: bool, eps_step: float, num_random_init: int, batch_size: int, backend: str
) -> FastGradient | NativeFastGradient:
    """The ART attack, or the native one (which takes the engine's batch whole: no `batch_size`)."""
    if backend == "native":
        return NativeFastGradient(norm, eps, minimal, eps_step, num_random_init)
    return FastGradient(norm, eps, minimal, eps_step, batch_size, num_random_init)
