"""npz: image arrays in any common layout and dtype, checked against the model's input."""

from __future__ import annotations

import pickle
import zipfile

import numpy as np
import pytest
import torch

from tracekit.datasets import npyfiles
from tracekit.datasets.factories import npz
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


@pytest.mark.parametrize(
    ("value", "message"),
    [(1.5, r"image 'data-1' ranges over \[0, 1.5\], outside \[0, 1\]"), (np.nan, "image 'data-1' .*NaN")],
)
def test_float_values_are_checked_image_by_image(tmp_path, value, message):
    images = np.zeros((3, 8, 8))
    images[1, 2, 3] = value
    dataset = npz(write(tmp_path, images=images, labels=np.zeros(3, int)))
    assert dataset.item(0, model())[0] == "data-0"
    with pytest.raises(TracekitError, match=message):
        dataset.item(1, model())
    with pytest.raises(TracekitError, match=message):
        list(dataset.samples(model()))


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


def items(dataset, m):
    return [dataset.item(i, m) for i in range(len(dataset))]


def npy_bytes(header: dict, data: bytes) -> bytes:
    """A .npy file: the header as given (it may declare more than `data` holds), then `data`."""
    import io

    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, header)
    return out.getvalue() + data


def test_a_folder_of_npy_files_and_an_uncompressed_npz_are_memory_mapped(tmp_path, rng, monkeypatch):
    images = rng.integers(0, 256, (60, 8, 8, 3), dtype=np.uint8)
    labels, names = np.arange(60) % 3, np.array([f"img{i}" for i in range(60)])
    reference = items(npz(write(tmp_path, "compressed_is_in_memory", images=images, labels=labels)), model(1))
    folder = tmp_path / "folder"
    folder.mkdir()
    np.save(folder / "images.npy", np.asfortranarray(images))  # any order
    np.save(folder / "labels.npy", labels)
    np.save(folder / "names.npy", names)
    archive = tmp_path / "archive.npz"
    np.savez(archive, images=images, labels=labels, names=names)

    def no_load(*args, **kwargs):
        raise AssertionError("np.load reads arrays whole")

    monkeypatch.setattr(np, "load", no_load)
    for path in (folder, archive):
        dataset = npz(path, ids_key="names", limit=5)
        assert isinstance(dataset._images, np.memmap) and dataset.info["memory_mapped"]
        got = items(dataset, model(1))
        assert [g[0] for g in got] == list(names[:5]) and [g[2] for g in got] == [r[2] for r in reference[:5]]
        assert all(torch.equal(g[1], r[1]) for g, r in zip(got, reference))
        state = pickle.dumps(dataset)
        assert len(state) < images.nbytes / 4  # the image data are not pickled: mapped again
        copy = pickle.loads(state)
        assert isinstance(copy._images, np.memmap)
        assert all(torch.equal(c[1], g[1]) for c, g in zip(items(copy, model(1)), got))


def test_a_header_declaring_more_than_the_file_holds_is_a_clear_error(tmp_path):
    header = {"descr": "<f4", "fortran_order": False, "shape": (10**12, 3, 8, 8)}
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "images.npy").write_bytes(npy_bytes(header, bytes(3 * 8 * 8 * 4)))
    np.save(folder / "labels.npy", np.zeros(1, int))
    archive = tmp_path / "archive.npz"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("images.npy", npy_bytes(header, bytes(3 * 8 * 8 * 4)))
        zf.writestr("labels.npy", npy_bytes({"descr": "<i8", "fortran_order": False, "shape": (1,)}, bytes(8)))
    for path in (folder, archive):
        declared = r"'images.npy'.*shape \[1000000000000, 3, 8, 8\].*truncated or corrupt"
        with pytest.raises(TracekitError, match=declared):
            npz(path)


def test_a_large_compressed_member_is_refused(tmp_path, rng, monkeypatch):
    images = rng.integers(0, 256, (4, 8, 8), dtype=np.uint8)
    path = tmp_path / "compressed.npz"
    np.savez_compressed(path, images=images, labels=np.zeros(4, int))
    dataset = npz(path)  # small: read whole
    assert not dataset.info["memory_mapped"]
    assert torch.equal(torch.stack([i[1][0] for i in items(dataset, model(1))]), torch.from_numpy(images) / 255)
    monkeypatch.setattr(npyfiles, "MAX_COMPRESSED_BYTES", images.nbytes - 1)
    advice = r"'images.npy' is compressed.*np.savez \(not np.savez_compressed\).*\.npy files"
    with pytest.raises(TracekitError, match=advice):
        npz(path)


def test_a_limit_decompresses_only_the_images_it_keeps(tmp_path, rng, monkeypatch):
    images = rng.integers(0, 256, (6, 8, 8), dtype=np.uint8)
    path = tmp_path / "compressed.npz"
    np.savez_compressed(path, images=images, labels=np.arange(6) % 3)
    monkeypatch.setattr(npyfiles, "MAX_COMPRESSED_BYTES", 2 * 64)  # two images' worth
    with pytest.raises(TracekitError, match="is compressed"):
        npz(path)
    dataset = npz(path, limit=2)
    assert len(dataset) == 2 and dataset.info["file_size"] == 6
    got = torch.stack([i[1][0] for i in items(dataset, model(1))])
    assert torch.equal(got, torch.from_numpy(images[:2]) / 255)
    clone = pickle.loads(pickle.dumps(dataset))  # as a DataLoader worker gets it
    assert torch.equal(torch.stack([i[1][0] for i in items(clone, model(1))]), got)


def test_pickled_object_arrays_are_refused(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    np.save(folder / "images.npy", np.zeros((2, 8, 8)))
    np.save(folder / "labels.npy", np.array([0, "x"], dtype=object), allow_pickle=True)
    with pytest.raises(TracekitError, match="'labels.npy': holds Python objects"):
        npz(folder)
