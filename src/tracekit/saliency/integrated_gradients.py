"""Integrated gradients (Sundararajan et al. 2017) from a black (all-zero) baseline.

`IG_i(x) = x_i * (1/m) * sum_{k=1..m} dF_t(k/m * x) / dx_i`: the paper's right Riemann sum of
the target logit's gradient along the straight path from the zero image to `x` (Captum's
`IntegratedGradients` with `method="riemann_right"` and zero baselines). The target defaults
to the class predicted for `x` itself, fixed along the path. The `m` scaled copies of a batch
go through the model together, `chunk` images per forward pass at most (one step at a time
when the batch alone is larger), so memory stays that of a plain gradient of the same batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .gradient import check_images, input_gradients, resolve_target

METHOD = "integrated-gradients"


class IntegratedGradients:
    """Integrated-gradients maps with `steps` right-Riemann steps from the zero image."""

    def __init__(self, steps: int = 32, chunk: int = 128) -> None:
        self.steps, self.chunk = steps, chunk

    def maps(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """Maps `[N,C,H,W]` (detached) for class `target[i]` of image i; None = predicted class."""
        check_images(images, METHOD)
        with torch.inference_mode(False):  # plain tensors, even for an inference-mode caller
            target = resolve_target(model, images, target, METHOD)
            x = images.detach().clone()
            total = self._path_sum(x, target, lambda scaled, t: input_gradients(model, scaled, t, METHOD))
            return x * total / self.steps

    def maps_for_attack(
        self, model: nn.Module, images: torch.Tensor, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The same Riemann sum of the softplus-smoothed model's gradients, differentiable in
        `images` (`DifferentiableMaps`, `tracekit.saliency.smoothed`); the target is the real
        model's prediction, as for `maps`."""
        from .smoothed import smooth_gradients

        check_images(images, METHOD)
        with torch.inference_mode(False), torch.enable_grad():
            target = resolve_target(model, images, target, METHOD)
            x = images if images.requires_grad else images.detach().clone().requires_grad_(True)
            total = self._path_sum(x, target, lambda scaled, t: smooth_gradients(model, scaled, t, method=METHOD))
            return x * total / self.steps

    def _path_sum(
        self,
        x: torch.Tensor,
        target: torch.Tensor,
        gradients: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """The sum over the path's steps k of `gradients(k/m x, target)`, the scaled copies
        `chunk` images per call."""
        alphas = torch.arange(1, self.steps + 1, device=x.device, dtype=x.dtype) / self.steps
        total = torch.zeros_like(x)
        for part in alphas.split(max(1, self.chunk // max(len(x), 1))):
            scaled = (part.view(-1, 1, 1, 1, 1) * x).flatten(0, 1)  # [steps in part * N, C, H, W]
            total = total + gradients(scaled, target.repeat(len(part))).view(len(part), *x.shape).sum(0)
        return total
