"""The paper's single-step gradient attacks through ART's `FastGradientMethod`: FGSM (L-inf) and L2.

`backend: native` runs them as `NativeFastGradient` instead (same results, whole batches on the device).

No `from __future__ import annotations`: the registry reads the factories' annotations as objects.
"""

import math
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationInfo

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


def _not_with_minimal(count: int, info: ValidationInfo) -> int:
    """Random starts need `minimal: false` (declare `minimal` first): ART ignores them otherwise."""
    if count and info.data.get("minimal"):
        raise ValueError("num_random_init needs minimal: false (a minimal attack starts from the clean image)")
    return count


RandomInits = Annotated[int, Field(ge=0), AfterValidator(_not_with_minimal)]


def fgsm(
    eps: Annotated[float, Field(gt=0, le=1)] = 0.1,
    minimal: bool = False,
    eps_step: Annotated[float, Field(gt=0, le=1)] = 0.01,
    num_random_init: RandomInits = 0,
    batch_size: Annotated[int, Field(gt=0)] = 128,
    backend: Literal["art", "native"] = "art",
) -> FastGradient | NativeFastGradient:
    """Fast gradient sign method, L-inf (Goodfellow et al.) via ART (or natively)."""
    return _fast_gradient(math.inf, eps, minimal, eps_step, num_random_init, batch_size, backend)


def gradient(
    eps: Annotated[float, Field(gt=0)] = 1.0,
    minimal: bool = False,
    eps_step: Annotated[float, Field(gt=0)] = 0.1,
    num_random_init: RandomInits = 0,
    batch_size: Annotated[int, Field(gt=0)] = 128,
    backend: Literal["art", "native"] = "art",
) -> FastGradient | NativeFastGradient:
    """Single-step L2 gradient attack (the paper's): loss gradient scaled to L2 norm eps, via ART (or natively)."""
    return _fast_gradient(2.0, eps, minimal, eps_step, num_random_init, batch_size, backend)


def _fast_gradient(
    norm: float, eps: float, minimal: bool, eps_step: float, num_random_init: int, batch_size: int, backend: str
) -> FastGradient | NativeFastGradient:
    """The ART attack, or the native one (which takes the engine's batch whole: no `batch_size`)."""
    if backend == "native":
        return NativeFastGradient(norm, eps, minimal, eps_step, num_random_init)
    return FastGradient(norm, eps, minimal, eps_step, batch_size, num_random_init)
