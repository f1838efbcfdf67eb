"""The `nss` detector: BRISQUE features against SciPy and the reference's grid-nearest estimators,
then the fitted SVM on digits and its differentiable stand-in."""

from __future__ import annotations

import io

import numpy as np
import pytest
import scipy.ndimage
import scipy.special
import scipy.stats
import torch
from sklearn.metrics import roc_auc_score

import tracekit
from tracekit.detectors.nss import (
    NaturalSceneStatistics,
    aggd_parameters,
    brisque_features,
    gaussian_window,
    ggd_shape,
    mscn,
)
from tracekit.errors import TracekitError
from tracekit.testing import check_stand_in

GRID = np.arange(200, 10001) / 1000  # the reference's 0.2:0.001:10


def reference_ggd(x: np.ndarray) -> tuple[float, float]:
    """The BRISQUE reference's `estimateggdparam`: the grid value nearest in rho."""
    rho = scipy.special.gamma(1 / GRID) * scipy.special.gamma(3 / GRID) / scipy.special.gamma(2 / GRID) ** 2
    variance = np.mean(x**2)
    return float(GRID[np.argmin(np.abs(variance / np.mean(np.abs(x)) ** 2 - rho))]), float(variance)


def reference_aggd(x: np.ndarray) -> np.ndarray:
    """The BRISQUE reference's `estimateaggdparam` and mean: alpha, eta, left and right variances."""
    g = scipy.special.gamma
    r_gam = g(2 / GRID) ** 2 / (g(1 / GRID) * g(3 / GRID))
    left, right = np.sqrt(np.mean(x[x < 0] ** 2)), np.sqrt(np.mean(x[x > 0] ** 2))
    gamma_hat = left / right
    r_hat = np.mean(np.abs(x)) ** 2 / np.mean(x**2)
    r_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    alpha = GRID[np.argmin((r_gam - r_norm) ** 2)]
    eta = (right - left) * g(2 / alpha) / g(1 / alpha) * np.sqrt(g(1 / alpha) / g(3 / alpha))
    return np.array([alpha, eta, left**2, right**2])


def test_mscn_matches_scipy():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (3, 20, 27))
    images[1, 5:12, 3:20] = 40.0  # a flat patch
    offsets = np.arange(7) - 3
    g = np.exp(-(offsets**2) / (2 * (7 / 6) ** 2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    np.testing.assert_allclose(np.outer(*[gaussian_window(torch.device("cpu")).numpy()] * 2), window, rtol=1e-12)
    expected = []
    for image in images:
        mu = scipy.ndimage.correlate(image, window, mode="reflect")
        sigma = np.sqrt(np.abs(scipy.ndimage.correlate(image**2, window, mode="reflect") - mu**2))
        expected.append((image - mu) / (sigma + 1))
    got = mscn(torch.from_numpy(images)[:, None])[:, 0].numpy()
    np.testing.assert_allclose(got, np.stack(expected), rtol=0, atol=1e-9)


@pytest.mark.parametrize("alpha", [0.8, 2.0])
def test_ggd_recovers_the_shape_of_gennorm_samples(alpha):
    samples = scipy.stats.gennorm.rvs(alpha, scale=0.7, size=20000, random_state=1)
    shape, variance = ggd_shape(torch.from_numpy(samples)[None])
    assert abs(shape.item() - alpha) < 0.05
    assert variance.item() == pytest.approx(np.mean(samples**2), rel=1e-12)


def fixed_products() -> np.ndarray:
    """Rows of asymmetric data: horizontal products of a fixed image's MSCN, and skewed GGD samples."""
    rng = np.random.default_rng(2)
    m = mscn(torch.from_numpy(rng.uniform(0, 255, (1, 1, 40, 40))).cumsum(-1))[0, 0].numpy()
    products = (m[:, :-1] * m[:, 1:]).ravel()
    skewed = scipy.stats.gennorm.rvs(0.9, size=products.size, random_state=3)
    return np.stack([products, np.where(skewed < 0, 1.6 * skewed, 0.6 * skewed)])


def test_aggd_and_ggd_agree_with_the_grid_nearest_reference():
    rows = fixed_products()
    got = aggd_parameters(torch.from_numpy(rows)).numpy()
    for row, params in zip(rows, got):
        expected = reference_aggd(row)
        assert abs(params[0] - expected[0]) <= 0.001  # interpolated vs nearest grid value
        np.testing.assert_allclose(params[1], expected[1], rtol=2e-3)
        np.testing.assert_allclose(params[2:], expected[2:], rtol=1e-12)
        shape, variance = ggd_shape(torch.from_numpy(row)[None])
        alpha, expected_variance = reference_ggd(row)
        assert abs(shape.item() - alpha) <= 0.001 and variance.item() == pytest.approx(expected_variance)


def test_features_of_gray_and_rgb_images(correct_digits):
    _, images, _ = correct_digits
    gray = brisque_features(images[:6])
    assert gray.shape == (6, 36) and gray.dtype == torch.float64 and torch.isfinite(gray).all()
    rgb = torch.rand(4, 3, 24, 40, generator=torch.Generator().manual_seed(0))
    colour = brisque_features(rgb)
    assert colour.shape == (4, 36) and torch.isfinite(colour).all()
    luma = (rgb.double() * torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64).view(1, 3, 1, 1)).sum(1, True)
    torch.testing.assert_close(colour, brisque_features(luma), rtol=1e-12, atol=1e-12)


def test_bad_images_are_refused():
    with pytest.raises(TracekitError, match=r"at least 16x16 pixels \(8x8 after downsampling by 2\), got 15x32"):
        brisque_features(torch.rand(2, 1, 15, 32))
    with pytest.raises(TracekitError, match="gray or RGB"):
        brisque_features(torch.rand(2, 2, 32, 32))
    with pytest.raises(TracekitError, match="detector 'nss'.*adversarial fit images"):
        NaturalSceneStatistics().fit(torch.nn.Identity(), torch.rand(4, 1, 32, 32), None)


@pytest.fixture(scope="module")
def fitted(correct_digits) -> tuple[torch.nn.Module, NaturalSceneStatistics, torch.Tensor, torch.Tensor]:
    """The detector fitted on 100 clean digits and their FGSM adversarials; 40 held-out of each."""
    model, images, labels = correct_digits
    attack = tracekit.create("attack", "fgsm", eps=0.1, backend="native")
    adversarial = attack.generate(model, images[:140], labels[:140])
    detector = tracekit.create("detector", "nss", batch_size=64)
    assert isinstance(detector, NaturalSceneStatistics)
    detector.fit(model, images[:100], adversarial[:100])
    return model, detector, images[100:140], adversarial[100:140]


def test_the_detector_separates_fgsm_digits(fitted):
    model, detector, clean, adversarial = fitted
    scores = torch.cat([detector.score(model, clean), detector.score(model, adversarial)])
    assert scores.dtype == torch.float64 and scores.shape == (80,)
    auc = roc_auc_score(np.repeat([0, 1], 40), scores.numpy())
    print(f"nss AUC, 40 clean vs 40 FGSM(0.1) held-out digits: {auc:.3f}")
    assert auc > 0.5


def test_the_stand_in_is_the_score_and_descends_it(fitted):
    model, detector, clean, adversarial = fitted
    images = torch.cat([clean, adversarial])  # clean digits have exactly flat backgrounds
    check_stand_in(detector, model, images, rtol=0, atol=1e-9)


def test_the_state_round_trips(fitted):
    model, detector, clean, _ = fitted
    buffer = io.BytesIO()
    torch.save(detector.state_dict(), buffer)
    buffer.seek(0)
    fresh = NaturalSceneStatistics()
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(fresh.score(model, clean), detector.score(model, clean))
