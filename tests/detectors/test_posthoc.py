"""The post-hoc scores (`msp`, `energy`, `odin`, `knn`, `vim`): each recomputed independently from
the model's logits and penultimate features (SciPy, scikit-learn, NumPy, the papers' formulas),
their differentiable stand-ins equal to the scores with a gradient, their fitted state carried over,
and bad input refused with one clear message."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import logsumexp, softmax
from sklearn.covariance import EmpiricalCovariance
from sklearn.neighbors import NearestNeighbors

import tracekit
from tracekit.errors import SpecError, TracekitError
from tracekit.protocols import DifferentiableScore, StatefulDetector
from tracekit.testing import check_stand_in

NAMES = ["msp", "energy", "odin", "knn", "vim"]


@pytest.fixture(scope="module")
def digits(correct_digits):
    """digits-cnn, 120 clean fit digits, and 24 test inputs: 12 clean, 12 FGSM (0.1)."""
    model, images, labels = correct_digits
    fgsm = tracekit.create("attack", "fgsm", eps=0.1, backend="native").generate(
        model, images[120:132], labels[120:132]
    )
    return model, images[:120], torch.cat([images[132:144], fgsm])


def penultimate_and_logits(model, images):
    """The input of digits-cnn's last linear layer (`model.classifier.2`) and the logits, float64 NumPy."""
    seen = []
    handle = model.model.classifier[2].register_forward_hook(lambda m, i, o: seen.append(i[0]))
    try:
        with torch.no_grad():
            logits = model(images)
    finally:
        handle.remove()
    return seen[0].double().numpy(), logits.double().numpy()


def fitted(name, model, fit, **params):
    detector = tracekit.create("detector", name, **params)
    detector.fit(model, fit)
    return detector


def test_msp_and_energy_are_the_formulas_on_the_logits(digits):
    model, fit, test = digits
    _, logits = penultimate_and_logits(model, test)
    np.testing.assert_allclose(fitted("msp", model, fit).score(model, test), -softmax(logits, 1).max(1), rtol=1e-6)
    got = fitted("energy", model, fit, temperature=2.0).score(model, test)
    np.testing.assert_allclose(got, -2.0 * logsumexp(logits / 2.0, axis=1), rtol=1e-6)


def test_odin_is_the_softmax_at_temperature_after_the_papers_step(digits):
    model, fit, test = digits
    temperature, noise = 1000.0, 0.0014
    x = test.clone().requires_grad_(True)
    logits = model(x).double() / temperature
    log_top = logits.log_softmax(1).amax(1).sum()  # log S_y(x; T), y the predicted class
    (grad,) = torch.autograd.grad(log_top, x)
    moved = test - noise * torch.sign(-grad)  # the paper's x~ = x - eps sign(-grad log S_y)
    _, after = penultimate_and_logits(model, moved)
    expected = -softmax(after / temperature, 1).max(1)
    np.testing.assert_allclose(fitted("odin", model, fit).score(model, test), expected, rtol=1e-9)


def test_knn_is_the_kth_neighbour_distance_of_normalized_features(digits):
    model, fit, test = digits
    bank = penultimate_and_logits(model, fit)[0]
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    query = penultimate_and_logits(model, test)[0]
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    distances, _ = NearestNeighbors(n_neighbors=7).fit(bank).kneighbors(query)
    np.testing.assert_allclose(fitted("knn", model, fit, k=7).score(model, test), distances[:, -1], rtol=1e-6)


def test_vim_follows_the_papers_code(digits):
    model, fit, test = digits
    weight = model.model.classifier[2].weight.detach().double().numpy()
    bias = model.model.classifier[2].bias.detach().double().numpy()
    features, logits = penultimate_and_logits(model, fit)
    dim = 20
    u = -np.matmul(np.linalg.pinv(weight), bias)
    values, vectors = np.linalg.eig(EmpiricalCovariance(assume_centered=True).fit(features - u).covariance_)
    ns = np.ascontiguousarray((vectors.T[np.argsort(values * -1)[dim:]]).T).real
    alpha = logits.max(axis=-1).mean() / np.linalg.norm((features - u) @ ns, axis=-1).mean()
    test_features, test_logits = penultimate_and_logits(model, test)
    id_score = -np.linalg.norm((test_features - u) @ ns, axis=-1) * alpha + logsumexp(test_logits, axis=-1)
    np.testing.assert_allclose(fitted("vim", model, fit, dim=dim).score(model, test), -id_score, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_the_stand_in_is_the_score_with_a_gradient(digits, name):
    model, fit, test = digits
    detector = fitted(name, model, fit, **({"k": 5} if name == "knn" else {}))
    assert isinstance(detector, DifferentiableScore)
    check_stand_in(detector, model, test, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["knn", "vim"])
def test_the_fitted_state_scores_the_same_in_a_fresh_detector(digits, name):
    model, fit, test = digits
    params = {"k": 5} if name == "knn" else {}
    detector = fitted(name, model, fit, **params)
    assert isinstance(detector, StatefulDetector)
    fresh = tracekit.create("detector", name, **params)  # `detect` builds it from the run's spec
    fresh.load_state_dict(detector.state_dict())
    torch.testing.assert_close(fresh.score(model, test), detector.score(model, test), rtol=0, atol=0)


def test_bad_input_is_refused_with_one_clear_message(digits):
    model, fit, _ = digits
    with pytest.raises(TracekitError, match=r"k=50 needs more than 50 clean fit images, got 40"):
        fitted("knn", model, fit[:40])
    with pytest.raises(
        TracekitError, match=r"dim=64 must be between 1 and the penultimate feature size minus one \(63\)"
    ):
        fitted("vim", model, fit, dim=64)
    for name in ("energy", "odin"):
        with pytest.raises(SpecError, match="temperature"):
            tracekit.create("detector", name, temperature=0)
    wrapped = torch.nn.Sequential(model, torch.nn.Softmax(dim=1))  # the logits come after the last linear layer
    with pytest.raises(TracekitError, match="logits are not the output of a linear layer"):
        fitted("knn", wrapped, fit)


@pytest.mark.slow
def test_a_comparison_runs_them_with_their_adaptive_attacks(tmp_path):
    """Through the engine: calibrated (the stateful ones cross-fitted), attacked adaptively each
    through its own stand-in, and `detect` scores a file with a fitted one."""
    import json

    import yaml
    from typer.testing import CliRunner

    from tracekit.cli import build_app

    spec = {
        "name": "post-hoc",
        "device": "cpu",
        "model": {"name": "digits-cnn"},
        "data": {"name": "digits", "split": "test", "limit": 80},
        "attacks": [
            {"name": "fgsm", "eps": 0.1, "backend": "native"},
            {"name": "adaptive", "max_iter": 3, "lambdas": [0, 1]},
        ],
        "detectors": [{"name": name, **({"k": 5} if name == "knn" else {})} for name in NAMES],
        "evaluation": {"bootstrap": 0},
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "run"
    result = CliRunner().invoke(build_app(), ["compare", str(tmp_path / "spec.yaml"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())["detectors"]
    for name in NAMES:
        assert set(metrics[name]["attacks"]) == {"fgsm", "adaptive"}, name
        assert 0 <= metrics[name]["attacks"]["adaptive"]["evasion_rate"] <= 1
    image = tmp_path / "digit.png"
    from PIL import Image

    Image.fromarray(np.full((32, 32), 128, np.uint8)).save(image)
    said = CliRunner().invoke(build_app(), ["detect", "--run", str(out), "--detector", "knn", str(image)])
    assert said.exit_code == 0, said.output
