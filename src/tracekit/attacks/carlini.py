"""The Carlini & Wagner L2 attack through ART.

No `from __future__ import annotations`: the registry reads the factories' annotations as objects.
"""

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from .art_classifier import ArtAttack

if TYPE_CHECKING:
    from art.estimators.classification import PyTorchClassifier


class CarliniL2(ArtAttack):
    """ART's `CarliniL2Method`, untargeted: the smallest L2 change found that leaves the true class."""

    def __init__(self, **params: Any) -> None:
        super().__init__()
        self.params = params

    def build(self, classifier: "PyTorchClassifier") -> Any:
        from art.attacks.evasion import CarliniL2Method

        return CarliniL2Method(classifier, targeted=False, **self.params, verbose=False)


def cw_l2(
    confidence: Annotated[float, Field(ge=0)] = 0.0,
    learning_rate: Annotated[float, Field(gt=0)] = 0.01,
    binary_search_steps: Annotated[int, Field(gt=0)] = 10,
    max_iter: Annotated[int, Field(gt=0)] = 10,
    initial_const: Annotated[float, Field(gt=0)] = 0.01,
    max_halving: Annotated[int, Field(gt=0)] = 5,
    max_doubling: Annotated[int, Field(gt=0)] = 5,
    batch_size: Annotated[int, Field(gt=0)] = 128,
) -> CarliniL2:
    """Carlini & Wagner L2 attack (untargeted) via ART."""
    return CarliniL2(
        confidence=confidence,
        learning_rate=learning_rate,
        binary_search_steps=binary_search_steps,
        max_iter=max_iter,
        initial_const=initial_const,
        max_halving=max_halving,
        max_doubling=max_doubling,
        batch_size=batch_size,
    )
