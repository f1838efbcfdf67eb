"""Fixtures shared by the attack tests: a tiny CNN trained briefly on a separable problem."""

from __future__ import annotations

import pytest
import torch

from tracekit.testing import tiny_model, train_briefly


def _separable(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise in [0.25, 0.75] plus a brighter band of rows whose position is the class."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=gen)
    images = 0.25 + 0.5 * torch.rand(n, 1, 16, 16, generator=gen)
    for c in range(3):
        images[labels == c, :, 5 * c : 5 * c + 5, :] += 0.15
    return images.clamp(0, 1), labels


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    """The tiny CNN trained for a few steps on `_separable` images, so attacks have something to flip."""
    images, labels = _separable(128, seed=0)
    return train_briefly(tiny_model().module, images, labels, steps=20)


@pytest.fixture(scope="module")
def batch(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Correctly classified images, all in [0.25, 0.9], as the engine would pass them."""
    images, labels = _separable(160, seed=1)
    with torch.no_grad():
        right = model(images).argmax(1) == labels
    assert right.sum() >= 100, "the test model did not learn the synthetic problem"
    return images[right][:100], labels[right][:100]


@pytest.fixture(scope="module")
def digits() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """digits-cnn and 30 correctly classified test digits (the embedded default)."""
    import tracekit

    model = tracekit.create("model", "digits-cnn")
    dataset = tracekit.create("dataset", "digits", split="test", limit=80)
    images, labels = zip(*[(x, y) for _, x, y in dataset.samples(model)])
    x, y = torch.stack(images), torch.tensor(labels)
    with torch.no_grad():
        right = model.module(x).argmax(1) == y
    return model.module.eval(), x[right][:30], y[right][:30]


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for the adaptive attacks' tests: a step is hundreds of small ops, and with
    two threads each waits for the second core (many times slower on a shared 2-core machine)."""
    from tracekit.threads import applied

    with applied(1):
        yield


@pytest.fixture(scope="module")
def detector():
    """The paper's detector (guided backprop, mean 3x3 local entropy)."""
    import tracekit

    return tracekit.create("detector", "feature-response")


@pytest.fixture(scope="module")
def attacked_digits():
    """digits-cnn, 24 correctly classified test images to attack and 48 other clean images."""
    import tracekit
    from tracekit.datasets.digits import digits_arrays

    model = tracekit.create("model", "digits-cnn").module
    _, images, labels = digits_arrays("test")
    with torch.no_grad():
        right = model(images).argmax(1) == labels
    images, labels = images[right], labels[right]
    return model, images[:24], labels[:24], images[24:72]
