"""The local-entropy map against scikit-image's rank entropy, and the `local-entropy` score."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.filters.rank import entropy as skimage_entropy
from skimage.morphology import footprint_rectangle

import tracekit.scores.entropy as entropy_module
from tracekit.errors import SpecError, TracekitError
from tracekit.plugins import registry
from tracekit.scores import local_entropy_map, to_gray_u8
from tracekit.scores.entropy import LocalEntropy

SHAPES = [(1, 1), (1, 7), (3, 3), (7, 1), (17, 23), (64, 48)]


def reference(images: torch.Tensor, size: int) -> np.ndarray:
    footprint = footprint_rectangle((size, size))
    return np.stack([skimage_entropy(image, footprint) for image in images.numpy()])


def test_images(h: int, w: int, seed: int) -> torch.Tensor:
    """Random 8-bit, few distinct values, constant, checkerboard, ramps and a dark speckle."""
    gen = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    images = [
        torch.randint(0, 256, (h, w), generator=gen),
        torch.randint(0, 3, (h, w), generator=gen) * 120,
        torch.full((h, w), 77),
        ((y + x) % 2) * 255,
        x * 255 // max(w - 1, 1),
        (y * 7 + x * 3) % 256,
        torch.where(torch.rand((h, w), generator=gen) < 0.05, 255, 0),
    ]
    return torch.stack(images).to(torch.uint8)


test_images.__test__ = False  # a helper, not a test


@pytest.mark.parametrize("size", [3, 5, 7])
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_skimage(shape, size):
    images = test_images(*shape, seed=shape[0] * 100 + shape[1])
    got = local_entropy_map(images, size)
    assert got.shape == images.shape and got.dtype == torch.float64 and (got >= 0).all()
    np.testing.assert_allclose(got.numpy(), reference(images, size), rtol=0, atol=1e-6)


@pytest.mark.parametrize("size", [1, 9, 15])
def test_matches_skimage_at_other_sizes(size):
    images = test_images(20, 18, seed=size)
    np.testing.assert_allclose(local_entropy_map(images, size).numpy(), reference(images, size), atol=1e-6)


def test_matches_skimage_on_a_large_image():
    gen = torch.Generator().manual_seed(5)
    image = (torch.rand((1, 224, 224), generator=gen) ** 3 * 255).to(torch.uint8)
    np.testing.assert_allclose(local_entropy_map(image).numpy(), reference(image, 3), atol=1e-6)


def test_hand_computed_values():
    image = torch.arange(9, dtype=torch.uint8).reshape(1, 3, 3)  # all distinct
    got = local_entropy_map(image)[0]
    assert got[1, 1].item() == pytest.approx(math.log2(9))  # 9 neighbours
    assert got[0, 0].item() == pytest.approx(2.0)  # 4 neighbours inside the image
    assert got[0, 1].item() == pytest.approx(math.log2(6))
    board = torch.tensor([[[0, 1, 0], [1, 0, 1], [0, 1, 0]]], dtype=torch.uint8)
    p = 5 / 9
    assert local_entropy_map(board)[0, 1, 1].item() == pytest.approx(-p * math.log2(p) - (1 - p) * math.log2(1 - p))


@pytest.mark.parametrize("size", [3, 5])
def test_batch_equals_images_one_by_one_across_chunks(monkeypatch, size):
    images = torch.cat([test_images(19, 13, seed=s) for s in range(3)])
    whole = local_entropy_map(images, size)
    # equal up to float64 rounding: vectorized and scalar log2 may differ in the last bit
    monkeypatch.setattr(entropy_module, "_CPU_CHUNK_BYTES", 1)  # one image per chunk
    monkeypatch.setattr(entropy_module, "_CPU_CHUNK_PIXELS", 1)
    torch.testing.assert_close(local_entropy_map(images, size), whole, rtol=0, atol=1e-12)
    for i in range(len(images)):
        torch.testing.assert_close(local_entropy_map(images[i : i + 1], size)[0], whole[i], rtol=0, atol=1e-12)


def test_sorting_network_sorts():
    """The 3x3 way's network sorts every 0/1 input of 9 (the 0-1 principle: then it sorts all)."""
    network = entropy_module._SORT_9
    patterns = (torch.arange(512)[:, None] >> torch.arange(9)) & 1
    values = list(patterns.T.clone())
    for a, b in network:
        values[a], values[b] = torch.minimum(values[a], values[b]), torch.maximum(values[a], values[b])
    assert torch.equal(torch.stack(values).T, patterns.sort(dim=1).values)


def test_integer_valued_inputs_of_other_dtypes():
    images = test_images(9, 11, seed=6)
    expected = local_entropy_map(images)
    for dtype in (torch.int64, torch.int16, torch.float32, torch.float64):
        assert torch.equal(local_entropy_map(images.to(dtype)), expected)


def test_into_a_given_buffer():
    images = test_images(9, 11, seed=9)
    out = torch.full((len(images), 9, 11), -1.0, dtype=torch.float64)
    assert local_entropy_map(images, out=out) is out
    assert torch.equal(out, local_entropy_map(images))
    for bad in (out.float(), out[:, :, :10], out.transpose(1, 2).contiguous().transpose(1, 2)):
        with pytest.raises(TracekitError, match="contiguous float64 tensor of shape"):
            local_entropy_map(images, out=bad)


def test_empty_batch():
    assert local_entropy_map(torch.zeros((0, 5, 5), dtype=torch.uint8)).shape == (0, 5, 5)


@pytest.mark.parametrize(
    "images, size, message",
    [
        (torch.zeros((4, 4), dtype=torch.uint8), 3, r"\[N,H,W\]"),
        (torch.full((1, 4, 4), 0.5), 3, "integers in \\[0, 255\\]"),
        (torch.full((1, 4, 4), 256), 3, "integers in \\[0, 255\\]"),
        (torch.full((1, 4, 4), -1), 3, "integers in \\[0, 255\\]"),
        (torch.zeros((1, 4, 4), dtype=torch.uint8), 4, "odd"),
        (torch.zeros((1, 4, 4), dtype=torch.uint8), 0, "odd"),
    ],
)
def test_bad_input_is_a_clear_error(images, size, message):
    with pytest.raises(TracekitError, match=message):
        local_entropy_map(images, size)


@pytest.mark.parametrize("size", [3, 5])
@pytest.mark.parametrize("channels, dtype", [(3, torch.float32), (1, torch.float32), (1, torch.float64)])
def test_score_is_the_mean_of_the_map_of_the_gray_conversion(size, channels, dtype):
    gen = torch.Generator().manual_seed(7)
    maps = torch.randn((4, channels, 16, 16), generator=gen, dtype=dtype)
    maps[1] = 0.0
    before = maps.clone()
    scorer = LocalEntropy(size=size)
    expected_map = local_entropy_map(to_gray_u8(maps), size)
    assert torch.equal(scorer.map(maps), expected_map)
    assert torch.equal(maps, before)  # the gray buffer the map is written over is its own
    scores = scorer.score(maps)
    assert scores.shape == (4,)
    torch.testing.assert_close(scores, expected_map.mean(dim=(1, 2)))
    assert 0 <= scores[1] < 1e-12 and (scores[[0, 2, 3]] > 1).all()
    assert not scores.is_inference()  # computed in inference mode, but callers may modify it
    scores.add_(1)


@pytest.mark.parametrize("shape", [(3, 1, 1, 1), (3, 1, 1, 7), (2, 3, 5, 3), (2, 1, 0, 4)])
def test_map_of_small_and_thin_maps(shape):
    # LocalEntropy quantizes into the bordered image the 3x3 way reads; local_entropy_map pads
    maps = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape)))
    assert torch.equal(LocalEntropy().map(maps), local_entropy_map(to_gray_u8(maps), 3))


def test_score_in_chunks_of_maps(monkeypatch):
    gen = torch.Generator().manual_seed(8)
    maps = torch.randn((5, 1, 12, 12), generator=gen)
    whole = LocalEntropy().score(maps)
    monkeypatch.setattr(entropy_module, "_CPU_CHUNK_PIXELS", 2 * 12 * 12)  # two maps per chunk
    assert torch.equal(LocalEntropy().score(maps), whole)
    assert LocalEntropy().score(maps[:0]).shape == (0,)


def test_registered_factory_validates_size():
    scores = registry("score")
    assert scores.resolve({"name": "local-entropy"}) == {"name": "local-entropy", "size": 3}
    scorer = scores.create("local-entropy", size=5)
    assert isinstance(scorer, LocalEntropy) and scorer.size == 5
    with pytest.raises(SpecError, match="size must be odd"):
        scores.resolve({"name": "local-entropy", "size": 4})
    for bad in (0, 17):
        with pytest.raises(SpecError, match="size"):
            scores.resolve({"name": "local-entropy", "size": bad})
