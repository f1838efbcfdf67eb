"""imagefolder: PNG/JPEG in class folders, prepared like ImageNet evaluation, folders mapped to classes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from tracekit.datasets.factories import imagefolder
from tracekit.errors import TracekitError
from tracekit.protocols import LoadedModel, Unreadable
from tracekit.testing import TinyCNN


IMAGENET_STYLE = {"crop_pct": 0.875}  # as torchvision's and timm's models record it


def model(names=("cat", "dog", "hot dog"), channels=3, size=16, wnids=None, info=IMAGENET_STYLE) -> LoadedModel:
    module = TinyCNN(channels, size, len(names)).eval()
    return LoadedModel(module, (channels, size, size), list(names), wnids, dict(info))


def reference(path, channels=3, resize=18, crop=16, interpolation=InterpolationMode.BILINEAR) -> torch.Tensor:
    """torchvision's ImageNet evaluation pipeline: Resize(shorter side) -> CenterCrop -> [0, 1]; a
    file already at the crop size is taken as it is."""
    image = Image.open(path).convert("RGB" if channels == 3 else "L")
    if image.size == (crop, crop):
        return TF.to_tensor(image)
    return TF.to_tensor(TF.center_crop(TF.resize(image, resize, interpolation), crop))


def save(path, mode, size, seed=0, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) + ((len(mode),) if mode != "L" else ())
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path, fmt)
    return path


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "images"
    (root / "Dog").mkdir(parents=True)
    Image.new("RGB", (20, 20), (10, 200, 30)).save(root / "Dog" / "a.png")  # one flat colour
    save(root / "Dog" / "b.JPG", "RGB", (37, 23), seed=1, fmt="JPEG")
    save(root / "hot_dog" / "c.png", "L", (16, 16), seed=2)
    save(root / "hot_dog" / "d.png", "RGBA", (24, 40), seed=3)
    save(root / "CAT" / "e.jpeg", "RGB", (30, 50), seed=4, fmt="JPEG")
    (root / "CAT" / "broken.png").write_bytes(b"this is no png")
    (root / "CAT" / "notes.txt").write_text("not an image")
    return root


def collect(dataset, m):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = list(dataset.samples(m))
    return out, [str(w.message) for w in caught]


def test_samples_ids_labels_and_pixels(root):
    dataset = imagefolder(root)
    samples, warned = collect(dataset, model())

    ids = [s[0] for s in samples]
    assert ids == ["Dog/a.png", "hot_dog/c.png", "CAT/e.jpeg", "Dog/b.JPG", "hot_dog/d.png"]  # round-robin
    assert dataset.info["class_mapping"] == {"CAT": 0, "Dog": 1, "hot_dog": 2}
    assert dataset.info["mapping"] == "name"
    assert [s[2] for s in samples] == [1, 2, 0, 1, 2]
    assert list(dataset.info["skipped"]) == ["CAT/broken.png"]
    assert len(warned) == 1 and "broken.png" in warned[0]

    images = dict((s[0], s[1]) for s in samples)
    for sample_id, image in images.items():
        assert image.shape == (3, 16, 16) and image.dtype == torch.float32
        torch.testing.assert_close(image, reference(root / sample_id), atol=1e-6, rtol=0)
    flat = torch.tensor([10, 200, 30]).view(3, 1, 1) / 255.0
    torch.testing.assert_close(images["Dog/a.png"], flat.expand(3, 16, 16))
    gray = images["hot_dog/c.png"]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])


def test_unreadable_files_warn_once_and_ids_are_stable(root):
    dataset = imagefolder(root)
    first, warned_first = collect(dataset, model())
    second, warned_second = collect(dataset, model())
    assert [s[0] for s in first] == [s[0] for s in second]
    assert all(torch.equal(a[1], b[1]) for a, b in zip(first, second))
    assert len(warned_first) == 1 and warned_second == []


def test_item_returns_an_unreadable_file_without_warning_or_recording_it(root):
    dataset = imagefolder(root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        items = [dataset.item(i, model()) for i in range(len(dataset))]
    assert len(dataset) == 6 and items[0] == Unreadable("CAT/broken.png", items[0].reason)
    assert "UnidentifiedImageError" in items[0].reason
    assert dataset.info["skipped"] == {}  # the engine reports unreadable items itself
    samples, warned = collect(dataset, model())
    assert [s[0] for s in samples] == [i[0] for i in items[1:]]
    assert all(torch.equal(s[1], i[1]) for s, i in zip(samples, items[1:]))
    assert dataset.info["skipped"] == {"CAT/broken.png": items[0].reason} and len(warned) == 1


def test_gray_model_limit_and_size(root):
    dataset = imagefolder(root, limit=3)  # the first 3 files round-robin: CAT/broken.png is one
    samples, _ = collect(dataset, model(channels=1))
    assert len(dataset) == 3 and dataset.info["files"] == 6
    assert [s[0] for s in samples] == ["Dog/a.png", "hot_dog/c.png"]
    torch.testing.assert_close(samples[0][1], reference(root / "Dog/a.png", channels=1), atol=1e-6, rtol=0)

    samples, _ = collect(imagefolder(root, size=8), model())
    assert all(s[1].shape == (3, 8, 8) for s in samples)
    torch.testing.assert_close(samples[2][1], reference(root / "CAT/e.jpeg", resize=9, crop=8), atol=1e-6, rtol=0)


def test_a_model_that_declares_no_preprocessing_gets_the_whole_frame(root):
    dataset = imagefolder(root)
    samples, _ = collect(dataset, model(info={}))
    expected = reference(root / "CAT/e.jpeg", resize=16)
    torch.testing.assert_close(dict((s[0], s[1]) for s in samples)["CAT/e.jpeg"], expected, atol=1e-6, rtol=0)
    assert dataset.info["crop_pct"] == 1.0


@pytest.mark.parametrize("info", [{}, IMAGENET_STYLE, {"crop_pct": 0.5, "interpolation": "bicubic"}])
def test_a_file_at_the_models_input_size_is_taken_as_it_is(root, info):
    samples, _ = collect(imagefolder(root), model(info=info))
    image = dict((s[0], s[1]) for s in samples)["hot_dog/c.png"]  # 16x16, the model's input
    pixels = torch.from_numpy(np.asarray(Image.open(root / "hot_dog/c.png"), dtype=np.float32) / 255.0)
    assert torch.equal(image, pixels.expand(3, 16, 16))


def test_model_crop_pct_and_interpolation_are_honoured(root):
    m = model(info={"crop_pct": 1.0, "interpolation": "bicubic"})
    dataset = imagefolder(root)
    samples, _ = collect(dataset, m)
    expected = reference(root / "CAT/e.jpeg", resize=16, interpolation=InterpolationMode.BICUBIC)
    torch.testing.assert_close(dict((s[0], s[1]) for s in samples)["CAT/e.jpeg"], expected, atol=1e-6, rtol=0)
    assert dataset.info["crop_pct"] == 1.0


def test_folders_map_by_wordnet_id_and_name(tmp_path):
    save(tmp_path / "n01443537" / "x.png", "RGB", (16, 16))
    save(tmp_path / "Great_White_Shark" / "y.png", "RGB", (16, 16))
    m = model(("tench", "goldfish", "great white shark"), wnids=["n01440764", "n01443537", "n01484850"])
    dataset = imagefolder(tmp_path)
    samples, _ = collect(dataset, m)
    assert dataset.info["class_mapping"] == {"Great_White_Shark": 2, "n01443537": 1}
    assert dataset.info["mapping"] == "wnid+name"
    assert sorted((s[0], s[2]) for s in samples) == [("Great_White_Shark/y.png", 2), ("n01443537/x.png", 1)]


def test_unmatched_folders_fall_back_to_sorted_order_with_a_warning(tmp_path):
    for folder in ("zeta", "alpha"):
        save(tmp_path / folder / "x.png", "RGB", (16, 16))
    dataset = imagefolder(tmp_path)
    samples, warned = collect(dataset, model())
    assert dataset.info["class_mapping"] == {"alpha": 0, "zeta": 1} and dataset.info["mapping"] == "sorted"
    assert [(s[0], s[2]) for s in samples] == [("alpha/x.png", 0), ("zeta/x.png", 1)]
    assert any("sorted order" in w for w in warned)

    for folder in ("beta", "gamma"):  # four folders cannot be three classes
        save(tmp_path / folder / "x.png", "RGB", (16, 16))
    with pytest.raises(TracekitError, match="4 class folders but the model has 3 classes"):
        collect(imagefolder(tmp_path), model())


def test_some_folders_unmatched_is_an_error_with_suggestions(tmp_path):
    for folder in ("cat", "dgo", "hotdog"):
        save(tmp_path / folder / "x.png", "RGB", (16, 16))
    expected = r"2 folder\(s\) match no class.*'dgo' \(closest: dog\).*'hotdog' \(closest: hot dog"
    with pytest.raises(TracekitError, match=expected):
        collect(imagefolder(tmp_path), model())


def test_ambiguous_class_name_is_an_error(tmp_path):
    save(tmp_path / "crane" / "x.png", "RGB", (16, 16))
    with pytest.raises(TracekitError, match="'crane' names 2 classes of the model"):
        collect(imagefolder(tmp_path), model(("crane", "heron", "crane")))


def test_bad_roots(tmp_path):
    with pytest.raises(TracekitError, match="is not a directory"):
        imagefolder(tmp_path / "missing")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    (tmp_path / "empty" / "cls" / "readme.txt").write_text("x")
    save(tmp_path / "empty" / "loose.png", "RGB", (16, 16))  # not in a class folder
    with pytest.raises(TracekitError, match="no images .* in class folders"):
        imagefolder(tmp_path / "empty")
    (tmp_path / "bad" / "cls").mkdir(parents=True)
    (tmp_path / "bad" / "cls" / "x.png").write_bytes(b"garbage")
    with pytest.raises(TracekitError, match="none of the images .* could be read"):
        collect(imagefolder(tmp_path / "bad"), model())


def test_explain_and_detect_read_files_as_the_dataset_does(root):
    """One loader: a file given to `explain`/`detect` is the tensor the run's dataset made of it."""
    from tracekit.images import read_inputs

    for info in ({}, {"crop_pct": 0.5, "interpolation": "bicubic"}, {"crop_pct": 1.0}):
        m = model(info=info)
        samples, _ = collect(imagefolder(root), m)
        inputs = read_inputs([root / sample_id for sample_id, _, _ in samples], m)
        for (sample_id, image, _), item in zip(samples, inputs):
            assert item.error is None and torch.equal(item.image, image), (info, sample_id)
