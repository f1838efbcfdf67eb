"""NIC: its probes are scikit-learn's, its score the last one-class SVM's decision over the
invariants' decisions, it detects FGSM on digits, its stand-in is the score with a gradient, its
state scores the same, and bad input is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

import tracekit
from tracekit.detectors.nic import LinearProbe
from tracekit.errors import SpecError, TracekitError
from tracekit.protocols import DifferentiableScore, StatefulDetector
from tracekit.testing import check_stand_in


@pytest.fixture(scope="module")
def fitted(correct_digits):
    model, images, labels = correct_digits
    detector = tracekit.create("detector", "nic")
    detector.fit(model, images[:160])
    fgsm = tracekit.create("attack", "fgsm", eps=0.1, backend="native")
    test = torch.cat([images[160:200], fgsm.generate(model, images[160:200], labels[160:200])])
    return model, detector, test


@pytest.mark.parametrize("classes", [2, 4])
def test_the_probe_is_scikit_learns_softmax_regression(classes):
    rng = np.random.default_rng(classes)
    x = rng.normal(0, 1, (80, 5)) * [1, 5, 0.2, 1, 3]
    y = rng.integers(0, classes, 80)
    probe = LinearProbe().fit(x, y)
    scaled = (x - x.mean(0)) / x.std(0)
    reference = LogisticRegression(max_iter=1000).fit(scaled, y)
    np.testing.assert_allclose(
        probe.probabilities(torch.from_numpy(x)).numpy(), reference.predict_proba(scaled), atol=1e-9
    )


def test_detects_fgsm_and_its_stand_in_is_the_score(fitted):
    model, detector, test = fitted
    scores = detector.score(model, test)
    auc = roc_auc_score(np.repeat([0, 1], 40), scores.numpy())
    assert auc > 0.6, auc
    assert isinstance(detector, DifferentiableScore) and isinstance(detector, StatefulDetector)
    assert len(detector.values) == 4 and len(detector.provenance) == 3
    torch.testing.assert_close(check_stand_in(detector, model, test[:16], rtol=1e-9, atol=1e-9), scores[:16])


def test_the_state_scores_the_same(fitted):
    model, detector, test = fitted
    fresh = tracekit.create("detector", "nic")
    fresh.load_state_dict(detector.state_dict())
    torch.testing.assert_close(fresh.score(model, test), detector.score(model, test), rtol=0, atol=0)


def test_bad_input_is_refused(correct_digits):
    model, images, _ = correct_digits
    with pytest.raises(TracekitError, match="needs at least 8 clean fit images"):
        tracekit.create("detector", "nic").fit(model, images[:6])
    with pytest.raises(SpecError, match="layers"):
        tracekit.create("detector", "nic", layers=["model.features.9"])
    with pytest.raises(TracekitError, match="no layer 'features.9'"):
        tracekit.create("detector", "nic", layers=["features.9", "model.classifier.1"]).fit(model, images[:40])
