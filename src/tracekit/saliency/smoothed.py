"""Differentiable feature response maps for adaptive attacks: the gradient methods' maps of a
softplus-smoothed network, with autograd through the input (`DifferentiableMaps`).

A ReLU network's input gradient is piecewise constant in the input, so its derivative, the second
order an attacker of a saliency-based detector needs, is zero almost everywhere: descending the
real map's score through autograd is gradient masking, not an attack. While the map is taken here,
every ReLU computes `softplus(x; beta)` forward (the "softplus trick" of Dombrowski et al. 2019,
"Explanations can be manipulated and geometry is to blame") and backward its own derivative
`sigmoid(beta x)`; guided backprop also lets only positive incoming gradients through,
`relu(grad) * sigmoid(beta x)`. The map comes from `torch.autograd.grad(..., create_graph=True)`,
so it is differentiable in the input, and as beta grows it tends to the real map (tested). The
interception is `ReLUCalls`'s, so every ReLU spelling is smoothed. The guided rule is a
gradient hook on each smoothed ReLU's output, removed once the map is taken: differentiating the
map then follows the true derivative of the forward pass (a custom autograd function would apply
the guided rule to the second-order pass too).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..smoothing import DEFAULT_BETA
from .relu_calls import ReLUCalls
from .targets import check_images, target_classes


def smooth_gradients(
    model: nn.Module,
    images: torch.Tensor,
    target: torch.Tensor | None = None,
    beta: float = DEFAULT_BETA,
    guided: bool = False,
    method: str = "smoothed gradient",
) -> torch.Tensor:
    """Gradient `[N,C,H,W]` of logit `target[i]` (None: the smoothed network's predicted class) of
    the softplus-smoothed `model` w.r.t. image i, guided (`guided`) or plain, differentiable in
    `images` (used as they are when they require grad, so a caller's graph reaches them)."""
    check_images(images, method)
    hooks: list[torch.utils.hooks.RemovableHandle] = []

    def smooth_relu(x: torch.Tensor, inplace: bool) -> torch.Tensor:
        out = F.softplus(x.clone() if inplace else x, beta=beta)
        if guided:  # on `out`: an in-place call may be on a view never used again
            hooks.append(out.register_hook(_positive))
        return x.copy_(out) if inplace else out

    with torch.inference_mode(False), torch.enable_grad():
        x = images if images.requires_grad else images.detach().clone().requires_grad_(True)
        try:
            with ReLUCalls(smooth_relu):
                logits = model(x.clone())
            target = target_classes(logits, target, method, type(model).__name__)
            (maps,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), x, create_graph=True)
        finally:
            for hook in hooks:
                hook.remove()
    return maps


def _positive(grad: torch.Tensor) -> torch.Tensor:
    return grad.clamp(min=0)
