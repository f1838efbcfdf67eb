"""npz: image arrays in any common layout and dtype, checked against the model's input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tracekit.datasets.npz import npz
from tracekit.errors import TracekitError
from tracekit.protocols import LoadedModel
from tracekit.testing import TinyCNN


def model(channels: int = 3, size: int = 8) -> LoadedModel:
    return LoadedModel(TinyCNN(channels, size, 3).eval(), (channels, size, size), ["a", "b", "c"])


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def write(tmp_path, name="data", **arrays):
    path = tmp_path / f"{name}.npz"
    np.savez(path, **arrays)
    return path


def as_tensors(dataset, m):
    samples = list(dataset.samples(m))
    return [s[0] for s in samples], torch.stack([s[1] for s in samples]), [s[2] for s in samples]


def test_uint8_nhwc(tmp_path, rng):
    images = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    path = write(tmp_path, images=images, labels=np.array([0, 1, 2, 1]))
    dataset = npz(path)

    ids, x, labels = as_tensors(dataset, model())

    assert ids == ["data-0", "data-1", "data-2", "data-3"] and labels == [0, 1, 2, 1]
    assert x.dtype == torch.float32 and x.shape == (4, 3, 8, 8)
    torch.testing.assert_close(x, torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    assert dataset.info["layout"] == "NHWC" and dataset.info["size"] == 4


def test_float_nchw_with_ids_and_limit(tmp_path, rng):
    images = rng.random((5, 3, 8, 8), dtype=np.float32)
    names = np.array([f"img{i}" for i in range(5)])
    path = write(tmp_path, x=images, y=np.arange(5) % 3, names=names)

    ids, x, labels = as_tensors(npz(path, limit=3, images_key="x", labels_key="y", ids_key="names"), model())

    assert ids == ["img0", "img1", "img2"] and labels == [0, 1, 2]
    torch.testing.assert_close(x, torch.from_numpy(images[:3]))


def test_channels_are_converted_to_the_models(tmp_path, rng):
    gray = rng.random((2, 8, 8))  # (N, H, W) float64
    _, x, _ = as_tensors(npz(write(tmp_path, "gray", images=gray, labels=np.zeros(2, int))), model(3))
    assert x.shape == (2, 3, 8, 8)
    torch.testing.assert_close(x, torch.from_numpy(gray).float()[:, None].expand(2, 3, 8, 8))

    rgb = rng.integers(0, 256, (2, 3, 8, 8), dtype=np.uint8)
    _, x, _ = as_tensors(npz(write(tmp_path, "rgb", images=rgb, labels=np.zeros(2, int))), model(1))
    luma = (0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]) / 255
    assert x.shape == (2, 1, 8, 8)
    torch.testing.assert_close(x[:, 0], torch.from_numpy(luma).float(), atol=1e-6, rtol=0)


def test_missing_keys_name_the_available_ones(tmp_path, rng):
    path = write(tmp_path, pixels=rng.random((2, 8, 8)), targets=np.zeros(2, int))
    with pytest.raises(TracekitError, match="has no images 'images', labels 'labels'; its arrays are: pixels, targets"):
        npz(path)
    with pytest.raises(TracekitError, match="has no ids 'names'"):
        npz(path, images_key="pixels", labels_key="targets", ids_key="names")


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (np.full((2, 8, 8), 1.5), np.zeros(2, int), r"range over \[1.5, 1.5\], outside \[0, 1\]"),
        (np.full((2, 8, 8), np.nan), np.zeros(2, int), "NaN"),
        (np.zeros((2, 8, 8), np.int16), np.zeros(2, int), "int16; store uint8"),
        (np.zeros((2, 8, 8)), np.zeros(2), "must be 2 integers"),
        (np.zeros((2, 8, 8)), np.zeros(3, int), "must be 2 integers"),
        (np.zeros((2, 8, 8)), np.array([0, -1]), "negative labels"),
        (np.zeros((0, 8, 8)), np.zeros(0, int), "holds no images"),
        (np.zeros((2, 8)), np.zeros(2, int), r"has shape \[2, 8\]"),
    ],
)
def test_bad_values_are_refused(tmp_path, images, labels, message):
    with pytest.raises(TracekitError, match=message):
        npz(write(tmp_path, images=images, labels=labels))


def test_shape_mismatch_with_the_model(tmp_path):
    dataset = npz(write(tmp_path, images=np.zeros((2, 3, 10, 10), np.uint8), labels=np.zeros(2, int)))
    with pytest.raises(TracekitError, match=r"\[2, 3, 10, 10\] do not fit the model's 3x8x8 input"):
        list(dataset.samples(model()))


def test_bad_files(tmp_path):
    with pytest.raises(TracekitError, match="does not exist"):
        npz(tmp_path / "missing.npz")
    single = tmp_path / "single.npy"
    np.save(single, np.zeros((2, 8, 8)))
    with pytest.raises(TracekitError, match="single array, not an .npz archive"):
        npz(single)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"no zip here")
    with pytest.raises(TracekitError, match="cannot read it as a NumPy .npz file"):
        npz(garbage)
    dup = write(tmp_path, "dup", images=np.zeros((2, 8, 8)), labels=np.zeros(2, int), ids=np.array(["a", "a"]))
    with pytest.raises(TracekitError, match="duplicate ids"):
        npz(dup, ids_key="ids")
