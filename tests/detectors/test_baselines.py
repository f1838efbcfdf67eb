"""The field's baseline detectors: their building blocks against NumPy/SciPy/scikit-learn
references, their separation of FGSM adversarials on the embedded digits model, and that they
leave the model exactly as they found it."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import scipy.ndimage
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

import tracekit
from tracekit.detectors.feature_squeezing import median_filter, reduce_bit_depth
from tracekit.detectors.kd_bu import log_kde
from tracekit.detectors.lid import lid_mle
from tracekit.detectors.mahalanobis import TiedGaussian
from tracekit.detectors.mc_dropout import image_keys, uniforms
from tracekit.errors import SpecError, TracekitError
from tracekit.protocols import Detector, StatefulDetector
from tracekit.testing import tiny_model

BASELINES = ["feature-squeezing", "lid", "mahalanobis", "kd-bu"]
FAST = {"kd-bu": {"n_samples": 10}}  # fewer MC passes than the paper's 50 keep the test fast
N_FIT, N_TEST = 100, 100


@pytest.fixture(scope="module")
def digits(correct_digits) -> dict[str, Any]:
    """digits-cnn, disjoint fit and test images (correctly classified), and the successful FGSM
    adversarials of each part: eps 0.3 (large) and eps 0.1 (near the decision boundary)."""
    model, images, labels = correct_digits
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    parts = {"fit": order[:N_FIT], "test": order[N_FIT : N_FIT + N_TEST]}
    data: dict[str, Any] = {"model": model}
    for part, index in parts.items():
        data[part] = images[index]
        for eps in (0.3, 0.1):
            attack = tracekit.create("attack", "fgsm", eps=eps, backend="native")
            adversarial = attack.generate(model, images[index], labels[index])
            with torch.no_grad():
                success = model(adversarial).argmax(1) != labels[index]
            data[f"{part}-adv{eps}"] = adversarial[success]
    return data


def _snapshot(model: nn.Module) -> dict[str, Any]:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()],
        "grads": [p.grad for p in model.parameters()],
        "rng": torch.random.get_rng_state(),
    }


def _assert_unchanged(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert before["state"].keys() == after["state"].keys()
    assert all(torch.equal(before["state"][k], after["state"][k]) for k in before["state"])
    assert before["training"] == after["training"]
    assert before["hooks"] == after["hooks"]
    assert all(g is None for g in after["grads"])
    assert torch.equal(before["rng"], after["rng"])  # torch's global random state untouched


@pytest.fixture(scope="module")
def fitted(digits: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each baseline fitted and scored once: its held-out AUC and the model before/after."""
    model = digits["model"]
    out = {}
    for name in BASELINES:
        detector = tracekit.create("detector", name, **FAST.get(name, {}))
        eps = 0.3 if detector.needs_adversarial_fit else 0.1  # squeezing shines near the boundary
        before = _snapshot(model)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            detector.fit(model, digits["fit"], digits[f"fit-adv{eps}"] if detector.needs_adversarial_fit else None)
        clean, adversarial = detector.score(model, digits["test"]), detector.score(model, digits[f"test-adv{eps}"])
        truth = np.r_[np.zeros(len(clean)), np.ones(len(adversarial))]
        auc = roc_auc_score(truth, np.r_[clean.numpy(), adversarial.numpy()])
        out[name] = {"detector": detector, "auc": auc, "before": before, "after": _snapshot(model), "warnings": caught}
        out[name]["shapes"] = (clean.shape, adversarial.shape)
    return out


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_separates_fgsm(fitted: dict[str, dict[str, Any]], digits: dict[str, Any], name: str) -> None:
    result = fitted[name]
    eps = 0.3 if result["detector"].needs_adversarial_fit else 0.1
    assert result["shapes"] == (torch.Size([N_TEST]), torch.Size([len(digits[f"test-adv{eps}"])]))
    assert result["auc"] > 0.8, f"{name}: AUC {result['auc']:.3f} on FGSM eps={eps}"


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_leaves_model_unchanged(fitted: dict[str, dict[str, Any]], name: str) -> None:
    _assert_unchanged(fitted[name]["before"], fitted[name]["after"])


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_is_a_detector(fitted: dict[str, dict[str, Any]], name: str) -> None:
    detector = fitted[name]["detector"]
    assert isinstance(detector, Detector)
    assert detector.needs_adversarial_fit == (name != "feature-squeezing")


@pytest.mark.parametrize("name", ["lid", "mahalanobis", "kd-bu"])
def test_learned_state_survives_a_weights_only_round_trip(
    fitted: dict[str, dict[str, Any]], digits: dict[str, Any], name: str, tmp_path
) -> None:
    """What a baseline learned, saved and loaded with weights_only=True into a fresh (unfitted)
    detector, scores as the fitted one does."""
    detector, model = fitted[name]["detector"], digits["model"]
    assert isinstance(detector, StatefulDetector)
    torch.save(detector.state_dict(), tmp_path / "state.pt")
    fresh = tracekit.create("detector", name, **FAST.get(name, {}))
    fresh.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    images = torch.cat([digits["test"][:20], digits["test-adv0.3"][:20]])
    assert torch.equal(fresh.score(model, images), detector.score(model, images))


def test_feature_squeezing_learns_nothing_to_save(fitted: dict[str, dict[str, Any]]) -> None:
    assert not isinstance(fitted["feature-squeezing"]["detector"], StatefulDetector)


def test_logistic_combiner_equals_sklearns_pipeline() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from tracekit.detectors.logistic import LogisticCombiner

    rng = np.random.default_rng(0)
    clean, adversarial = rng.normal(size=(60, 3)) * [1, 5, 0.1], rng.normal(size=(40, 3)) * [1, 5, 0.1] + 0.5
    combiner = LogisticCombiner()
    combiner.fit(clean, adversarial, "test")
    x = np.concatenate([clean, adversarial])
    y = np.r_[np.zeros(60), np.ones(40)]
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=1000)).fit(x, y)
    points = rng.normal(size=(25, 3)) * 3
    np.testing.assert_allclose(
        combiner.score(points).numpy(), pipeline.decision_function(points), rtol=1e-12, atol=1e-12
    )


def test_kd_bu_warns_how_it_handles_a_model_without_dropout(fitted: dict[str, dict[str, Any]]) -> None:
    messages = [str(w.message) for w in fitted["kd-bu"]["warnings"]]
    assert len(messages) == 1 and "no dropout" in messages[0] and "model.classifier.1" in messages[0]


@pytest.mark.parametrize("name", ["lid", "mahalanobis", "feature-squeezing", "kd-bu"])
def test_score_does_not_depend_on_the_batch(
    fitted: dict[str, dict[str, Any]], digits: dict[str, Any], name: str
) -> None:
    """An image's score is the same alone and among clean and adversarial images (no leak)."""
    detector, model = fitted[name]["detector"], digits["model"]
    mixed = torch.cat([digits["test"][:5], digits["test-adv0.3"][:5]])
    together = detector.score(model, mixed)
    alone = torch.cat([detector.score(model, image[None]) for image in mixed])
    torch.testing.assert_close(alone, together, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["lid", "mahalanobis", "kd-bu"])
def test_supervised_baseline_without_adversarials_is_bad_input(digits: dict[str, Any], name: str) -> None:
    detector = tracekit.create("detector", name)
    with pytest.raises(TracekitError, match="adversarial fit images"):
        detector.fit(digits["model"], digits["fit"], None)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("lid", {"layers": ["features.12"]}),
        ("mahalanobis", {"layers": ["features.12"]}),
        ("kd-bu", {"layer": "features.12"}),
    ],
)
def test_unknown_layer_names_the_closest(digits: dict[str, Any], name: str, params: dict[str, Any]) -> None:
    model = digits["model"]
    before = _snapshot(model)
    detector = tracekit.create("detector", name, **params)
    with pytest.raises(TracekitError, match=r"no layer 'features\.12' \(did you mean 'model\.features\.12'"):
        detector.fit(model, digits["fit"], digits["fit-adv0.3"])
    _assert_unchanged(before, _snapshot(model))


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(TracekitError, match="k=100 must be smaller than batch_size=100"):
        tracekit.create("detector", "lid", k=100)
    with pytest.raises(SpecError, match="bits"):
        tracekit.create("detector", "feature-squeezing", bits=0)
    with pytest.raises(SpecError, match="median_sizes"):
        tracekit.create("detector", "feature-squeezing", median_sizes=[1])
    with pytest.raises(SpecError, match="noise"):
        tracekit.create("detector", "mahalanobis", noise=-0.1)


# --- building blocks against references ---------------------------------------------------


@pytest.mark.parametrize("size", [2, 3, 4, 5])
def test_median_filter_equals_scipy(size: int) -> None:
    gen = torch.Generator().manual_seed(size)
    images = torch.randint(0, 5, (3, 2, 9, 7), generator=gen).float() / 4  # many ties
    expected = scipy.ndimage.median_filter(images.numpy(), size=(1, 1, size, size), mode="reflect")
    np.testing.assert_array_equal(median_filter(images, size).numpy(), expected)


@pytest.mark.parametrize("bits", [1, 3, 4, 5, 8])
def test_bit_depth_reduction_equals_numpy(bits: int) -> None:
    levels = 2**bits - 1
    halves = (torch.arange(levels) + 0.5) / levels  # (about) halfway between two levels
    noise = torch.rand(500, generator=torch.Generator().manual_seed(bits))
    images = torch.cat([noise, halves, torch.tensor([0.0, 1.0])])
    expected = np.rint(images.numpy() * levels) / levels
    np.testing.assert_allclose(reduce_bit_depth(images, bits).numpy(), expected, rtol=0, atol=1e-7)


def test_feature_squeezing_score_is_max_l1_softmax_change() -> None:
    """Reference: squeeze with NumPy/SciPy, paper's defaults (1 bit for one channel, 2x2 median)."""
    model = tiny_model(seed=3).module
    images = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    x = images.numpy()
    squeezed = [np.rint(x * 1) / 1, scipy.ndimage.median_filter(x, size=(1, 1, 2, 2), mode="reflect")]
    with torch.no_grad():
        probs = model(images).softmax(1).numpy()
        changes = [np.abs(model(torch.from_numpy(s)).softmax(1).numpy() - probs).sum(1) for s in squeezed]
    score = tracekit.create("detector", "feature-squeezing").score(model, images)
    np.testing.assert_allclose(score.numpy(), np.max(changes, axis=0), rtol=1e-5, atol=1e-6)


def _lid_reference(points: np.ndarray, reference: np.ndarray, k: int, exclude: np.ndarray) -> np.ndarray:
    """Ma et al.'s `mle_batch`: -k / sum(log(r_i / r_k)) over the k nearest (self left out)."""
    out = []
    for i, p in enumerate(points):
        d = np.sqrt(((reference - p) ** 2).sum(1))
        if exclude[i] >= 0:
            d = np.delete(d, exclude[i])
        r = np.sort(d)[:k]
        out.append(-k / np.sum(np.log(r / r[-1])))
    return np.array(out)


def test_lid_estimate_equals_numpy_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    reference = torch.randn(60, 12, generator=gen)
    points = torch.cat([reference[:5], torch.randn(7, 12, generator=gen) * 2])  # 5 lie in the reference
    exclude = torch.tensor([0, 1, 2, 3, 4] + [-1] * 7)
    expected = _lid_reference(points.double().numpy(), reference.double().numpy(), 10, exclude.numpy())
    np.testing.assert_allclose(lid_mle(points, reference, 10, exclude).numpy(), expected, rtol=1e-6)
    # Points on a 2-d plane inside 12-d space have an LID near 2, far below that of 12-d noise.
    plane = torch.randn(400, 2, generator=gen) @ torch.randn(2, 12, generator=gen)
    assert abs(lid_mle(plane[:50], plane[50:], 20).mean().item() - 2) < 0.5
    assert lid_mle(reference[:20], torch.randn(400, 12, generator=gen), 20).mean().item() > 6


def test_mahalanobis_confidence_equals_numpy_reference() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 200)
    features = rng.normal(size=(200, 6)) + labels[:, None] * 0.7
    points = rng.normal(size=(15, 6)) * 2
    means = np.stack([features[labels == c].mean(0) for c in range(4)])
    centred = features - means[labels]
    precision = np.linalg.inv(centred.T @ centred / len(features))
    diffs = points[:, None, :] - means[None]
    expected = (-np.einsum("ncd,de,nce->nc", diffs, precision, diffs)).max(1)
    gaussian = TiedGaussian.fit(features, labels, torch.device("cpu"))
    np.testing.assert_allclose(gaussian.confidence(torch.from_numpy(points)).numpy(), expected, rtol=1e-8)


def test_log_kde_equals_sklearn() -> None:
    from sklearn.neighbors import KernelDensity

    rng = np.random.default_rng(0)
    support, points = rng.normal(size=(80, 5)), rng.normal(size=(10, 5))
    for bandwidth in (0.3, 1.2):
        expected = KernelDensity(bandwidth=bandwidth).fit(support).score_samples(points)
        got = log_kde(torch.from_numpy(points), torch.from_numpy(support), bandwidth)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-8)
    mask = torch.zeros(10, 80, dtype=torch.bool)
    mask[:, :30] = True
    expected = KernelDensity(bandwidth=0.5).fit(support[:30]).score_samples(points)
    got = log_kde(torch.from_numpy(points), torch.from_numpy(support), 0.5, mask)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-8)


class _DropoutNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_bayesian_uncertainty_uses_the_model_dropout_and_the_paper_formula() -> None:
    model = _DropoutNet().eval()
    images = torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    detector = tracekit.create("detector", "kd-bu", n_samples=30, seed=5)
    before = _snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the model has dropout: no warning
        detector.fit(model, images, images.flip(-1))
    state = torch.get_rng_state()
    (kd, bu) = detector.features(model, images).T
    assert torch.equal(state, torch.get_rng_state())  # torch's random state untouched
    _assert_unchanged(before, _snapshot(model))
    assert not model.body[3].training
    # The paper's formula, on the model's dropout site (after the ReLU) with the same per-image masks.
    hidden = model.body[:3](images).detach()
    keys = image_keys(images)
    probs = []
    for draw in range(30):
        keep = uniforms(keys, 32, seed=5, site=0, draw=draw) >= 0.3
        probs.append(model.body[4](hidden * keep / 0.7).softmax(1))
    probs = torch.stack(probs).double().detach().numpy()
    expected = (probs**2).sum(2).mean(0) - (probs.mean(0) ** 2).sum(1)
    np.testing.assert_allclose(bu, expected, rtol=1e-6, atol=1e-12)
    assert (bu > 0).all()
