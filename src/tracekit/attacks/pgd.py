"""Projected gradient descent (Madry et al.) through ART, or tracekit's native torch version.

Its factory (`pgd`) and the perturbation-norm parameters it shares (`Norm`, `Eps`) are in
`tracekit.attacks.factories`.
"""

from typing import TYPE_CHECKING, Any

from .art_classifier import ArtAttack

if TYPE_CHECKING:
    from art.estimators.classification import PyTorchClassifier


class ProjectedGradient(ArtAttack):
    """ART's `ProjectedGradientDescent` (its PyTorch variant for our classifier), untargeted."""

    def __init__(self, **params: Any) -> None:
        super().__init__()
        self.params = params

    def build(self, classifier: "PyTorchClassifier") -> Any:
        from art.attacks.evasion import ProjectedGradientDescent

        return ProjectedGradientDescent(classifier, **self.params, verbose=False)
