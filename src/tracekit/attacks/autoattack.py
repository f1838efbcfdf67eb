"""AutoAttack as ART implements it, which is NOT the attack set of Croce & Hein (2020).

Croce & Hein's standard AutoAttack runs APGD-CE, *targeted* APGD-DLR (APGD-T), FAB-T and Square
(5000 queries). ART 1.20.1's `AutoAttack`, by default, runs APGD-CE and *untargeted* APGD-DLR
(100 iterations, 5 random restarts each), DeepFool (100 iterations, overshoot 1e-3; it ignores
`eps`, so its results count only where they land inside the ball) and Square (5000 iterations,
5 restarts), each on the images still correctly classified, keeping a result only where it is
misclassified and within `eps`.

Here: the same four attacks with the same settings, run in that order by ART's own `run_attack`
(as `AutoAttack.generate` does untargeted, without a pool; that method itself imports
`multiprocess`, which ART does not depend on), without progress bars, and with a cheaper default
budget: `restarts=1` and `square_max_iter=1000` (ART: 5 and 5000); `max_iter` sets APGD's and
DeepFool's iterations (ART: 100 both). Square on images that resist the gradient attacks dominates
the cost (minutes per batch at ART's budget on a CPU).
"""

import contextlib
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .art_classifier import ArtAttack, model_untouched

if TYPE_CHECKING:
    from art.estimators.classification import PyTorchClassifier


class _Sequential:
    """ART `AutoAttack.generate`'s untargeted pass: each attack on the images still robust."""

    def __init__(self, classifier: "PyTorchClassifier", attacks: list[Any], norm: float, eps: float) -> None:
        self.classifier, self.attacks, self.norm, self.eps = classifier, attacks, norm, eps

    def generate(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        from art.attacks.evasion.auto_attack import run_attack
        from art.utils import to_categorical

        y = to_categorical(y, self.classifier.nb_classes)
        robust = np.argmax(self.classifier.predict(x), axis=1) == np.argmax(y, axis=1)
        x_adv = x.copy()
        for attack in self.attacks:
            if not robust.any():
                break
            x_adv, robust = run_attack(
                x=x_adv, y=y, sample_is_robust=robust, attack=attack,
                estimator_orig=self.classifier, norm=self.norm, eps=self.eps,
            )  # fmt: skip
        return x_adv


class AutoAttack(ArtAttack):
    """ART's default AutoAttack list (APGD-CE, APGD-DLR, DeepFool, Square) with a configurable budget."""

    def __init__(
        self,
        norm: float,
        eps: float,
        eps_step: float,
        batch_size: int,
        max_iter: int,
        restarts: int,
        square_max_iter: int,
    ) -> None:
        super().__init__()
        self.norm, self.eps, self.eps_step, self.batch_size = norm, eps, eps_step, batch_size
        self.max_iter, self.restarts, self.square_max_iter = max_iter, restarts, square_max_iter

    def build(self, classifier: "PyTorchClassifier") -> Any:
        from art.attacks.evasion import AutoProjectedGradientDescent, DeepFool, SquareAttack

        # ART's APGD wraps the model in a new classifier, which moves it to cuda:{current_device()}
        # and switches it to eval mode.
        device = classifier.device
        cuda = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
        with model_untouched(classifier.model), cuda:
            attacks: list[Any] = [
                AutoProjectedGradientDescent(
                    classifier,
                    norm=self.norm,
                    eps=self.eps,
                    eps_step=self.eps_step,
                    max_iter=self.max_iter,
                    targeted=False,
                    nb_random_init=self.restarts,
                    batch_size=self.batch_size,
                    loss_type=loss,
                    verbose=False,
                )  # fmt: skip
                for loss in ("cross_entropy", "difference_logits_ratio")
            ]
        attacks.append(
            DeepFool(
                classifier, max_iter=self.max_iter, epsilon=1e-3, nb_grads=10, batch_size=self.batch_size, verbose=False
            )
        )
        attacks.append(
            SquareAttack(
                classifier,
                norm=self.norm,
                max_iter=self.square_max_iter,
                eps=self.eps,
                p_init=0.8,
                nb_restarts=self.restarts,
                batch_size=self.batch_size,
                verbose=False,
            )  # fmt: skip
        )
        return _Sequential(classifier, attacks, self.norm, self.eps)
