"""Vanilla gradient saliency (Simonyan et al. 2014), and the shared target-logit gradient.

The map is the gradient of the target class's logit (pre-softmax score) with respect to the
input pixels, signed (Captum's `Saliency` with `abs=False`). `input_gradients` is the building
block of the other gradient methods: it computes the gradient with `torch.autograd.grad` on a
fresh copy of the images, so the model, its weights, hooks, mode and parameters' `.grad` stay
as they were. Call it on eval-mode models (the engine hands those): batching is exact only when
samples do not interact.
"""

from __future__ import annotations

import torch
from torch import nn

from .targets import check_images, target_classes


def resolve_target(model: nn.Module, images: torch.Tensor, target: torch.Tensor | None, method: str) -> torch.Tensor:
    """`target` checked against the model's logits, or its predicted classes when None (one
    forward pass without gradients), for methods that reuse one target over several passes."""
    with torch.inference_mode(False), torch.no_grad():
        return target_classes(model(images.detach().clone()), target, method, type(model).__name__)


def input_gradients(
    model: nn.Module, images: torch.Tensor, target: torch.Tensor | None, method: str = "gradient"
) -> torch.Tensor:
    """Gradient `[N,C,H,W]` (detached) of logit `target[i]` of image i w.r.t. it; None = predicted."""
    check_images(images, method)
    # Grad on even under no_grad/inference_mode callers; the leaf is a fresh copy (works for
    # inference tensors) and the model gets a non-leaf copy, so it may modify its input in place.
    with torch.inference_mode(False), torch.enable_grad():
        x = images.detach().clone().requires_grad_(True)
        logits = model(x.clone())
        target = target_classes(logits, target, method, type(model).__name__)
        (grad,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), x)
    return grad.detach()


class Gradient:
    """Plain gradient maps of a classifier's logits, batched, on the images' device."""

    def maps(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """Maps `[N,C,H,W]` (detached) for class `target[i]` of image i; None = predicted class."""
        return input_gradients(model, images, target, "gradient")

    def maps_for_attack(
        self, model: nn.Module, images: torch.Tensor, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Gradient maps of the softplus-smoothed model, differentiable in `images`
        (`DifferentiableMaps`, `tracekit.saliency.smoothed`)."""
        from .smoothed import smooth_gradients

        return smooth_gradients(model, images, target, method="gradient")
