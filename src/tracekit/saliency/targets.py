"""Checks every saliency method shares: float images, and target classes against the logits.

Public for plugin authors: `from tracekit.saliency import check_images, target_classes`.
"""

from __future__ import annotations

from typing import Any

import torch

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
