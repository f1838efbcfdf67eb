"""Controls that ask whether a detector detects the attack or something simpler.

- Noise (`controls: [noise]`): every clean test image perturbed by random noise of the same
  size as the attack's perturbation of that image (sign noise with its L-inf norm, Gaussian
  noise with its L2 norm; made by `scoring.noisy_images`, scored in `evaluating`). A detector
  that flags such noise as often as the attack's adversarials is detecting noise, not attacks.
- Randomized model (`controls: [randomized-model]`, after Adebayo et al. 2018): every layer's
  weights re-initialized, cascading from the top layer down; the detector is fitted and
  calibrated again on that model and scores the same clean test images and adversarials. A
  detector whose AUC survives randomization does not depend on what the model learned.
- Transfer (learned detectors, `evaluation.transfer`): fitted on one attack's adversarials,
  tested on each other attack's.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def randomized_copy(module: nn.Module, seed: int) -> tuple[nn.Module, list[str]]:
    """A deep copy with every parameterized layer re-initialized, top layer first (cascading);
    the original is untouched. Returns the copy (on the module's device) and the names of the
    randomized layers. The new weights are drawn on the CPU, so that every process (a driver, an
    executor's workers) draws the same ones whatever its device."""
    device = next(module.parameters(), torch.zeros(0)).device
    clone = copy.deepcopy(module).cpu()
    layers = _layers(clone)
    state = torch.random.get_rng_state()
    try:
        for i, (_, layer) in enumerate(reversed(layers)):
            torch.manual_seed(seed + i)
            layer.reset_parameters()
    finally:
        torch.random.set_rng_state(state)
    return clone.to(device).eval(), [name for name, _ in reversed(layers)]


def randomized_layers(module: nn.Module) -> list[str]:
    """The names of the layers `randomized_copy` re-initializes, top layer first."""
    return [name for name, _ in reversed(_layers(module))]


def _layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        (name, m)
        for name, m in module.named_modules()
        if hasattr(m, "reset_parameters") and any(True for _ in m.parameters(recurse=False))
    ]
