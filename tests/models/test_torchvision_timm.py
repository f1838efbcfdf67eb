"""torchvision and timm models by name: weights from a file or the local cache only, never a download."""

from __future__ import annotations

import hashlib
import os
import socket

import pytest
import torch
import torchvision

from tracekit.errors import TracekitError
from tracekit.models.factories import timm_model, torchvision_model
from tracekit.models.normalize import IMAGENET_MEAN, IMAGENET_STD, Normalized
from tracekit.models.torchvision_models import cached_weights_file


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network (any connection attempt fails the test) and empty torch / Hugging Face caches."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model loader tried to use the network")

    import huggingface_hub.constants

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))


def normalized(x: torch.Tensor, mean, std) -> torch.Tensor:
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def sha256_of(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def test_random_resnet18_has_imagenet_classes_and_folded_normalization(x):
    torch.manual_seed(0)
    loaded = torchvision_model("resnet18")
    torch.manual_seed(0)
    bare = torchvision.models.resnet18().eval()

    assert loaded.input_size == (3, 224, 224)
    assert loaded.num_classes == 1000
    assert loaded.class_names[:2] == ["tench", "goldfish"]
    assert loaded.wnids is not None and loaded.wnids[:2] == ["n01440764", "n01443537"]
    assert loaded.info["random_init"] is True and loaded.info["weights"] is None
    assert not loaded.module.training
    assert isinstance(loaded.module, Normalized) and loaded.module.mean.shape == (1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), bare(normalized(x, IMAGENET_MEAN, IMAGENET_STD)))


def test_state_dict_file_round_trip_and_class_count_mismatch(tmp_path, x):
    bare = torchvision.models.resnet18(num_classes=5).eval()
    path = tmp_path / "finetuned.pth"
    torch.save(bare.state_dict(), path)

    loaded = torchvision_model("resnet18", weights=str(path), num_classes=5)

    assert loaded.class_names == [f"class{i}" for i in range(5)] and loaded.wnids is None
    assert loaded.info["weights_file"] == str(path) and loaded.info["sha256"] == sha256_of(path)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), bare(normalized(x, IMAGENET_MEAN, IMAGENET_STD)))
    with pytest.raises(TracekitError, match=r"size mismatch.*fc\.weight: file \[5, 512\], model \[1000, 512\]"):
        torchvision_model("resnet18", weights=str(path))


def test_weights_name_not_in_cache_names_the_path_looked_for(tmp_path):
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(TracekitError) as err:
        torchvision_model("resnet18", weights="IMAGENET1K_V1")
    assert str(expected) in str(err.value)
    assert "weights: /path/to/resnet18-f37072fd.pth" in str(err.value)
    assert not expected.exists()


def test_weights_name_loads_the_cached_file(x):
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    torch.manual_seed(3)
    bare = torchvision.models.resnet18().eval()
    file = cached_weights_file(weights)
    file.parent.mkdir(parents=True)
    torch.save(bare.state_dict(), file)

    loaded = torchvision_model("resnet18", weights="DEFAULT")

    assert loaded.info["weights"] == "IMAGENET1K_V1"
    assert loaded.info["sha256"] == sha256_of(file) and loaded.info["weights_file"] == str(file)
    assert loaded.class_names == weights.meta["categories"] and loaded.wnids[0] == "n01440764"
    assert loaded.info["crop_pct"] == pytest.approx(224 / 256)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), bare(normalized(x, IMAGENET_MEAN, IMAGENET_STD)))


def test_cached_file_that_is_not_plain_weights_is_refused():
    file = cached_weights_file(torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
    file.parent.mkdir(parents=True)
    torch.save(torch.nn.Linear(2, 2), file)  # a whole pickled module, not a state dict

    before = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    with pytest.raises(TracekitError, match=r"torch\.nn\.modules\.linear\.Linear.*only loads plain weights"):
        torchvision_model("resnet18", weights="IMAGENET1K_V1")
    assert os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD") == before


def test_bad_names_and_paths_are_answered_with_suggestions(tmp_path):
    with pytest.raises(TracekitError, match="unknown torchvision architecture 'resnt18'.*'resnet18'"):
        torchvision_model("resnt18")
    with pytest.raises(TracekitError, match="unknown weights 'IMAGENET1K_V9'.*'IMAGENET1K_V1'"):
        torchvision_model("resnet18", weights="IMAGENET1K_V9")
    with pytest.raises(TracekitError, match="does not exist"):
        torchvision_model("resnet18", weights=str(tmp_path / "missing.pth"))
    with pytest.raises(TracekitError, match="predict 1000 classes, not num_classes=10"):
        torchvision_model("resnet18", weights="IMAGENET1K_V1", num_classes=10)


def test_other_class_counts_get_generic_names(x):
    loaded = torchvision_model("resnet18", num_classes=7)
    assert loaded.class_names == [f"class{i}" for i in range(7)] and loaded.wnids is None
    with torch.no_grad():
        assert loaded.module(x).shape == (2, 7)


# timm ---------------------------------------------------------------------------------------


def timm_bare(arch: str = "test_resnet", seed: int = 0) -> torch.nn.Module:
    import timm

    torch.manual_seed(seed)
    return timm.create_model(arch).eval()


def test_timm_weights_file_round_trip(tmp_path):
    bare = timm_bare(seed=5)
    path = tmp_path / "test_resnet.pth"
    torch.save(bare.state_dict(), path)

    loaded = timm_model("test_resnet", weights=path)

    assert loaded.input_size == (3, 160, 160)  # test_resnet's pretrained_cfg
    assert loaded.info["mean"] == [0.5, 0.5, 0.5] and loaded.info["crop_pct"] == pytest.approx(0.95)
    assert loaded.class_names[0] == "tench" and loaded.wnids[0] == "n01440764"
    assert loaded.info["sha256"] == sha256_of(path)
    x = torch.rand(2, 3, 160, 160)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), bare((x - 0.5) / 0.5))


def test_timm_pretrained_loads_only_from_the_hugging_face_cache(tmp_path):
    from safetensors.torch import save_file

    repo = tmp_path / "hf" / "models--timm--test_resnet.r160_in1k"
    with pytest.raises(TracekitError) as err:
        timm_model("test_resnet", pretrained=True)
    assert str(repo / "snapshots" / "*" / "model.safetensors") in str(err.value)
    assert "never downloads" in str(err.value)

    bare = timm_bare(seed=7)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    file = repo / "snapshots" / "0123abcd" / "model.safetensors"
    save_file({k: v.contiguous() for k, v in bare.state_dict().items()}, str(file))

    loaded = timm_model("test_resnet", pretrained=True)

    assert loaded.info["weights_file"] == str(file) and loaded.info["pretrained"] is True
    x = torch.rand(1, 3, 160, 160)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), bare((x - 0.5) / 0.5))


def test_timm_pretrained_also_finds_the_torch_hub_cache(tmp_path):
    from timm.models import get_pretrained_cfg

    bare = timm_bare("resnet18", seed=2)
    url = get_pretrained_cfg("resnet18.tv_in1k").url
    file = tmp_path / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    file.parent.mkdir(parents=True)
    torch.save(bare.state_dict(), file)

    loaded = timm_model("resnet18.tv_in1k", pretrained=True)

    assert loaded.info["weights_file"] == str(file)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), bare(normalized(x, IMAGENET_MEAN, IMAGENET_STD)))


def test_timm_bad_input(tmp_path):
    with pytest.raises(TracekitError, match="unknown timm architecture 'test_resnt'.*'test_resnet'"):
        timm_model("test_resnt")
    with pytest.raises(TracekitError, match="either pretrained: true or weights"):
        timm_model("test_resnet", pretrained=True, weights=tmp_path / "w.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(TracekitError, match="cannot read .*garbage.pth as PyTorch weights"):
        timm_model("test_resnet", weights=garbage)
    other = tmp_path / "other.pth"
    torch.save(timm_bare("test_efficientnet").state_dict(), other)
    with pytest.raises(TracekitError, match="does not fit the model"):
        timm_model("test_resnet", weights=other)
