"""Controls that ask whether a detector detects the attack or something simpler.

- Noise (`controls: [noise]`): every clean test image perturbed by random noise of the same
  size as the attack's perturbation of that image (sign noise with its L-inf norm, Gaussian
  noise with its L2 norm). A detector that flags such noise as often as the attack's
  adversarials is detecting noise, not attacks.
- Randomized model (`controls: [randomized-model]`, after Adebayo et al. 2018): every layer's
  weights re-initialized, cascading from the top layer down; the detector is fitted and
  calibrated again on that model and scores the same clean test images and adversarials. A
  detector whose AUC survives randomization does not depend on what the model learned.
- Transfer (learned detectors, `evaluation.transfer`): fitted on one attack's adversarials,
  tested on each other attack's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from .metrics import detection_metrics

ScoreFn = Callable[[torch.Tensor, str], np.ndarray]


def noise_like(
    originals: torch.Tensor, l2: torch.Tensor, linf: torch.Tensor, seed: int
) -> dict[str, torch.Tensor]:
    """Sign noise with each image's L-inf size and Gaussian noise with its L2 size, clipped to [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    shape = originals.shape
    signs = torch.randint(0, 2, shape, generator=gen).float() * 2 - 1
    gauss = torch.randn(shape, generator=gen)
    gauss = gauss / gauss.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (len(shape) - 1))
    scale = [-1, *[1] * (len(shape) - 1)]
    return {
        "sign": (originals + signs * linf.view(scale)).clamp(0, 1),
        "gaussian": (originals + gauss * l2.view(scale)).clamp(0, 1),
    }


def noise_metrics(
    clean_scores: np.ndarray,
    noisy: dict[str, torch.Tensor],
    threshold: float,
    score: ScoreFn,
    predict: Callable[[torch.Tensor], torch.Tensor],
    labels: torch.Tensor,
) -> dict[str, Any]:
    """Flag rate at the calibrated threshold and AUC of clean vs noisy, per noise kind."""
    out = {}
    for kind, images in noisy.items():
        scores = score(images, kind)
        out[kind] = {
            "flag_rate": float(np.mean(scores > threshold)),
            "auc": detection_metrics(clean_scores, scores, threshold)["auc"],
            "prediction_changed": float((predict(images) != labels).float().mean()),
        }
    return out


def randomized_copy(module: nn.Module, seed: int) -> tuple[nn.Module, list[str]]:
    """A deep copy with every parameterized layer re-initialized, top layer first (cascading);
    the original is untouched. Returns the copy and the names of the randomized layers."""
    clone = copy.deepcopy(module)
    layers = [
        (name, m) for name, m in clone.named_modules()
        if hasattr(m, "reset_parameters") and any(True for _ in m.parameters(recurse=False))
    ]
    state = torch.random.get_rng_state()
    try:
        for i, (_, layer) in enumerate(reversed(layers)):
            torch.manual_seed(seed + i)
            layer.reset_parameters()
    finally:
        torch.random.set_rng_state(state)
    return clone.eval(), [name for name, _ in reversed(layers)]
