"""DeepFool (Moosavi-Dezfooli et al.) through ART, or tracekit's native torch version.

No `from __future__ import annotations`: the registry reads the factories' annotations as objects.
"""

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from .art_classifier import ArtAttack

if TYPE_CHECKING:
    from art.estimators.classification import PyTorchClassifier


class DeepFool(ArtAttack):
    """ART's `DeepFool`: steps to the linearized boundary of the closest of the top `nb_grads` classes.

    It attacks the model's prediction (ART ignores the labels), then scales the total perturbation
    by `1 + epsilon` (the overshoot) and clips to [0, 1].
    """

    def __init__(self, **params: Any) -> None:
        super().__init__()
        self.params = params

    def build(self, classifier: "PyTorchClassifier") -> Any:
        from art.attacks.evasion import DeepFool as ArtDeepFool

        return ArtDeepFool(classifier, **self.params, verbose=False)


def deepfool(
    max_iter: Annotated[int, Field(gt=0)] = 100,
    overshoot: Annotated[float, Field(ge=0, le=1)] = 0.02,
    nb_grads: Annotated[int, Field(gt=0)] = 10,
    batch_size: Annotated[int, Field(gt=0)] = 128,
    backend: Literal["art", "native"] = "art",
) -> Any:
    """DeepFool (Moosavi-Dezfooli et al.), minimal L2 steps to the nearest boundary, via ART or natively."""
    if backend == "native":
        from .native import NativeDeepFool

        return NativeDeepFool(max_iter=max_iter, overshoot=overshoot, nb_grads=nb_grads)
    return DeepFool(max_iter=max_iter, epsilon=overshoot, nb_grads=nb_grads, batch_size=batch_size)
