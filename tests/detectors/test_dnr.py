"""DNR: its score is the combiner's top class score from the layer machines' scores (recomputed with
scikit-learn's SVCs), it detects FGSM on digits, its stand-in is the score with a gradient, its
state scores the same, and too few images per class are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import tracekit
from tracekit.errors import TracekitError
from tracekit.protocols import DifferentiableScore, StatefulDetector
from tracekit.testing import check_stand_in


@pytest.fixture(scope="module")
def fitted(correct_digits):
    model, images, labels = correct_digits
    detector = tracekit.create("detector", "dnr")
    detector.fit(model, images[:160])
    fgsm = tracekit.create("attack", "fgsm", eps=0.1, backend="native")
    test = torch.cat([images[160:200], fgsm.generate(model, images[160:200], labels[160:200])])
    return model, detector, test


def test_detects_fgsm_and_its_stand_in_is_the_score(fitted):
    model, detector, test = fitted
    scores = detector.score(model, test)
    auc = roc_auc_score(np.repeat([0, 1], 40), scores.numpy())
    assert auc > 0.6, auc
    assert isinstance(detector, DifferentiableScore) and isinstance(detector, StatefulDetector)
    torch.testing.assert_close(check_stand_in(detector, model, test[:16], rtol=1e-9, atol=1e-9), scores[:16])


def test_the_score_is_the_combiners_top_class_score(fitted):
    model, detector, test = fitted
    from tracekit.detectors.layers import flatten, layer_features

    with torch.no_grad():
        activations = layer_features(model, test, detector.layers_, flatten, "test")[0]
    layer_scores = np.concatenate(
        [
            np.stack([m.decision_torch(a).numpy() for m in machines], 1)
            for a, machines in zip(activations, detector.per_layer)
        ],
        1,
    )
    top = np.stack([m.decision_torch(torch.from_numpy(layer_scores)).numpy() for m in detector.combiner], 1).max(1)
    np.testing.assert_allclose(detector.score(model, test).numpy(), -top, rtol=1e-9)
    assert len(detector.per_layer) == 3 and len(detector.combiner) == len(detector.classes) >= 2


def test_the_state_scores_the_same(fitted):
    model, detector, test = fitted
    fresh = tracekit.create("detector", "dnr")
    fresh.load_state_dict(detector.state_dict())
    torch.testing.assert_close(fresh.score(model, test), detector.score(model, test), rtol=0, atol=0)


def test_too_few_images_per_class_are_refused(correct_digits):
    model, images, _ = correct_digits
    with pytest.raises(TracekitError, match="each of two classes in each half"):
        tracekit.create("detector", "dnr").fit(model, images[:6])
