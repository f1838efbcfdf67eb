"""Vanilla gradient saliency (Simonyan et al. 2014), and the shared target-logit gradient.

The map is the gradient of the target class's logit (pre-softmax score) with respect to the
input pixels, signed (Captum's `Saliency` with `abs=False`). `input_gradients` is the building
block of the other gradient methods: it computes the gradient with `torch.autograd.grad` on a
fresh copy of the images, so the model, its weights, hooks, mode and parameters' `.grad` stay
as they were. Call it on eval-mode models (the engine hands those): batching is exact only when
samples do not interact.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import TracekitError


def check_images(images: torch.Tensor, method: str) -> None:
    """Refuse images a gradient cannot be taken of (integers)."""
    if not images.is_floating_point():
        raise TracekitError(f"{method}: images must be floating point in [0, 1], got {images.dtype}")


def target_classes(logits: Any, target: torch.Tensor | None, method: str, model_name: str) -> torch.Tensor:
    """`target` as a `[N]` long tensor on the logits' device (the argmax when None), checked."""
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise TracekitError(f"{method}: {model_name} returned {shape}; expected logits of shape [N, classes]")
    if target is None:
        return logits.argmax(1)
    n, classes = logits.shape
    target = torch.as_tensor(target, device=logits.device).long().clone()  # never an inference tensor
    if target.shape != (n,):
        raise TracekitError(
            f"{method}: target has shape {tuple(target.shape)}; expected one class index per image, ({n},)"
        )
    if n and (target.min() < 0 or target.max() >= classes):
        raise TracekitError(
            f"{method}: target classes must lie in 0..{classes - 1} for {model_name}, "
            f"got {target.min().item()}..{target.max().item()}"
        )
    return target


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


def gradient() -> Gradient:
    """Vanilla gradient of the target logit w.r.t. the input (Simonyan et al.)."""
    return Gradient()
