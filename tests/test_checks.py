"""`checks.checked`: what a component returns is a floating tensor of the expected shape with
finite values, or one clear error naming the component and the first bad item."""

from __future__ import annotations

import pytest
import torch

from tracekit.checks import checked
from tracekit.errors import TracekitError

WHO = "saliency 'maps-of-mine'"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("item, flat", [(0, 0), (2, 517), (4, 1023)])
def test_a_single_non_finite_value_anywhere_is_found(dtype, bad, item, flat):
    maps = torch.randn(5, 1, 32, 32, generator=torch.Generator().manual_seed(item)).to(dtype)
    assert checked(maps, WHO, (5, None, 32, 32), "maps") is maps
    maps[item].view(-1)[flat] = bad
    with pytest.raises(
        TracekitError, match=rf"^{WHO} returned NaN or infinite values maps \(the first for item {item} of the batch\)$"
    ):
        checked(maps, WHO, (5, None, 32, 32), "maps")


def test_scores_name_their_first_bad_item():
    scores = torch.tensor([0.5, 1.0, float("nan"), float("inf")])
    with pytest.raises(TracekitError, match=r"the first for item 2 of the batch"):
        checked(scores, WHO, (4,), "scores")


def test_empty_and_strided_tensors():
    assert checked(torch.empty(0, 3), WHO, (0, 3)).shape == (0, 3)
    wide = torch.zeros(4, 8)
    wide[:, 1::2] = float("nan")  # NaNs only where the strided view does not look
    assert checked(wide[:, ::2], WHO, (4, 4)).shape == (4, 4)
    with pytest.raises(TracekitError, match=r"item 0"):
        checked(wide[:, 1::2], WHO, (4, 4))


@pytest.mark.parametrize(
    "value, message",
    [
        ([1.0, 2.0], r"returned a list, not a torch tensor"),
        (torch.zeros(2, 3), r"returned of shape 2x3, expected 2x\*x4"),
        (torch.zeros(2, 1, 4, dtype=torch.int64), r"returned of dtype torch.int64, expected floating point"),
    ],
)
def test_wrong_type_shape_or_dtype(value, message):
    with pytest.raises(TracekitError, match=message):
        checked(value, WHO, (2, None, 4))
