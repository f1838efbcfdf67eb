"""The built-in attacks' factories, each registered under its name where it is defined
(`@attacks.register`): its parameters (its signature, checked when a spec loads) and summary. This
module stays light: a factory imports its attack (torch, ART) in its body, so that
`tracekit validate` and `tracekit plugins` never import torch.

Also home of `Norm` and `Eps`, the perturbation-norm parameters shared by `pgd`, `autoattack`,
`adaptive` and `adaptive-entropy`.
"""

from __future__ import annotations

import importlib.util
import math
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo

from ..errors import TracekitError
from ..hookspecs import Components
from ..smoothing import DEFAULT_BETA, DEFAULT_SIGMA

if TYPE_CHECKING:
    from .adaptive import Adaptive
    from .adaptive_entropy import AdaptiveEntropy
    from .autoattack import AutoAttack
    from .boundary import Boundary
    from .boundary_walk import NativeBoundary
    from .carlini import CarliniL2
    from .evolution import NativeOnePixel
    from .fast_gradient import FastGradient
    from .native import NativeFastGradient
    from .pixel import OnePixel

attacks = Components("attack")


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


def _not_with_minimal(count: int, info: ValidationInfo) -> int:
    """Random starts need `minimal: false` (declare `minimal` first): ART ignores them otherwise."""
    if count and info.data.get("minimal"):
        raise ValueError("num_random_init needs minimal: false (a minimal attack starts from the clean image)")
    return count


RandomInits = Annotated[int, Field(ge=0), AfterValidator(_not_with_minimal)]


@attacks.register("fgsm")
def fgsm(
    eps: Annotated[float, Field(gt=0, le=1)] = 0.1,
    minimal: bool = False,
    eps_step: Annotated[float, Field(gt=0, le=1)] = 0.01,
    num_random_init: RandomInits = 0,
    batch_size: Annotated[int, Field(gt=0)] = 128,
    backend: Literal["art", "native"] = "art",
) -> FastGradient | NativeFastGradient:
    """Fast gradient sign method, L-inf (Goodfellow et al.) via ART (or natively)."""
    from .fast_gradient import fast_gradient_attack

    return fast_gradient_attack(math.inf, eps, minimal, eps_step, num_random_init, batch_size, backend)


@attacks.register("gradient")
def gradient(
    eps: Annotated[float, Field(gt=0)] = 1.0,
    minimal: bool = False,
    eps_step: Annotated[float, Field(gt=0)] = 0.1,
    num_random_init: RandomInits = 0,
    batch_size: Annotated[int, Field(gt=0)] = 128,
    backend: Literal["art", "native"] = "art",
) -> FastGradient | NativeFastGradient:
    """Single-step L2 gradient attack (the paper's): loss gradient scaled to L2 norm eps, via ART (or natively)."""
    from .fast_gradient import fast_gradient_attack

    return fast_gradient_attack(2.0, eps, minimal, eps_step, num_random_init, batch_size, backend)


@attacks.register("pixel")
def pixel(
    pixels: Annotated[int, Field(gt=0)] = 1,
    max_iter: Annotated[int, Field(gt=0)] = 100,
    es: Literal["de", "cma-es"] = "de",
    stop_probability: Annotated[float, Field(gt=0, le=1)] = 0.05,
    scale: Annotated[int, Field(gt=0)] = 1,
    backend: Literal["art", "native"] = "art",
    eval_batch: Annotated[int, Field(gt=0, le=1_000_000)] | None = None,
) -> OnePixel | NativeOnePixel:
    """One-pixel attack (Su et al.): evolve until the true class's probability is below 5%.

    `scale` > 1 searches the pixels of the image at 1/`scale` resolution (e.g. 4 for the 8x8 digits).
    `backend: native` evolves every image of a batch at once on the device, `eval_batch` candidate
    images per forward pass (default 4096 on a GPU, 128 on a CPU; `tracekit/attacks/evolution.py`);
    `art` runs ART's, image by image.
    """
    if backend == "native":
        if es != "de":
            raise TracekitError("attack 'pixel': backend: native evolves by differential evolution only; use es: de")
        from .evolution import NativeOnePixel

        return NativeOnePixel(pixels, max_iter, stop_probability, scale, eval_batch)
    if es == "cma-es" and importlib.util.find_spec("cma") is None:
        raise TracekitError("attack 'pixel': es: cma-es needs the 'cma' package; pip install cma, or use es: de")
    from .pixel import OnePixel

    return OnePixel(pixels, max_iter, 0 if es == "cma-es" else 1, stop_probability, scale)


@attacks.register("deepfool")
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
    from .deepfool import DeepFool

    return DeepFool(max_iter=max_iter, epsilon=overshoot, nb_grads=nb_grads, batch_size=batch_size)


@attacks.register("boundary")
def boundary(
    delta: Annotated[float, Field(gt=0)] = 0.01,
    epsilon: Annotated[float, Field(gt=0)] = 0.01,
    step_adapt: Annotated[float, Field(gt=0, lt=1)] = 0.667,
    max_iter: Annotated[int, Field(gt=0)] = 200,
    num_trial: Annotated[int, Field(gt=0)] = 25,
    sample_size: Annotated[int, Field(gt=0)] = 20,
    init_size: Annotated[int, Field(gt=0)] = 100,
    min_epsilon: Annotated[float, Field(ge=0)] = 0.0,
    batch_size: Annotated[int, Field(gt=0)] = 64,
    backend: Literal["art", "native"] = "art",
    eval_batch: Annotated[int, Field(gt=0, le=1_000_000)] | None = None,
) -> Boundary | NativeBoundary:
    """Boundary attack (Brendel et al.), untargeted and decision-based (black-box).

    `backend: native` walks every image of a batch at once on the device, `eval_batch` candidate
    images per forward pass (default 4096 on a GPU, 256 on a CPU; `tracekit/attacks/boundary_walk.py`);
    `art` runs ART's, image by image.
    """
    if backend == "native":
        from .boundary_walk import NativeBoundary

        return NativeBoundary(
            delta, epsilon, step_adapt, max_iter, num_trial, sample_size, init_size, min_epsilon, batch_size, eval_batch
        )
    from .boundary import Boundary

    return Boundary(
        delta=delta,
        epsilon=epsilon,
        step_adapt=step_adapt,
        max_iter=max_iter,
        num_trial=num_trial,
        sample_size=sample_size,
        init_size=init_size,
        min_epsilon=min_epsilon,
        batch_size=batch_size,
    )


@attacks.register("pgd")
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
    from .pgd import ProjectedGradient

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


@attacks.register("cw-l2")
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
    from .carlini import CarliniL2

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


@attacks.register("autoattack")
def autoattack(
    norm: Norm = "inf",
    eps: Eps = 0.1,
    eps_step: Annotated[float, Field(gt=0)] = 0.03,
    max_iter: Annotated[int, Field(gt=0)] = 100,
    restarts: Annotated[int, Field(gt=0)] = 1,
    square_max_iter: Annotated[int, Field(gt=0)] = 1000,
    batch_size: Annotated[int, Field(gt=0)] = 128,
) -> AutoAttack:
    """AutoAttack as ART runs it (APGD-CE, APGD-DLR, DeepFool, Square), not Croce & Hein's APGD-T/FAB-T set."""
    from .autoattack import AutoAttack

    return AutoAttack(art_norm(norm), eps, eps_step, batch_size, max_iter, restarts, square_max_iter)


DEFAULT_LAMBDAS = (0.0, 3.0, 10.0, 30.0)  # on digits-cnn the surrogate's input gradient is ~1/25 of the margin's
Lambdas = Annotated[list[Annotated[float, Field(ge=0)]], Field(min_length=1, max_length=8)]


@attacks.register("adaptive-entropy")
def adaptive_entropy(
    norm: Norm = "inf",
    eps: Eps = 0.1,
    eps_step: Annotated[float, Field(gt=0)] = 0.01,
    max_iter: Annotated[int, Field(gt=0)] = 20,
    lambdas: Lambdas = list(DEFAULT_LAMBDAS),  # noqa: B006 (validated copy)
    beta: Annotated[float, Field(gt=0)] = DEFAULT_BETA,
    sigma: Annotated[float, Field(gt=0)] = DEFAULT_SIGMA,
    confidence: Annotated[float, Field(ge=0)] = 1.0,
    random_init: bool = False,
    batch_size: Annotated[int, Field(gt=0)] = 64,
) -> AdaptiveEntropy:
    """Adaptive PGD against the feature-response detector via a differentiable local-entropy surrogate."""
    from .adaptive_entropy import AdaptiveEntropy

    return AdaptiveEntropy(norm, eps, eps_step, max_iter, lambdas, beta, sigma, confidence, random_init, batch_size)


ADAPTIVE_LAMBDAS = (0.0, 0.5, 1.0, 2.0, 4.0)  # weights of the unit-norm score gradient (`adaptive`'s docstring)
# How far past the decision boundary the margin keeps pushing (logits): a barely misclassified image
# is unstable, which detectors of instability (feature squeezing, Bayesian uncertainty) flag. On 60
# digit scenes against feature squeezing (L-inf 0.1, 50 steps): 82% evade with 1, 87% with 10,
# 85% with 30 or 100; 90% with 10 and 3 restarts.
ADAPTIVE_CONFIDENCE = 10.0


@attacks.register("adaptive")
def adaptive(
    norm: Norm = "inf",
    eps: Eps = 0.1,
    eps_step: Annotated[float, Field(gt=0)] = 0.01,
    max_iter: Annotated[int, Field(gt=0)] = 50,
    lambdas: Lambdas = list(ADAPTIVE_LAMBDAS),  # noqa: B006 (validated copy)
    confidence: Annotated[float, Field(ge=0)] = ADAPTIVE_CONFIDENCE,
    restarts: Annotated[int, Field(gt=0, le=20)] = 1,
    random_init: bool = False,
    batch_size: Annotated[int, Field(gt=0)] = 64,
) -> Adaptive:
    """Adaptive PGD against the detector it is bound to, through the detector's differentiable stand-in."""
    from .adaptive import Adaptive

    return Adaptive(norm, eps, eps_step, max_iter, lambdas, confidence, restarts, random_init, batch_size)
