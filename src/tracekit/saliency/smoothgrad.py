"""SmoothGrad (Smilkov et al. 2017): a saliency method's maps averaged over noisy copies.

`SG(x) = (1/n) * sum_{k=1..n} M(x + e_k)`, `e_k ~ N(0, s^2)` per pixel, where `M` is the base
saliency (guided backprop by default) and `s = noise * (max x - min x)` per image: the paper's
noise level, a fraction of the image's value range. Noisy copies are not clipped to [0, 1] (as
in the paper and Captum). The base explains the class predicted for the clean `x` (or the
given target) in every copy. The maps are signed averages; the gray conversion takes their
absolute value afterwards, as the paper's visualizations do.

Noise: `n` standard normal draws `z_1..z_n` (each the image's shape) come from a generator
seeded with `seed` at every call, and every image gets the same draws, `e_k = s * z_k` (common
random numbers). So an image's map depends on the image alone, never on the batch it is in (a
file scored by `tracekit detect` gets the map it got in the run), and images are compared
under the same noise. The noisy copies go to the base method `chunk` images per call (at least
the `n` copies of one image). On the CPU each image's map is exactly Captum's
`NoiseTunnel(base).attribute(x[i:i+1], nt_type="smoothgrad", nt_samples=n, stdevs=s)` run after
`torch.manual_seed(seed)`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..protocols import DifferentiableMaps, Saliency
from .gradient import check_images, resolve_target

METHOD = "smoothgrad"


class SmoothGrad:
    """Mean of a base saliency's maps over `n_samples` Gaussian-noised copies of each image."""

    def __init__(self, base: Saliency, n_samples: int = 16, noise: float = 0.15, seed: int = 0, chunk: int = 128):
        self.base, self.n_samples, self.noise, self.seed, self.chunk = base, n_samples, noise, seed, chunk

    def maps(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """Maps `[N,C,H,W]` (detached) for class `target[i]` of image i; None = predicted class."""
        check_images(images, METHOD)
        with torch.inference_mode(False):  # plain tensors, even for an inference-mode caller
            x = images.detach().clone()
            return self._average(model, x, target, lambda noisy, t: self.base.maps(model, noisy, t).detach())

    def _average(
        self,
        model: nn.Module,
        images: torch.Tensor,
        target: torch.Tensor | None,
        base_maps: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """The mean of `base_maps(noisy copies, targets)` per image, the copies of `per_call`
        images per call."""
        n = self.n_samples
        per_call = max(1, self.chunk // n)  # images whose copies go to the base method together
        targets = resolve_target(model, images, target, METHOD).split(per_call)
        gen = torch.Generator(device=images.device).manual_seed(self.seed)
        draws = torch.randn((n, *images.shape[1:]), generator=gen, device=images.device, dtype=images.dtype)
        out = []
        for part, part_target in zip(images.split(per_call), targets):
            span = part.amax(dim=(1, 2, 3)) - part.amin(dim=(1, 2, 3))
            noisy = (part[:, None] + draws[None] * (self.noise * span).view(-1, 1, 1, 1, 1)).flatten(0, 1)
            maps = base_maps(noisy, part_target.repeat_interleave(n))
            out.append(maps.view(len(part), n, *maps.shape[1:]).mean(1))
        return torch.cat(out)  # split() gives at least one part, even of an empty batch


class DifferentiableSmoothGrad(SmoothGrad):
    """SmoothGrad over a base with differentiable maps (`DifferentiableMaps`), itself with them:
    the mean of the base's `maps_for_attack` over the same noisy copies (the same draws: the noise
    is fixed, so no expectation over it is needed). Its factory picks it when the base offers them."""

    base: DifferentiableMaps

    def maps_for_attack(
        self, model: nn.Module, images: torch.Tensor, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The mean of the base's differentiable maps over the noisy copies, differentiable in `images`."""
        check_images(images, METHOD)
        with torch.inference_mode(False), torch.enable_grad():
            x = images if images.requires_grad else images.detach().clone().requires_grad_(True)
            return self._average(model, x, target, lambda noisy, t: self.base.maps_for_attack(model, noisy, t))
