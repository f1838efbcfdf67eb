"""Monte Carlo dropout whose masks belong to the image, not to its batch.

torch's dropout draws one mask tensor for the whole batch from the global generator, so an image's
masks (and any score built on them) change with the images beside it: `tracekit detect` on one
file would not reproduce the run's score. Here each mask element is a counter-based hash of the
image's content, the seed, the dropout site, the pass number and the element's position (PCG's
output permutation on 32-bit words, computed exactly in int64 on any device): the same image gets
the same masks alone or in any batch, on CPU and GPU alike, and torch's random state is untouched.

The masks are applied by forward hooks while the model stays in eval mode: on the model's own
`nn.Dropout` / `Dropout1d/2d/3d` modules of rate > 0 (identity in eval mode, so the hook sees the
input), or, for a model without them, on the output of one named layer. Alpha dropout (SELU
networks) is not emulated; such modules stay off. The hooks are removed when the block ends, also
on an exception; the model's modes are never touched.

`bayesian_uncertainty` is the Monte Carlo estimate built on these masks (Feinman et al.'s Bayesian
uncertainty, used by KD+BU), computed under the caller's grad mode. With autograd on it is the
score's differentiable stand-in for adaptive attacks (`DifferentiableScore`), an expectation over
transformation (EOT, Athalye et al. 2018): the same `n_samples` masks as the real score, so its
forward equals the real estimate exactly, and its gradient is the exact gradient of that estimate
with the masks held fixed. The masks are a function of the image's 8-bit content (`image_keys`,
no gradient), so an attack's next iterate meets the fresh masks the real score would draw for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..counters import WORD, pcg, uniforms
from ..errors import TracekitError
from .layers import forward_hooks

_CHANNEL_DROPOUT = (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)


def dropout_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The model's (channel) dropout modules of rate > 0, by name."""
    kinds = (nn.Dropout, *_CHANNEL_DROPOUT)
    return {name: m for name, m in model.named_modules() if isinstance(m, kinds) and m.p > 0}


def image_keys(images: torch.Tensor) -> torch.Tensor:
    """`[N]` 32-bit keys of the images' content at 8-bit precision (an exact integer sum)."""
    levels = (images.detach().flatten(1).double() * 255).round().long().clamp(0, 255)
    weights = pcg(torch.arange(levels.shape[1], device=images.device)) >> 8  # < 2**24
    total = (levels * weights).sum(1)
    return pcg((total & WORD) ^ pcg(total >> 32))


class PerImageDropout:
    """Dropout hooks on `model`, masks keyed by `images`; set `draw` before each forward pass."""

    def __init__(self, model: nn.Module, layer: str, rate: float, images: torch.Tensor, seed: int, where: str) -> None:
        own = dropout_modules(model)
        self.sites = {name: m.p for name, m in own.items()} if own else {layer: rate}
        self.channel = {name for name, m in own.items() if isinstance(m, _CHANNEL_DROPOUT)}
        self.model, self.keys, self.seed, self.where = model, image_keys(images), seed, where
        self.draw = 0

    def _hook(self, site: int, name: str, rate: float) -> Any:
        def drop(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
            if output.shape[0] != len(self.keys):
                raise TracekitError(
                    f"{self.where}: the output of '{name}' has {output.shape[0]} rows for {len(self.keys)} images; "
                    "per-image dropout needs the batch first; choose another `layer`"
                )
            shape = (*output.shape[:2], *[1] * (output.dim() - 2)) if name in self.channel else output.shape
            size = int(torch.Size(shape[1:]).numel())
            keep = uniforms(self.keys, size, self.seed, site, self.draw) >= rate
            return output * keep.view(shape).to(output.dtype) / (1 - rate)

        return drop

    @contextmanager
    def hooked(self) -> Iterator[PerImageDropout]:
        """The hooks, registered for the block (the model stays in eval mode)."""
        hooks = {name: self._hook(i, name, rate) for i, (name, rate) in enumerate(self.sites.items())}
        with forward_hooks(self.model, hooks):
            yield self


def bayesian_uncertainty(
    model: nn.Module, images: torch.Tensor, layer: str, rate: float, seed: int, n_samples: int, where: str
) -> torch.Tensor:
    """`[N]` float64 Bayesian uncertainty, `mean_t |p_t|^2 - |mean_t p_t|^2` over `n_samples`
    passes with `PerImageDropout` masks (`p_t` the softmax output; `layer`, `rate`: the site for a
    model without dropout modules). Runs under the caller's grad mode: with autograd on, the
    gradient reaches `images` through every pass, the masks held fixed (EOT over the same masks)."""
    if n_samples < 1:
        raise TracekitError(f"{where}: n_samples must be at least 1, got {n_samples}")
    dropout = PerImageDropout(model, layer, rate, images, seed, where)
    total, squares = torch.zeros(()), torch.zeros(())  # 0 + x is x exactly: the sums start at the first pass
    with dropout.hooked():
        for draw in range(n_samples):  # one whole-batch pass per mask draw
            dropout.draw = draw
            probs = model(images).softmax(1).double()
            total = total.to(probs) + probs
            squares = squares.to(probs) + probs.square().sum(1)
    return squares / n_samples - (total / n_samples).square().sum(1)
