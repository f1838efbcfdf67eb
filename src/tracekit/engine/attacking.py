"""Running an attack over many images in batches on the device."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn

from ..progress import progress
from ..protocols import Attack


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy's global state (ART draws from it) and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def generate(
    attack: Attack,
    module: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    device: torch.device,
    seed: int,
    description: str,
) -> torch.Tensor:
    """Adversarial versions of `images` (on the CPU), one device batch at a time."""
    seed_everything(seed)
    out = []
    with progress(description, total=len(images)) as advance:
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(device)
            y = labels[start : start + batch_size].to(device)
            adv = attack.generate(module, x, y).detach()
            out.append(adv.clamp(0, 1).to("cpu", torch.float32))
            advance(len(x))
    return torch.cat(out) if out else images[:0].clone()
