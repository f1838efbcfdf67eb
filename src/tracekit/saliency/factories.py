"""The built-in saliency methods' factories, each registered under its name where it is defined
(`@saliency.register`): its parameters (its signature, checked when a spec loads) and summary. This
module stays light: a factory imports its method (torch) in its body, so that `tracekit validate`
and `tracekit plugins` never import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from ..hookspecs import Components
from ..registry import component_spec

if TYPE_CHECKING:
    from .gradient import Gradient
    from .guided_backprop import GuidedBackprop
    from .integrated_gradients import IntegratedGradients
    from .smoothgrad import SmoothGrad

saliency = Components("saliency")

SaliencySpec = component_spec("saliency", "guided-backprop")


@saliency.register("guided-backprop")
def guided_backprop() -> GuidedBackprop:
    """Guided-backpropagation maps (Springenberg et al.), the paper's feature response."""
    from .guided_backprop import GuidedBackprop

    return GuidedBackprop()


@saliency.register("gradient")
def gradient() -> Gradient:
    """Vanilla gradient of the target logit w.r.t. the input (Simonyan et al.)."""
    from .gradient import Gradient

    return Gradient()


@saliency.register("integrated-gradients")
def integrated_gradients(steps: Annotated[int, Field(ge=1, le=1024)] = 32) -> IntegratedGradients:
    """Integrated gradients from a black image (Sundararajan et al.), right Riemann sum."""
    from .integrated_gradients import IntegratedGradients

    return IntegratedGradients(steps)


@saliency.register("smoothgrad")
def smoothgrad(
    base: SaliencySpec = {"name": "guided-backprop"},  # noqa: B006 (validated copy)
    n_samples: Annotated[int, Field(ge=1, le=1024)] = 16,
    noise: Annotated[float, Field(ge=0, le=1)] = 0.15,
    seed: int = 0,
) -> SmoothGrad:
    """SmoothGrad (Smilkov et al.): a base saliency averaged over noisy copies of the image."""
    from ..plugins import registry
    from ..protocols import DifferentiableMaps
    from .smoothgrad import DifferentiableSmoothGrad, SmoothGrad

    parent = registry("saliency").create(**base)
    return (DifferentiableSmoothGrad if isinstance(parent, DifferentiableMaps) else SmoothGrad)(
        parent, n_samples, noise, seed
    )
