"""Fixtures shared by the detector tests: one torch thread, and the embedded digits model with the
test digits it classifies correctly."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

import tracekit
from tracekit.datasets.digits import digits_arrays
from tracekit.threads import applied


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Small convolutions on a shared 2-core machine run fastest on one thread."""
    with applied(1):
        yield


@pytest.fixture(scope="module")
def correct_digits() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """digits-cnn and the test digits it classifies correctly, with their labels."""
    model = tracekit.create("model", "digits-cnn").module
    _, images, labels = digits_arrays("test")
    with torch.no_grad():
        right = model(images).argmax(1) == labels
    return model, images[right], labels[right]
