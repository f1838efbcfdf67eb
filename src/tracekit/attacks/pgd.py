"""Projected gradient descent (Madry et al.) through ART, or tracekit's native torch version.

Also home of `Norm` and `Eps`, the perturbation-norm parameters shared with `autoattack`.
No `from __future__ import annotations`: the registry reads the factories' annotations as objects.
"""

import math
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo

from .art_classifier import ArtAttack

if TYPE_CHECKING:
    from art.estimators.classification import PyTorchClassifier


def _norm(value: object) -> object:
    """`inf` (YAML `inf`, `.inf`, "Inf") as "inf" and 2 (or 2.0, "2") as 2; anything else is refused."""
    try:
        order = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        order = math.nan
    if isinstance(value, bool) or order not in (math.inf, 2.0):
        raise ValueError(f"norm must be inf (L-inf) or 2 (L2), got {value!r}")
    return "inf" if order == math.inf else 2


def _eps_in_pixel_range(eps: float, info: ValidationInfo) -> float:
    """An L-inf radius above 1 is the whole [0, 1] pixel range: refused (declare `norm` before `eps`)."""
    if info.data.get("norm") == "inf" and eps > 1:
        raise ValueError(f"eps must be at most 1 for the L-inf norm (pixels lie in [0, 1]), got {eps}")
    return eps


Norm = Annotated[Literal["inf", 2], BeforeValidator(_norm)]
Eps = Annotated[float, Field(gt=0), AfterValidator(_eps_in_pixel_range)]


def art_norm(norm: str | int) -> float:
    """ART's spelling of a validated `Norm`."""
    return math.inf if norm == "inf" else float(norm)


class ProjectedGradient(ArtAttack):
    """ART's `ProjectedGradientDescent` (its PyTorch variant for our classifier), untargeted."""

    def __init__(self, **params: Any) -> None:
        super().__init__()
        self.params = params

    def build(self, classifier: "PyTorchClassifier") -> Any:
        from art.attacks.evasion import ProjectedGradientDescent

        return ProjectedGradientDescent(classifier, **self.params, verbose=False)


def pgd(
    norm: Norm = "inf",
    eps: Eps = 0.1,
    eps_step: Annotated[float, Field(gt=0)] = 0.01,
    max_iter: Annotated[int, Field(gt=0)] = 40,
    num_random_init: Annotated[int, Field(ge=0)] = 0,
    decay: Annotated[float, Field(ge=0)] | None = None,
    random_eps: bool = False,
    batch_size: Annotated[int, Field(gt=0)] = 128,
    backend: Literal["art", "native"] = "art",
) -> Any:
    """Projected gradient descent (Madry et al.), L-inf or L2, via ART or natively in torch.

    `decay` turns on momentum (MI-FGSM); `random_eps` draws the radius per batch from a normal
    truncated to [0, eps] (ART's options of the same names).
    """
    if backend == "native":
        from .native import NativePGD

        return NativePGD(norm, eps, eps_step, max_iter, num_random_init, decay, random_eps)
    return ProjectedGradient(
        norm=art_norm(norm),
        eps=eps,
        eps_step=eps_step,
        max_iter=max_iter,
        num_random_init=num_random_init,
        decay=decay,
        random_eps=random_eps,
        batch_size=batch_size,
    )
