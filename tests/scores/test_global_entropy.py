"""global-entropy: the histogram entropy of the gray map equals scikit-image's, image by image."""

from __future__ import annotations

import numpy as np
import torch
from skimage.measure import shannon_entropy

import tracekit
from tracekit.scores import to_gray_u8
from tracekit.scores.global_entropy import GlobalEntropy, histogram_entropy


def maps_batch() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    maps = torch.randn(6, 3, 20, 17, generator=gen)
    maps[1] = maps[1].round()  # few gray levels
    maps[2] = 0.0  # constant: entropy 0
    maps[3, :, :10] = 0.0  # half the image one value
    maps[4] = torch.rand(3, 20, 17, generator=gen) ** 8  # skewed
    return maps


def test_matches_skimage_shannon_entropy_per_image() -> None:
    maps = maps_batch()
    u8 = to_gray_u8(maps)
    expected = [shannon_entropy(image) for image in u8.numpy()]
    got = GlobalEntropy().score(maps)
    assert got.dtype == torch.float64 and got.shape == (6,)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-12)
    assert got[2] == 0.0 and len(set(expected)) == 6  # distinct images, distinct scores


def test_full_256_level_histograms_and_edge_sizes() -> None:
    u8 = torch.arange(256, dtype=torch.uint8).repeat(3, 4).view(3, 32, 32)  # every level 4 times
    u8[1] = u8[1].roll(5, dims=1)
    u8[2, :16] = 255
    entropy = histogram_entropy(u8)
    assert entropy[0] == entropy[1] == 8.0
    np.testing.assert_allclose(entropy[2].item(), shannon_entropy(u8[2].numpy()), atol=1e-12)
    assert histogram_entropy(u8[:0]).shape == (0,)
    assert histogram_entropy(torch.full((2, 1, 1), 7, dtype=torch.uint8)).tolist() == [0.0, 0.0]


def test_map_is_the_surprisal_of_each_pixels_value_and_averages_to_the_score() -> None:
    maps = maps_batch()
    u8 = to_gray_u8(maps).numpy()
    surprisal = GlobalEntropy().map(maps)
    assert surprisal.shape == (6, 20, 17)
    for image, got in zip(u8, surprisal.numpy()):
        values, counts = np.unique(image, return_counts=True)
        frequency = dict(zip(values, counts / image.size))
        np.testing.assert_allclose(got, -np.log2(np.vectorize(frequency.get)(image)), rtol=1e-12)
    torch.testing.assert_close(surprisal.mean(dim=(1, 2)), GlobalEntropy().score(maps), rtol=0, atol=1e-12)


def test_registered_without_parameters() -> None:
    scores = tracekit.plugins.registry("score")
    assert scores.get("global-entropy").source == "tracekit"
    assert scores.resolve({"name": "global-entropy"}) == {"name": "global-entropy"}
    assert isinstance(tracekit.create("score", "global-entropy"), GlobalEntropy)
