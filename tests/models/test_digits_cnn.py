"""The embedded `digits-cnn`: trained on first use, accurate, cached, deterministic, loadable.

Trains twice in all: once for the shared fixture, once over a corrupt cache file (which must
give the very same weights).
"""

from __future__ import annotations

import hashlib
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import tracekit
from tracekit.datasets.digits import digits_arrays
from tracekit.datasets.factories import digits
from tracekit.errors import TracekitError
from tracekit.models import digits_cnn as dc
from tracekit.models.factories import digits_cnn
from tracekit.protocols import LoadedModel
from tracekit.testing import tiny_model


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LoadedModel, Path, float]]:
    """digits-cnn trained in an empty cache of its own: (model, weights file, seconds taken)."""
    cache = tmp_path_factory.mktemp("digits-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRACEKIT_CACHE", str(cache))
        start = time.perf_counter()
        model = tracekit.create("model", "digits-cnn")
        seconds = time.perf_counter() - start
        yield model, cache / "models" / f"digits-cnn-{dc.RECIPE_VERSION}.pt", seconds


def _state(model: LoadedModel) -> dict[str, torch.Tensor]:
    return model.module.state_dict()


def test_trained_model_is_accurate_and_described(trained) -> None:
    model, path, seconds = trained
    assert path.is_file()
    assert model.input_size == (1, 32, 32)
    assert model.class_names == [str(d) for d in range(10)]
    assert not model.module.training
    assert all(p.device.type == "cpu" for p in model.module.parameters())
    _, images, labels = digits_arrays("test")
    with torch.no_grad():
        accuracy = (model.module(images).argmax(1) == labels).float().mean().item()
    assert accuracy >= 0.97
    assert model.info["test_accuracy"] == pytest.approx(accuracy)
    assert model.info["weights_file"] == str(path)
    assert model.info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert seconds < 60, f"training took {seconds:.1f} s"


def test_normalization_is_folded_in_from_the_training_data(trained) -> None:
    model, _, _ = trained
    _, images, _ = digits_arrays("train")
    assert model.info["mean"] == pytest.approx([images.mean().item()], rel=1e-6)
    assert model.info["std"] == pytest.approx([images.std().item()], rel=1e-6)
    x = images[:4]
    with torch.no_grad():
        folded = model.module(x)
        by_hand = model.module.model((x - images.mean()) / images.std())
    torch.testing.assert_close(folded, by_hand, rtol=1e-4, atol=1e-4)


def test_second_load_reuses_the_cache(trained, monkeypatch: pytest.MonkeyPatch) -> None:
    model, path, _ = trained
    monkeypatch.setenv("TRACEKIT_CACHE", str(path.parent.parent))
    monkeypatch.setattr(dc, "train", lambda: pytest.fail("retrained although the cache was valid"))
    mtime = path.stat().st_mtime_ns
    again = digits_cnn()
    assert path.stat().st_mtime_ns == mtime
    assert all(torch.equal(v, _state(model)[k]) for k, v in _state(again).items())
    assert again.info["sha256"] == model.info["sha256"]


@pytest.mark.slow
def test_corrupt_cache_is_retrained_to_identical_weights(trained, tmp_path: Path, monkeypatch) -> None:
    model, path, _ = trained
    monkeypatch.setenv("TRACEKIT_CACHE", str(tmp_path))
    corrupt = tmp_path / "models" / path.name
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match=rf"retraining.*{corrupt.name}"):
        retrained = digits_cnn()
    assert _state(retrained).keys() == _state(model).keys()
    assert all(torch.equal(v, _state(model)[k]) for k, v in _state(retrained).items())
    assert corrupt.read_bytes() == path.read_bytes()  # deterministic: byte-identical file


def test_weights_file_is_loaded_instead_of_the_cache(trained, tmp_path: Path, monkeypatch) -> None:
    model, path, _ = trained
    monkeypatch.setenv("TRACEKIT_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(dc, "train", lambda: pytest.fail("trained although weights were given"))
    copy = Path(shutil.copy(path, tmp_path / "mine.pt"))
    loaded = tracekit.create("model", "digits-cnn", weights=str(copy))
    assert loaded.info["weights_file"] == str(copy)
    assert all(torch.equal(v, _state(model)[k]) for k, v in _state(loaded).items())
    assert not (tmp_path / "empty").exists()


def test_missing_or_foreign_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(TracekitError, match=rf"{missing.name}.*does not exist"):
        digits_cnn(weights=missing)
    foreign = tmp_path / "tiny.pt"
    torch.save(tiny_model().module.state_dict(), foreign)
    with pytest.raises(TracekitError, match="does not fit"):
        digits_cnn(weights=foreign)


def test_works_with_captum_guided_backprop_and_leaves_the_model_unchanged(trained) -> None:
    from captum.attr import GuidedBackprop

    model, _, _ = trained
    _, images, labels = digits_arrays("test")
    before = {k: v.clone() for k, v in _state(model).items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # captum announces its ReLU hooks
        maps = GuidedBackprop(model.module).attribute(images[:8], target=labels[:8])
    assert maps.shape == (8, 1, 32, 32)
    assert (maps.flatten(1).abs().sum(1) > 0).all()
    assert all(torch.equal(v, before[k]) for k, v in _state(model).items())
    assert not any(m._forward_hooks or m._backward_hooks for m in model.module.modules())


def test_art_fgsm_fools_it(trained) -> None:
    from art.attacks.evasion import FastGradientMethod
    from art.estimators.classification import PyTorchClassifier

    model, _, _ = trained
    classifier = PyTorchClassifier(
        model.module, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 32, 32), nb_classes=10, clip_values=(0, 1)
    )
    _, images, labels = digits_arrays("test")
    x = images[:64].numpy()
    adversarial = FastGradientMethod(classifier, eps=0.2).generate(x)
    assert abs(adversarial - x).max() <= 0.2 + 1e-6
    clean = (classifier.predict(x).argmax(1) == labels[:64].numpy()).mean()
    attacked = (classifier.predict(adversarial).argmax(1) == labels[:64].numpy()).mean()
    assert clean >= 0.95 and attacked < clean - 0.3


def test_dataset_and_model_fit_together(trained) -> None:
    model, _, _ = trained
    sample_id, image, label = next(digits(split="all", limit=1).samples(model))
    assert (sample_id, image.shape) == ("digits-0000", (1, 32, 32))
    assert model.module(image[None]).argmax(1).item() == label == 0
