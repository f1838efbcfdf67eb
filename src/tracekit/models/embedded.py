"""What the embedded models (`digits-cnn`, `digit-scenes-cnn`) share: deterministic training on
first use and a cache of the trained weights.

Training is deterministic: fixed seeds, a seeded shuffle, one CPU thread (`threads.applied(1)`:
the result does not depend on the machine's thread count, and small convolutions run faster than
with threads competing for busy cores), Adam with a one-cycle schedule, a progress bar. The weights, with the
training data's normalization folded in as buffers, are cached under
`cache_dir()/models/<name>-<recipe>.pt`; a recipe version is bumped whenever a model's
architecture or its training changes. Other library versions may train slightly different
weights from the same recipe.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..cache import atomic_torch_save, cache_dir
from ..errors import TracekitError
from ..progress import progress
from ..threads import applied
from .normalize import Normalized
from .weights import load_weights


@dataclass(frozen=True)
class Recipe:
    """How an embedded model is trained: `epochs` passes, batches of `batch_size`, Adam with a
    one-cycle schedule peaking at `max_lr`, seeded by `seed`."""

    epochs: int
    batch_size: int
    max_lr: float
    seed: int = 0


def train(
    name: str,
    build: Callable[[], nn.Module],
    data: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    recipe: Recipe,
) -> Normalized:
    """A freshly trained, normalized `build()` (deterministic: the same weights on every run).

    `data(epoch)` gives that epoch's images `[N,C,H,W]` in [0, 1] and labels (the same every
    epoch, or fresh samples of the same size); the normalization is the first epoch's mean and
    standard deviation.
    """
    images, labels = data(0)
    with applied(1), torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(recipe.seed)
        model = Normalized(build(), [images.mean().item()], [images.std().item()])
        shuffle = torch.Generator().manual_seed(recipe.seed)
        batches = -(-len(labels) // recipe.batch_size)
        optimizer = torch.optim.Adam(model.parameters(), lr=recipe.max_lr)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=recipe.max_lr, total_steps=recipe.epochs * batches
        )
        model.train()
        with progress(f"training {name}", total=recipe.epochs * batches, unit="batch", keep=True) as advance:
            for epoch in range(recipe.epochs):
                if epoch:
                    images, labels = data(epoch)
                for batch in torch.randperm(len(labels), generator=shuffle).split(recipe.batch_size):
                    loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                    advance(1)
    return model.eval()


def accuracy(module: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of `module` on `images` (in batches of 512)."""
    with torch.no_grad():
        right = sum(
            int((module(x).argmax(1) == y).sum()) for x, y in zip(images.split(512), labels.split(512), strict=True)
        )
    return right / max(len(labels), 1)


def weights_path(name: str, recipe_version: str) -> Path:
    """Where an embedded model's trained weights are cached."""
    return cache_dir() / "models" / f"{name}-{recipe_version}.pt"


def load(build: Callable[[], nn.Module], path: Path, where: str) -> tuple[Normalized, dict[str, str]]:
    """A `Normalized(build())` with the weights (and normalization) of a state dict file."""
    model = Normalized(build(), [0.0], [1.0])
    return model.eval(), load_weights(model, path, where)


def load_cached(
    build: Callable[[], nn.Module], path: Path, where: str, trained: Callable[[], Normalized]
) -> tuple[Normalized, dict[str, str]]:
    """The cached model, trained (`trained()`) and cached first if the file is missing or unusable."""
    if path.is_file():
        try:
            return load(build, path, where)
        except TracekitError as exc:
            warnings.warn(f"cached weights are unusable, retraining: {exc}", stacklevel=3)
    atomic_torch_save(trained().state_dict(), path)
    return load(build, path, where)
