"""AutoAttack as ART implements it, which is NOT the attack set of Croce & Hein (2020).

Croce & Hein's standard AutoAttack runs APGD-CE, *targeted* APGD-DLR (APGD-T), FAB-T and Square
(5000 queries). ART 1.20.1's `AutoAttack`, by default, runs APGD-CE and *untargeted* APGD-DLR
(100 iterations, 5 random restarts each), DeepFool (100 iterations, overshoot 1e-3, which ignores
`eps` and is kept only where it lands inside the ball) and Square (5000 iterations, 5 restarts),
each on the images still correctly classified, keeping a result only if it is misclassified and
within `eps`. Only images that resist the cheaper attacks reach the costly ones, so a large
enough `eps` keeps it cheap.

The attacks are ART's own default list; they are run by ART's `run_attack` in the order ART's
`AutoAttack.generate` runs them (untargeted, no pool), because that method imports `multiprocess`,
which ART does not depend on. The inner attacks' progress bars are switched off.
"""

import contextlib
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import torch
from pydantic import Field

from .art_classifier import ArtAttack
from .pgd import Eps, Norm, art_norm

if TYPE_CHECKING:
    from art.attacks.evasion import AutoAttack as ArtAutoAttack
    from art.estimators.classification import PyTorchClassifier


class _Untargeted:
    """ART `AutoAttack.generate`'s untargeted, sequential pass over `auto.attacks`."""

    def __init__(self, auto: "ArtAutoAttack") -> None:
        self.auto = auto

    def generate(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        from art.attacks.evasion.auto_attack import run_attack
        from art.utils import to_categorical

        estimator, x_adv = self.auto.estimator, x.copy()
        y = to_categorical(y, estimator.nb_classes)
        robust = np.argmax(estimator.predict(x, batch_size=self.auto.batch_size), axis=1) == np.argmax(y, axis=1)
        for attack in self.auto.attacks:
            if not robust.any():
                break
            x_adv, robust = run_attack(
                x=x_adv, y=y, sample_is_robust=robust, attack=attack,
                estimator_orig=estimator, norm=self.auto.norm, eps=self.auto.eps,
            )  # fmt: skip
        return x_adv


class AutoAttack(ArtAttack):
    """ART's `AutoAttack` with its default attack list, untargeted, without progress bars."""

    def __init__(self, **params: Any) -> None:
        super().__init__()
        self.params = params

    def build(self, classifier: "PyTorchClassifier") -> Any:
        from art.attacks.evasion import AutoAttack as ArtAutoAttack

        # ART's APGD wraps the model in a new classifier, which moves it to cuda:{current_device()}.
        device = classifier.device
        with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
            auto = ArtAutoAttack(classifier, **self.params, targeted=False)
        for attack in auto.attacks:
            attack.set_params(verbose=False)
        return _Untargeted(auto)


def autoattack(
    norm: Norm = "inf",
    eps: Eps = 0.1,
    eps_step: Annotated[float, Field(gt=0)] = 0.03,
    batch_size: Annotated[int, Field(gt=0)] = 128,
) -> AutoAttack:
    """AutoAttack as ART runs it (APGD-CE, APGD-DLR, DeepFool, Square), not Croce & Hein's APGD-T/FAB-T set."""
    return AutoAttack(norm=art_norm(norm), eps=eps, eps_step=eps_step, batch_size=batch_size)
