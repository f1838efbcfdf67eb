"""multiLID: the growth-rate terms against the formula on fixed points, the forest evaluated from its
arrays as scikit-learn's `predict_proba`, the detector on digits, its state, and no stand-in."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier

import tracekit
from tracekit.detectors.forest import ForestArrays
from tracekit.detectors.multilid import growth_rates
from tracekit.errors import TracekitError
from tracekit.protocols import DifferentiableScore, StatefulDetector


def test_growth_rates_are_the_lid_terms_on_fixed_points():
    reference = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, -4.0], [0.0, 0.0]])
    point = torch.zeros(1, 2)
    got = growth_rates(point, reference, k=4, exclude=torch.tensor([4]))  # itself (the origin) left out
    r = np.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(got.numpy()[0], -np.log(r[:-1] / r[-1]))
    lid = -1 / np.mean(np.log(r / r[-1]))  # the MLE the terms unfold
    assert lid == pytest.approx(4 / got.sum().item())


def test_the_forest_is_scikit_learns_predict_proba():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (60, 6)), rng.normal(0.7, 1.5, (40, 6))])
    y = np.repeat([0, 1], [60, 40])
    ours = ForestArrays().fit(x, y, "test", trees=25, seed=3)
    reference = RandomForestClassifier(n_estimators=25, class_weight="balanced", random_state=3).fit(x, y)
    query = rng.normal(0.3, 1.3, (50, 6))
    np.testing.assert_allclose(ours.probability(torch.from_numpy(query)).numpy(), reference.predict_proba(query)[:, 1])
    fresh = ForestArrays().load_state_dict(ours.state_dict())
    torch.testing.assert_close(fresh.probability(torch.from_numpy(query)), ours.probability(torch.from_numpy(query)))


def test_detects_fgsm_on_digits_and_keeps_its_state(correct_digits):
    model, images, labels = correct_digits
    fgsm = tracekit.create("attack", "fgsm", eps=0.1, backend="native")
    fit, test = slice(0, 100), slice(100, 140)
    detector = tracekit.create("detector", "multilid", k=10, batch_size=50, trees=50)
    detector.fit(model, images[fit], fgsm.generate(model, images[fit], labels[fit]))
    clean, attacked = (
        detector.score(model, images[test]),
        detector.score(model, fgsm.generate(model, images[test], labels[test])),
    )
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(np.repeat([0, 1], 40), torch.cat([clean, attacked]).numpy())
    assert auc > 0.6, auc  # 0.71 measured: 100 fit digits are few for a forest
    assert isinstance(detector, StatefulDetector) and not isinstance(detector, DifferentiableScore)
    fresh = tracekit.create("detector", "multilid", k=10, batch_size=50, trees=50)
    fresh.load_state_dict(detector.state_dict())
    torch.testing.assert_close(fresh.score(model, images[test]), clean, rtol=0, atol=0)


def test_bad_input_is_refused(correct_digits):
    model, images, _ = correct_digits
    with pytest.raises(TracekitError, match="k=20 must be smaller than batch_size=20"):
        tracekit.create("detector", "multilid", k=20, batch_size=20)
    detector = tracekit.create("detector", "multilid")
    with pytest.raises(TracekitError, match="k=20 nearest neighbours need more than 20 clean fit images"):
        detector.fit(model, images[:15], images[15:20])
    with pytest.raises(TracekitError, match="no layer 'features.x'"):
        tracekit.create("detector", "multilid", layers=["features.x"]).fit(model, images[:40], images[40:50])
