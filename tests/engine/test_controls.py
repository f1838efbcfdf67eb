"""Noise controls, model randomization, detector-bound (adaptive) attacks, transfer matrix."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tracekit import hookimpl, plugins
from tracekit.engine.controls import randomized_copy
from tracekit.engine.reading import Batch
from tracekit.engine.run import run
from tracekit.engine.scoring import CleanImages, NoisyImages
from tracekit.engine.tables import Table
from tracekit.testing import testing_plugin, tiny_model


class _DistanceDetector:
    """Learns the clean fit images' mean; scores the distance to it (needs adversarial fit data)."""

    needs_adversarial_fit = True

    def fit(self, model, clean_fit_images, adversarial_fit_images=None):
        assert adversarial_fit_images is not None and len(adversarial_fit_images)
        self.center = clean_fit_images.mean(0)

    def score(self, model, images):
        return (images - self.center).flatten(1).norm(dim=1)


class _BoundNoise:
    """A stand-in adaptive attack: records the detector and threshold it was bound to."""

    needs_detector = True
    bound = []

    def accepts(self, detector):
        """Any detector."""

    def bind(self, detector, threshold):
        _BoundNoise.bound.append((type(detector).__name__, threshold))

    def generate(self, model, images, labels):
        return (images + 0.2 * torch.sign(torch.randn_like(images))).clamp(0, 1)


class _Identity:
    """An attack that never succeeds."""

    def generate(self, model, images, labels):
        return images.clone()


class _Plugin:
    @hookimpl
    def tracekit_register_detectors(self, register):
        register("distance", lambda: _DistanceDetector())

    @hookimpl
    def tracekit_register_attacks(self, register):
        register("bound-noise", lambda: _BoundNoise())
        register("identity", lambda: _Identity())


@pytest.fixture(scope="module", autouse=True)
def tiny_plugins():
    plugins.register_plugin(testing_plugin, "tracekit-testing")
    plugins.register_plugin(_Plugin(), "controls-test")
    yield
    plugins.unregister_plugin("controls-test")
    plugins.unregister_plugin("tracekit-testing")


def spec(**extra):
    base = {
        "name": "controls",
        "device": "cpu",
        "model": {"name": "tiny-cnn"},
        "data": {"name": "random-images", "n": 48},
        "attacks": [{"name": "sign-noise", "eps": 0.3}, {"name": "sign-noise", "eps": 0.1, "label": "weak"}],
        "detector": {"name": "feature-response", "score": {"name": "mean-abs"}},
        "batch_size": 16,
        "evaluation": {"bootstrap": 100},
    }
    base.update(extra)
    return base


def test_randomized_copy_changes_every_layer_and_leaves_the_original():
    model = tiny_model().module
    before = {k: v.clone() for k, v in model.state_dict().items()}
    clone, layers = randomized_copy(model, seed=0)
    assert layers == ["classifier", "features.3", "features.0"]  # top layer first
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name])  # original untouched
    for name, value in clone.state_dict().items():
        assert not torch.equal(value, before[name]), name  # every randomized weight changed
    again, _ = randomized_copy(model, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(clone.state_dict().values(), again.state_dict().values()))


def test_noise_matches_perturbation_sizes(tmp_path):
    originals = torch.full((4, 1, 32, 32), 0.5)  # large enough that clipping never bites
    l2, linf = torch.tensor([0.5, 1.0, 1.5, 2.0]), torch.tensor([0.01, 0.05, 0.1, 0.2])
    ids = [f"img-{i}" for i in range(4)]
    attack = Table(tmp_path, "attack-00")
    attack.write("000000", {"index": np.arange(4), "l2": l2.double().numpy(), "linf": linf.double().numpy()})

    def read(pieces):
        for piece in pieces:
            yield Batch(
                piece, piece.index, [ids[i] for i in piece.index], originals[piece.index], torch.zeros(len(piece.index))
            )

    context = SimpleNamespace(reader=SimpleNamespace(read=read))

    def noisy(kind, positions=np.arange(4)):
        source = NoisyImages(CleanImages(positions, 4), kind, attack, seed=0)
        return next(source.images(context, source.pieces()))[3]

    assert torch.allclose((noisy("sign") - originals).flatten(1).abs().amax(1), linf)
    assert torch.allclose((noisy("sign") - originals).abs().flatten(1).amin(1), linf)  # every pixel moved
    assert torch.allclose((noisy("gaussian") - originals).flatten(1).norm(dim=1), l2, atol=1e-5)
    # the same images in another batch get the same noise (seeded per id)
    assert torch.equal(noisy("gaussian", np.arange(2)), noisy("gaussian")[:2])


def test_run_with_controls_reports_noise_and_randomized_model(tmp_path):
    result = run(spec(controls=["noise", "randomized-model"]), out=tmp_path / "r")
    assert result.metrics["randomized_model"]["layers"] == ["classifier", "features.3", "features.0"]
    for m in result.metrics["attacks"].values():
        for kind in ("sign", "gaussian"):
            assert 0 <= m["noise"][kind]["flag_rate"] <= 1
            assert m["noise"][kind]["auc"] is None or 0 <= m["noise"][kind]["auc"] <= 1
        assert "auc" in m["randomized_model"]


def test_detector_bound_attack_runs_after_calibration(tmp_path):
    _BoundNoise.bound.clear()
    result = run(spec(attacks=[{"name": "sign-noise", "eps": 0.3}, {"name": "bound-noise"}]), out=tmp_path / "r")
    assert _BoundNoise.bound and _BoundNoise.bound[-1] == ("FeatureResponse", result.metrics["threshold"])
    m = result.metrics["attacks"]["bound-noise"]
    assert m["n_clean"] == result.metrics["data"]["n_test"]
    assert list(result.metrics["attacks"]) == ["sign-noise", "bound-noise"]  # spec order kept


def test_transfer_matrix_for_learned_detectors(tmp_path):
    result = run(spec(detector={"name": "distance"}), out=tmp_path / "r")
    matrix = result.metrics["transfer"]
    assert set(matrix) == {"sign-noise", "weak"} and all(set(row) == {"sign-noise", "weak"} for row in matrix.values())
    assert matrix["sign-noise"]["sign-noise"] == pytest.approx(result.metrics["attacks"]["sign-noise"]["auc"], abs=0.2)


def test_learned_detector_without_adversarial_fit_data_is_bad_input(tmp_path):
    from tracekit.errors import TracekitError

    with pytest.raises(TracekitError, match="needs adversarial fit data, but no attack succeeded"):
        run(spec(detector={"name": "distance"}, attacks=[{"name": "identity"}]), out=tmp_path / "r")
