"""DeepFool (Moosavi-Dezfooli et al.) through ART, or tracekit's native torch version.

Its factory (`deepfool`) is in `tracekit.attacks.factories`.
"""

from typing import TYPE_CHECKING, Any

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
