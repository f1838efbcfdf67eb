"""The embedded model: a small VGG-style CNN for the `digits` dataset, trained on first use.

Training is deterministic (fixed seeds, a seeded shuffle, one CPU thread) and takes seconds. The
weights, with the training data's normalization folded in as buffers, are cached under
`cache_dir()/models/digits-cnn-<RECIPE_VERSION>.pt` and reused; bump `RECIPE_VERSION` whenever
the architecture or the training recipe changes.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from ..cache import atomic_torch_save, cache_dir
from ..datasets.digits import IMAGE_SIZE, digits_arrays
from ..errors import TracekitError
from ..progress import progress
from ..protocols import LoadedModel
from .files import load_weights
from .normalize import InputSpec, Normalized, loaded_model

RECIPE_VERSION = "v1"
CLASS_NAMES = [str(d) for d in range(10)]
SEED = 0
EPOCHS = 8
BATCH_SIZE = 32
MAX_LR = 5e-3
WHERE = "model 'digits-cnn'"


class DigitsCNN(nn.Module):
    """conv8-conv8-pool-conv16-conv16-pool-conv32-pool, then 512-64-10 (ReLU throughout)."""

    def __init__(self, num_classes: int = len(CLASS_NAMES)) -> None:
        super().__init__()

        def conv(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *conv(IMAGE_SIZE[0], 8), *conv(8, 8), nn.MaxPool2d(2),
            *conv(8, 16), *conv(16, 16), nn.MaxPool2d(2),
            *conv(16, 32), nn.MaxPool2d(2),
        )  # fmt: skip
        side = IMAGE_SIZE[1] // 8
        self.classifier = nn.Sequential(
            nn.Linear(32 * side * side, 64), nn.ReLU(inplace=True), nn.Linear(64, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one CPU thread: the result does not depend on the machine's thread count,
    and small convolutions run faster than with threads competing for busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train() -> Normalized:
    """A freshly trained, normalized `DigitsCNN` (deterministic: same weights on every run)."""
    _, images, labels = digits_arrays("train")
    with _one_thread(), torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(SEED)
        model = Normalized(DigitsCNN(), [images.mean().item()], [images.std().item()])
        shuffle = torch.Generator().manual_seed(SEED)
        batches = -(-len(labels) // BATCH_SIZE)
        optimizer = torch.optim.Adam(model.parameters(), lr=MAX_LR)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=MAX_LR, total_steps=EPOCHS * batches)
        model.train()
        with progress("training digits-cnn", total=EPOCHS * batches, unit="batch", keep=True) as advance:
            for _ in range(EPOCHS):
                for batch in torch.randperm(len(labels), generator=shuffle).split(BATCH_SIZE):
                    loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                    advance(1)
    return model.eval()


def accuracy(module: nn.Module, split: str = "test") -> float:
    """Top-1 accuracy of `module` on a digits split."""
    _, images, labels = digits_arrays(split)
    with torch.no_grad():
        return (module(images).argmax(1) == labels).float().mean().item()


def weights_path() -> Path:
    """Where the trained weights are cached."""
    return cache_dir() / "models" / f"digits-cnn-{RECIPE_VERSION}.pt"


def _load(path: Path) -> tuple[Normalized, dict[str, str]]:
    """A `Normalized(DigitsCNN)` with the weights (and normalization) of a state dict file."""
    model = Normalized(DigitsCNN(), [0.0], [1.0])
    return model.eval(), load_weights(model, path, WHERE)


def _load_cached() -> tuple[Normalized, dict[str, str]]:
    """The cached model, trained and cached first if the file is missing or unusable."""
    path = weights_path()
    if path.is_file():
        try:
            return _load(path)
        except TracekitError as exc:
            warnings.warn(f"cached weights are unusable, retraining: {exc}", stacklevel=3)
    atomic_torch_save(train().state_dict(), path)
    return _load(path)


def load_model(weights: Path | None) -> LoadedModel:
    """The model of the factory `digits_cnn` (`tracekit.models.factories`): the cached one, trained
    first if need be, or the one in `weights`."""
    model, info = _load_cached() if weights is None else _load(weights)
    mean, std = (tuple(t.flatten().tolist()) for t in (model.mean, model.std))
    spec = InputSpec(IMAGE_SIZE, mean=mean, std=std, crop_pct=1.0)
    info = {"source": "digits-cnn", "recipe": RECIPE_VERSION, **info, "test_accuracy": accuracy(model)}
    return loaded_model(model.model, spec, CLASS_NAMES, None, info)
