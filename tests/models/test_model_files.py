"""TorchScript and state-dict checkpoint files; the shared mean/std and class-name options."""

from __future__ import annotations

import hashlib
import json
import pickle
import warnings

import pytest
import torch
import torchvision

from tracekit.errors import TracekitError
from tracekit.models.factories import (
    checkpoint_model,
    timm_model,
    torchscript_model,
    torchvision_model,
)
from tracekit.models.normalize import IMAGENET_MEAN, IMAGENET_STD
from tracekit.registry import params_model
from tracekit.testing import TinyCNN


class NotWeights:
    """An arbitrary object: loading it needs full pickle, which tracekit refuses."""


@pytest.fixture
def tiny_cnn() -> TinyCNN:
    torch.manual_seed(0)
    return TinyCNN(channels=3, size=16, num_classes=4).eval()


@pytest.fixture
def scripted(tmp_path, tiny_cnn):
    path = tmp_path / "tiny.pt"
    with warnings.catch_warnings():  # torch.jit.script and .save are deprecated upstream
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(tiny_cnn), str(path))
    return path


def images(n: int = 3, size: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(2))


def test_torchscript_round_trip_without_normalization(scripted, tiny_cnn):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # loading warns about nothing (torch.jit's deprecation included)
        loaded = torchscript_model(scripted, input_size=(3, 16, 16), class_names=["a", "b", "c", "d"])

    assert loaded.input_size == (3, 16, 16) and loaded.class_names == ["a", "b", "c", "d"]
    assert loaded.info["mean"] is None
    assert loaded.info["sha256"] == hashlib.sha256(scripted.read_bytes()).hexdigest()
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), tiny_cnn(x))


def test_torchscript_with_mean_std_and_class_names_file(tmp_path, scripted, tiny_cnn):
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\n\nhot dog\nbird\n")
    loaded = torchscript_model(scripted, (3, 16, 16), mean=(0.5,), std=(0.25, 0.5, 1.0), class_names=names)

    assert loaded.class_names == ["cat", "dog", "hot dog", "bird"]
    assert loaded.info["mean"] == [0.5, 0.5, 0.5] and loaded.info["std"] == [0.25, 0.5, 1.0]
    x = images()
    expected = tiny_cnn((x - 0.5) / torch.tensor([0.25, 0.5, 1.0]).view(1, 3, 1, 1))
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), expected)


def test_torchscript_prepares_image_files_as_the_spec_says_else_the_whole_frame(scripted):
    plain = torchscript_model(scripted, (3, 16, 16))
    assert (plain.info["crop_pct"], plain.info["interpolation"]) == (1.0, "bilinear")
    given = torchscript_model(scripted, (3, 16, 16), crop_pct=0.875, interpolation="bicubic")
    assert (given.info["crop_pct"], given.info["interpolation"]) == (0.875, "bicubic")


def test_checkpoint_keeps_its_architectures_preprocessing_unless_the_spec_says(tmp_path, small_checkpoint):
    path = tmp_path / "ckpt.pth"
    torch.save(small_checkpoint[1], path)
    own = checkpoint_model(path, "squeezenet1_1", num_classes=3)
    assert own.info["crop_pct"] == 224 / 256  # torchvision's evaluation transforms for the architecture
    given = checkpoint_model(path, "squeezenet1_1", num_classes=3, crop_pct=1.0, interpolation="nearest")
    assert (given.info["crop_pct"], given.info["interpolation"]) == (1.0, "nearest")


def test_crop_pct_outside_zero_to_one_is_refused_when_the_spec_loads():
    from tracekit.errors import SpecError
    from tracekit.plugins import registry

    for bad in (0, 1.5, -0.2):
        with pytest.raises(SpecError, match="crop_pct"):
            registry("model").resolve({"name": "torchscript", "path": "m.pt", "crop_pct": bad})


def test_torchscript_without_names_gets_generic_names(scripted):
    loaded = torchscript_model(scripted, (3, 16, 16))
    assert loaded.class_names == ["class0", "class1", "class2", "class3"] and loaded.wnids is None


def test_torchscript_bad_input(tmp_path, scripted, tiny_cnn):
    with pytest.raises(TracekitError, match="fails on a 1x3x32x32 input.*set input_size"):
        torchscript_model(scripted, (3, 32, 32))
    with pytest.raises(TracekitError, match="3 class names given but the model has 4 outputs"):
        torchscript_model(scripted, (3, 16, 16), class_names=["a", "b", "c"])
    with pytest.raises(TracekitError, match="give both mean and std"):
        torchscript_model(scripted, (3, 16, 16), mean=(0.5, 0.5, 0.5))
    with pytest.raises(TracekitError, match="mean has 2 values but the input has 3 channel"):
        torchscript_model(scripted, (3, 16, 16), mean=(0.5, 0.5), std=(1.0, 1.0))
    with pytest.raises(TracekitError, match="std must be positive"):
        torchscript_model(scripted, (3, 16, 16), mean=(0.5,), std=(0.0,))
    state_dict = tmp_path / "state.pt"
    torch.save(tiny_cnn.state_dict(), state_dict)
    with pytest.raises(TracekitError, match="not a TorchScript file.*name: checkpoint"):
        torchscript_model(state_dict, (3, 16, 16))
    with pytest.raises(TracekitError, match="does not exist"):
        torchscript_model(tmp_path / "missing.pt")
    bad_json = tmp_path / "names.json"
    bad_json.write_text(json.dumps({"0": "a"}))
    with pytest.raises(TracekitError, match="JSON list of strings"):
        torchscript_model(scripted, (3, 16, 16), class_names=bad_json)


@pytest.fixture
def small_checkpoint(tmp_path):
    torch.manual_seed(4)
    bare = torchvision.models.squeezenet1_1(num_classes=3).eval()
    return bare, bare.state_dict()


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "dataparallel"])
def test_checkpoint_round_trip(tmp_path, small_checkpoint, wrap):
    bare, state = small_checkpoint
    saved = {
        "plain": state,
        "state_dict": {"state_dict": state, "epoch": 7},
        "model": {"model": state},
        "dataparallel": {f"module.{k}": v for k, v in state.items()},
    }[wrap]
    path = tmp_path / "ckpt.pth"
    torch.save(saved, path)
    names = tmp_path / "names.json"
    names.write_text(json.dumps(["cat", "dog", "bird"]))

    loaded = checkpoint_model(path, "squeezenet1_1", class_names=names)  # num_classes from the names

    assert loaded.class_names == ["cat", "dog", "bird"]
    assert loaded.input_size == (3, 224, 224) and loaded.info["mean"] == list(IMAGENET_MEAN)
    assert loaded.info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    x = images(2, 32)
    expected = bare((x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), expected)


def test_checkpoint_overrides_and_timm_source(tmp_path):
    import timm

    torch.manual_seed(1)
    bare = timm.create_model("test_resnet", num_classes=2).eval()
    path = tmp_path / "timm.pth"
    torch.save(bare.state_dict(), path)

    loaded = checkpoint_model(
        path, "test_resnet", source="timm", num_classes=2, input_size=(3, 48, 48), mean=(0.0,), std=(1.0,)
    )

    assert loaded.input_size == (3, 48, 48) and loaded.class_names == ["class0", "class1"]
    x = torch.rand(1, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), bare(x))


def test_checkpoint_bad_files(tmp_path, small_checkpoint):
    _, state = small_checkpoint
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00\x01 definitely not weights")
    with pytest.raises(TracekitError, match="cannot read .*garbage.pth as PyTorch weights"):
        checkpoint_model(garbage, "squeezenet1_1", num_classes=3)

    pickled = tmp_path / "object.pth"
    torch.save({"weights": NotWeights()}, pickled, pickle_module=pickle)
    with pytest.raises(TracekitError, match=r"NotWeights.*only loads plain weights \(torch.load weights_only=True\)"):
        checkpoint_model(pickled, "squeezenet1_1", num_classes=3)

    whole = tmp_path / "whole.pth"
    torch.save(torch.nn.Linear(2, 2), whole)
    with pytest.raises(TracekitError, match="Linear.*save model.state_dict"):
        checkpoint_model(whole, "squeezenet1_1", num_classes=3)

    no_tensors = tmp_path / "numbers.pth"
    torch.save({"epoch": 3}, no_tensors)
    with pytest.raises(TracekitError, match="does not hold a state dict"):
        checkpoint_model(no_tensors, "squeezenet1_1", num_classes=3)

    good = tmp_path / "good.pth"
    torch.save(state, good)
    with pytest.raises(
        TracekitError, match=r"\d+ missing keys \(conv1\.weight, .*unexpected keys \(features\.0\.weight"
    ):
        checkpoint_model(good, "resnet18", num_classes=3)
    partial = tmp_path / "partial.pth"
    torch.save(
        {**{k: v for k, v in state.items() if not k.startswith("classifier.1.")}, "head.weight": torch.zeros(1)},
        partial,
    )
    expected = r"2 missing keys \(classifier.1.weight, classifier.1.bias\); 1 unexpected keys \(head.weight\)"
    with pytest.raises(TracekitError, match=expected):
        checkpoint_model(partial, "squeezenet1_1", num_classes=3)
    with pytest.raises(TracekitError, match="unknown torchvision architecture 'resnet1'.*'resnet18'"):
        checkpoint_model(good, "resnet1")
    with pytest.raises(TracekitError, match="does not exist"):
        checkpoint_model(tmp_path / "missing.pth", "squeezenet1_1")


def test_gray_input_needs_its_own_mean_and_std(tmp_path, small_checkpoint):
    _, state = small_checkpoint
    path = tmp_path / "ckpt.pth"
    torch.save(state, path)
    with pytest.raises(TracekitError, match="the default mean has 3 values but the input has 1 channel"):
        checkpoint_model(path, "squeezenet1_1", num_classes=3, input_size=(1, 32, 32))


def test_factory_signatures_are_valid_parameter_schemas():
    """The registry turns each signature into a pydantic model; spec values must validate."""
    spec = {"path": "m.pt", "input_size": [1, 28, 28], "mean": [0.1], "std": [0.3], "class_names": "names.txt"}
    params = params_model("torchscript", torchscript_model).model_validate(spec)
    assert params.input_size == (1, 28, 28) and params.mean == (0.1,) and params.class_names.name == "names.txt"
    params = params_model("checkpoint", checkpoint_model).model_validate(
        {"path": "c.pth", "arch": "squeezenet1_1", "class_names": ["a", "b"]}
    )
    assert params.class_names == ["a", "b"] and params.source == "torchvision"
    with pytest.raises(Exception, match="source"):
        params_model("checkpoint", checkpoint_model).model_validate({"path": "c", "arch": "x", "source": "keras"})
    with pytest.raises(Exception, match="num_classes"):
        params_model("torchvision", torchvision_model).model_validate({"arch": "squeezenet1_1", "num_classes": 0})
    assert params_model("timm", timm_model).model_validate({"arch": "x", "weights": "w.pth"}).weights.name == "w.pth"
