"""What a component needs of the model is checked as soon as the model is loaded: an impossible
combination stops the run before any attack, naming both components and the way out."""

import warnings

import pytest
import torch

import tracekit
from tracekit import plugins
from tracekit.errors import TracekitError
from tracekit.testing import TinyCNN, testing_plugin


@pytest.fixture
def with_testing():
    plugins.register_plugin(testing_plugin, "tracekit-testing")
    yield
    plugins.unregister_plugin("tracekit-testing")


@pytest.fixture
def scripted(tmp_path):
    path = tmp_path / "tiny.pt"
    with warnings.catch_warnings():  # torch.jit.script and .save are deprecated upstream
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(TinyCNN(1, 16, 3).eval()), str(path))
    return path


def spec(model, detector):
    return {
        "name": "needs",
        "device": "cpu",
        "model": model,
        "data": {"name": "random-images", "n": 24},
        "attacks": [{"name": "sign-noise", "eps": 0.2}],
        "detector": detector,
        "evaluation": {"bootstrap": 0},
        "batch_size": 8,
    }


@pytest.mark.parametrize("detector", ["lid", "mahalanobis", "kd-bu", "knn", "vim", "multilid", "dnr", "nic"])
def test_a_hooked_detector_on_a_torchscript_model_stops_before_any_work(with_testing, scripted, tmp_path, detector):
    model = {"name": "torchscript", "path": str(scripted), "input_size": [1, 16, 16]}
    with pytest.raises(TracekitError) as caught:
        tracekit.run(spec(model, {"name": detector}), out=tmp_path / "run")
    said = str(caught.value)
    assert f"detector ('{detector}') cannot work with model 'torchscript'" in said
    assert "forward hooks" in said and "checkpoint" in said and "\n" not in said
    assert not list(tmp_path.glob(".run.partial/tables/*"))  # not even the clean stage ran


def test_a_layer_the_model_lacks_is_named_before_any_work(with_testing, tmp_path):
    detector = {"name": "mahalanobis", "layers": ["features.O"]}
    with pytest.raises(
        TracekitError, match=r"detector \('mahalanobis'\).*no layer 'features.O' \(did you mean 'features\."
    ):
        tracekit.run(spec({"name": "tiny-cnn"}, detector), out=tmp_path / "run")
    assert not list(tmp_path.glob(".run.partial/tables/*"))


def test_the_paper_detector_works_on_a_torchscript_model(with_testing, scripted, tmp_path):
    model = {"name": "torchscript", "path": str(scripted), "input_size": [1, 16, 16]}
    result = tracekit.run(spec(model, {"name": "feature-response"}), out=tmp_path / "run")
    assert result.metrics["attacks"]["sign-noise"]["n_clean"] > 0
