"""The default gray conversion against a NumPy transcription of the formula of docs/method.md
("The detector, step by step", step 2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tracekit.errors import TracekitError
from tracekit.scores import to_gray_u8
from tracekit.scores.gray import percentile_rows, to_gray_float


def gray_reference(maps: np.ndarray) -> np.ndarray:
    """g = sum_c |map_c|; clip((g - min) / (p99 - min), 0, 1); floor(g * 255), image by image."""
    out = np.empty((maps.shape[0], *maps.shape[2:]), dtype=np.uint8)
    for i, m in enumerate(maps.astype(np.float64)):
        g = np.abs(m).sum(axis=0)
        low, p99 = g.min(), np.percentile(g, 99)
        scaled = (g - low) / (p99 - low) if p99 > low else (g > low).astype(np.float64)
        out[i] = np.floor(np.clip(scaled, 0, 1) * 255)
    return out


def check(maps: torch.Tensor) -> np.ndarray:
    got = to_gray_u8(maps)
    assert got.dtype == torch.uint8 and got.shape == (maps.shape[0], *maps.shape[2:])
    expected = gray_reference(maps.numpy())
    np.testing.assert_array_equal(got.numpy(), expected)
    return expected


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (4, 3, 17, 23), (2, 1, 64, 48), (3, 2, 7, 1), (2, 3, 224, 224)])
def test_random_maps_match_reference(shape):
    gen = torch.Generator().manual_seed(sum(shape))
    check(torch.randn(shape, generator=gen))


def test_negative_maps_use_absolute_values():
    gen = torch.Generator().manual_seed(1)
    maps = -torch.rand((3, 3, 20, 20), generator=gen)
    expected = check(maps)
    np.testing.assert_array_equal(to_gray_u8(-maps).numpy(), expected)


def test_channels_are_summed():
    gen = torch.Generator().manual_seed(2)
    maps = torch.randn((2, 3, 16, 16), generator=gen, dtype=torch.float64)
    summed = maps.abs().sum(1, keepdim=True)
    assert torch.equal(to_gray_u8(maps), to_gray_u8(summed))
    check(maps)


def test_constant_map_is_all_zeros():
    maps = torch.full((2, 3, 9, 9), 0.7)
    maps[1] = 0
    gray = to_gray_u8(maps)
    assert torch.equal(gray, torch.zeros((2, 9, 9), dtype=torch.uint8))
    assert not torch.isnan(to_gray_float(maps)).any()


def test_outliers_are_clipped_at_the_99th_percentile():
    gen = torch.Generator().manual_seed(3)
    maps = torch.rand((1, 1, 50, 50), generator=gen)
    maps[0, 0, 10, 10] = 1000.0  # one huge outlier does not squash the rest to black
    gray = check(maps)
    assert gray.max() == 255 and (gray == 255).sum() >= 25  # the top 1% saturate
    assert np.median(gray) > 100


def test_sparse_map_whose_p99_is_its_minimum():
    maps = torch.zeros((1, 1, 20, 20))
    maps[0, 0, 3, 4] = 5.0  # 1 pixel in 400: p99 == min
    gray = check(maps)
    assert gray.sum() == 255 and gray[0, 3, 4] == 255


def test_batch_equals_images_one_by_one():
    gen = torch.Generator().manual_seed(4)
    maps = torch.randn((5, 3, 12, 10), generator=gen) * torch.tensor([1.0, 10.0, 0.01, 3.0, 0.0]).view(5, 1, 1, 1)
    batch = to_gray_u8(maps)
    for i in range(5):
        assert torch.equal(batch[i], to_gray_u8(maps[i : i + 1])[0])


@pytest.mark.parametrize("m", [1, 2, 3, 100, 101, 250, 1000, 50176])
def test_percentile_rows_equals_numpy(m):
    gen = torch.Generator().manual_seed(m)
    rows = torch.randn((3, m), generator=gen, dtype=torch.float64)
    rows[1] = torch.randint(0, 4, (m,), generator=gen).double()  # ties
    for q in (99.0, 50.0, 0.0, 100.0):
        expected = np.percentile(rows.numpy(), q, axis=1)
        np.testing.assert_array_equal(percentile_rows(rows, q).numpy(), expected)


def test_wrong_shape_is_a_clear_error():
    with pytest.raises(TracekitError, match=r"\[N,C,H,W\]"):
        to_gray_u8(torch.zeros(3, 8, 8))
