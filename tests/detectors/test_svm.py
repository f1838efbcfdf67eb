"""`RBFMachine`: the fitted scikit-learn machine's decision function, in torch, with a gradient."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, OneClassSVM

from tracekit.detectors.svm import RBFMachine
from tracekit.errors import TracekitError


def rows(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(0, 1, (40, 5)), rng.normal(1.5, 2, (30, 5))]) * [1, 10, 0.1, 1, 3]
    return x, np.repeat([0, 1], [40, 30])


@pytest.mark.parametrize("one_class", [False, True], ids=["svc", "one-class"])
def test_the_decision_is_scikit_learns(one_class):
    x, y = rows(0)
    machine = RBFMachine().fit(x, None if one_class else y, "test")
    scaler = StandardScaler().fit(x)
    reference = (
        OneClassSVM(kernel="rbf", gamma=machine.gamma, nu=0.1)
        if one_class
        else SVC(kernel="rbf", gamma="scale", class_weight="balanced")
    ).fit(scaler.transform(x), *(() if one_class else (y,)))
    query = rows(1)[0]
    expected = reference.decision_function(scaler.transform(query))
    np.testing.assert_allclose(machine.decision_torch(torch.from_numpy(query)).numpy(), expected, rtol=1e-9, atol=1e-9)
    saved = io.BytesIO()
    torch.save(machine.state_dict(), saved)
    saved.seek(0)
    fresh = RBFMachine().load_state_dict(torch.load(saved, weights_only=True))
    torch.testing.assert_close(
        fresh.decision_torch(torch.from_numpy(query)), machine.decision_torch(torch.from_numpy(query))
    )
    points = torch.from_numpy(query).requires_grad_(True)
    (grad,) = torch.autograd.grad(machine.decision_torch(points).sum(), points)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_too_few_of_a_kind_is_refused():
    x, y = rows(0)
    with pytest.raises(TracekitError, match="at least 2 fit images of each kind"):
        RBFMachine().fit(x[:41], y[:41], "detector 'x'")
