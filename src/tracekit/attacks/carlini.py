"""The Carlini & Wagner L2 attack through ART (its factory, `cw_l2`, is in `tracekit.attacks.factories`)."""

from typing import TYPE_CHECKING, Any

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
