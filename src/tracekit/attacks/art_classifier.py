"""Running adversarial-robustness-toolbox (ART) attacks on a torch model, leaving the model as it was.

ART's `PyTorchClassifier` changes the module it wraps: its constructor calls `.to(device)` with
`device = cuda:{torch.cuda.current_device()}` for `device_type="gpu"` (which would move a model on
`cuda:1` to `cuda:0`), and every `predict`/`loss_gradient` calls `.train(False)` on it, zeroes the
parameters' `.grad` (`zero_grad()`, i.e. sets them to None) and back-propagates into them. So the
classifier is built with the model's own CUDA device current, and every ART call runs inside
`model_untouched`, which freezes the parameters (only the input gradient is needed, and it is cheaper)
and restores each module's train flag, each parameter's `requires_grad` and `.grad` afterwards.
"""

from __future__ import annotations

import abc
import contextlib
import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..errors import TracekitError

if TYPE_CHECKING:
    from art.estimators.classification import PyTorchClassifier


@contextlib.contextmanager
def model_untouched(model: nn.Module) -> Iterator[None]:
    """Freeze `model`'s parameters for the block; restore train flags, `requires_grad` and `.grad` after."""
    modes = [(m, m.training) for m in model.modules()]
    params = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    for p, _, _ in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
        for p, requires_grad, grad in params:
            p.requires_grad_(requires_grad)
            p.grad = grad


def model_device(model: nn.Module) -> torch.device:
    """The one device of `model`'s parameters and buffers (CPU if it has none); float32 required by ART."""
    tensors = list(itertools.chain(model.parameters(), model.buffers()))
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        raise TracekitError(
            f"ART attacks need the model on one device, but its tensors are on {sorted(map(str, devices))}; "
            "move it with model.to(device)"
        )
    dtypes = {p.dtype for p in tensors if p.is_floating_point()} - {torch.float32}
    if dtypes:
        raise TracekitError(
            f"ART attacks compute in float32, but the model has {sorted(map(str, dtypes))} tensors; "
            "convert it with model.float()"
        )
    return devices.pop() if devices else torch.device("cpu")


def art_classifier(model: nn.Module, images: torch.Tensor, num_classes: int | None = None) -> PyTorchClassifier:
    """`model` as ART's `PyTorchClassifier` for inputs shaped like `images[0]` in [0, 1], on the model's device.

    `num_classes` defaults to the width of the model's output on one image.
    """
    from art.estimators.classification import PyTorchClassifier

    device = model_device(model)
    with model_untouched(model):
        if num_classes is None:
            model.eval()
            with torch.no_grad():
                num_classes = int(model(images[:1].to(device=device, dtype=torch.float32)).shape[-1])
        # ART moves the model to cuda:{current_device()}; make that the model's own device.
        with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
            return PyTorchClassifier(
                model=model,
                loss=nn.CrossEntropyLoss(),
                input_shape=tuple(images.shape[1:]),
                nb_classes=num_classes,
                clip_values=(0.0, 1.0),
                device_type="gpu" if device.type == "cuda" else "cpu",
            )


class ArtAttack(abc.ABC):
    """Base of the ART-backed attacks: `generate` per the `Attack` protocol, through `build(classifier)`.

    The classifier and the ART attack are built once per (model, input shape, device) and reused for
    every batch of that model (one slot: a new model replaces the last one).
    """

    def __init__(self) -> None:
        self._cached: tuple[nn.Module, tuple[int, ...], torch.device, Any] | None = None

    @abc.abstractmethod
    def build(self, classifier: PyTorchClassifier) -> Any:
        """The ART evasion attack on `classifier`."""

    def _art_attack(self, model: nn.Module, images: torch.Tensor) -> Any:
        shape, device = tuple(images.shape[1:]), model_device(model)
        cached = self._cached
        if cached is None or cached[0] is not model or cached[1:3] != (shape, device):
            cached = self._cached = (model, shape, device, self.build(art_classifier(model, images)))
        return cached[3]

    def generate(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Adversarial versions of `images` (in [0, 1]; same shape, device and dtype)."""
        attack = self._art_attack(model, images)
        x = images.detach().to("cpu", torch.float32).numpy().copy()  # never a view of the caller's images
        y = labels.detach().cpu().numpy().astype(np.int64)
        with model_untouched(model), torch.enable_grad():  # callers may be inside torch.no_grad()
            adversarial = attack.generate(x=x, y=y)
        return torch.from_numpy(np.asarray(adversarial, dtype=np.float32)).to(images.device, images.dtype)
