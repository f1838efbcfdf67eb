"""MagNet's detectors (`magnet`) on the embedded digits model: the auto-encoder's training is
deterministic per seed, the detectors equal independent recomputations (NumPy for the
reconstruction errors, SciPy's Jensen-Shannon distance for the divergences), the combined score
separates clean from FGSM digits, its stand-in is the score with a useful gradient, its fitted
state carries over, and bad input is refused with one clear message."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import softmax
from sklearn.metrics import roc_auc_score

import tracekit
from tracekit.errors import SpecError, TracekitError
from tracekit.protocols import DifferentiableScore, StatefulDetector
from tracekit.testing import check_stand_in

N_FIT, N_TEST = 150, 100
TEMPERATURES = [10.0, 40.0]  # the defaults, the paper's CIFAR-10 setting
STEP = 0.01  # one L-inf step in [0, 1] pixels


@pytest.fixture(scope="module")
def digits(correct_digits) -> dict[str, Any]:
    """digits-cnn, `N_FIT` clean fit digits, `N_TEST` held-out clean digits and their FGSM (0.1)
    adversarials."""
    model, images, labels = correct_digits
    held_out, held_labels = images[N_FIT : N_FIT + N_TEST], labels[N_FIT : N_FIT + N_TEST]
    adversarial = tracekit.create("attack", "fgsm", eps=0.1, backend="native").generate(model, held_out, held_labels)
    return {"model": model, "fit": images[:N_FIT], "clean": held_out, "adversarial": adversarial}


@pytest.fixture(scope="module")
def fitted(digits: dict[str, Any]) -> Any:
    """The detector with its defaults, fitted on the clean fit digits."""
    detector = tracekit.create("detector", "magnet")
    detector.fit(digits["model"], digits["fit"])
    return detector


def _weights(detector: Any) -> dict[str, torch.Tensor]:
    return detector.autoencoder.state_dict()


def test_training_is_deterministic_per_seed(digits: dict[str, Any]) -> None:
    model, fit, test = digits["model"], digits["fit"][:64], digits["clean"][:16]
    runs = []
    for seed in (0, 0, 1):
        detector = tracekit.create("detector", "magnet", epochs=3, seed=seed)
        global_state = torch.get_rng_state()
        detector.fit(model, fit)
        assert torch.equal(torch.get_rng_state(), global_state), "fit drew from torch's global generator"
        runs.append((_weights(detector), detector.score(model, test)))
    (first, first_scores), (again, again_scores), (other, _) = runs
    assert all(torch.equal(first[k], again[k]) for k in first), "the same seed gave other weights"
    assert torch.equal(first_scores, again_scores)
    assert not all(torch.equal(first[k], other[k]) for k in first), "another seed gave the same weights"


def _recomputed(detector: Any, model: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    """`[N, detectors]` raw scores recomputed in NumPy/SciPy from the auto-encoder's output and the
    model's logits: mean |x - AE(x)|^p for p = 1, 2, then SciPy's Jensen-Shannon distance squared
    (natural log, as the paper's `scipy.stats.entropy`) at each temperature."""
    with torch.no_grad():
        reconstructed = detector.autoencoder(images)
        logits = model(images).double().numpy()
        logits_reconstructed = model(reconstructed).double().numpy()
    x, r = images.double().numpy(), reconstructed.double().numpy()
    columns = [np.mean(np.abs(x - r) ** p, axis=(1, 2, 3)) for p in (1, 2)]
    for t in TEMPERATURES:
        p, q = softmax(logits / t, axis=1), softmax(logits_reconstructed / t, axis=1)
        columns.append(np.array([jensenshannon(a, b) ** 2 for a, b in zip(p, q)]))
    return np.stack(columns, 1)


def test_detectors_and_score_equal_independent_recomputations(fitted: Any, digits: dict[str, Any]) -> None:
    model, test = digits["model"], torch.cat([digits["clean"][:20], digits["adversarial"][:20]])
    expected = _recomputed(fitted, model, test)
    with torch.no_grad():
        got = fitted.detector_scores(model, test).numpy()
    np.testing.assert_allclose(got[:, :2], expected[:, :2], rtol=1e-12)
    np.testing.assert_allclose(got[:, 2:], expected[:, 2:], rtol=1e-10)
    assert (expected[:, 2:] > 0).all()
    # The standardization: means and population standard deviations of the clean fit scores.
    clean = _recomputed(fitted, model, digits["fit"])
    np.testing.assert_allclose(fitted.means, clean.mean(0), rtol=1e-9)
    np.testing.assert_allclose(fitted.stds, clean.std(0), rtol=1e-9)
    combined = ((expected - clean.mean(0)) / clean.std(0)).max(1)
    np.testing.assert_allclose(fitted.score(model, test).numpy(), combined, rtol=1e-9, atol=1e-9)


def test_separates_clean_from_fgsm_digits(fitted: Any, digits: dict[str, Any]) -> None:
    model = digits["model"]
    clean, adversarial = fitted.score(model, digits["clean"]), fitted.score(model, digits["adversarial"])
    assert clean.dtype == torch.float64 and clean.shape == (N_TEST,)
    auc = roc_auc_score([0] * N_TEST + [1] * N_TEST, torch.cat([clean, adversarial]).numpy())
    print(f"magnet AUC, clean vs FGSM (eps 0.1) held-out digits: {auc:.4f}")
    assert auc > 0.5


def test_stand_in_is_the_score_and_its_gradient_lowers_it(fitted: Any, digits: dict[str, Any]) -> None:
    model, images = digits["model"], torch.cat([digits["clean"][:20], digits["adversarial"][:20]])
    assert isinstance(fitted, DifferentiableScore)
    assert len(images) <= fitted.batch_size  # `score` sees the same single batch as the stand-in
    values = check_stand_in(fitted, model, images, rtol=1e-9, atol=1e-9, step=STEP)
    assert values.shape == (len(images),) and values.dtype == torch.float64


def test_state_round_trip_gives_identical_scores(fitted: Any, digits: dict[str, Any]) -> None:
    model, test = digits["model"], torch.cat([digits["clean"][:20], digits["adversarial"][:20]])
    assert isinstance(fitted, StatefulDetector)
    buffer = io.BytesIO()
    torch.save(fitted.state_dict(), buffer)
    buffer.seek(0)
    fresh = tracekit.create("detector", "magnet", seed=7)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(fresh.score(model, test), fitted.score(model, test))


def test_odd_sizes_are_refused_before_training(digits: dict[str, Any]) -> None:
    model = digits["model"]
    detector = tracekit.create("detector", "magnet")
    with pytest.raises(TracekitError) as caught:
        detector.fit(model, digits["fit"][:8, :, :31, :])
    message = str(caught.value)
    assert "\n" not in message and "even" in message and "31x32" in message
    assert detector.autoencoder is None  # refused before training


def test_a_non_positive_temperature_is_a_spec_error() -> None:
    for temperatures in ([0], [-1.0], [1.0] * 5):
        with pytest.raises(SpecError):
            tracekit.create("detector", "magnet", temperatures=temperatures)
