"""The differentiable entropy surrogate: exact in its limits, differentiable, and tracking the real score."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from scipy.stats import spearmanr

import tracekit
from tracekit.attacks.native import NativeFastGradient
from tracekit.datasets.digits import digits_arrays
from tracekit.errors import TracekitError
from tracekit.scores.entropy import local_entropy_map
from tracekit.scores.global_entropy import histogram_entropy
from tracekit.scores.entropy_surrogate import (
    soft_gray,
    soft_histogram_entropy,
    soft_local_entropy_map,
    surrogate_score,
)
from tracekit.scores.gray import to_gray_float
from tracekit.testing import tiny_model
from tracekit.threads import applied


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One torch thread: small second-order graphs are many times slower with two threads while
    other work shares a 2-core machine."""
    with applied(1):
        yield


@pytest.mark.parametrize("size", [1, 3, 5])
def test_narrow_kernel_gives_the_real_local_entropy(size: int) -> None:
    # Integer values a kernel of width 0.01 cannot confuse: soft counts are exact counts,
    # borders included; few distinct values, so windows hold repeats.
    u8 = torch.randint(0, 4, (3, 11, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    u8[0, :, :3] = 200
    soft = soft_local_entropy_map(u8.double(), size, sigma=0.01)
    torch.testing.assert_close(soft, local_entropy_map(u8, size), rtol=0, atol=1e-12)


def test_even_window_is_refused() -> None:
    with pytest.raises(TracekitError, match="odd"):
        soft_local_entropy_map(torch.zeros(1, 4, 4), size=2)


def test_wider_kernel_counts_close_values_as_equal() -> None:
    # A 3x3 image of values 0, 0.1, ..., 0.8: nine distinct bytes (entropy log2 9 at the centre)
    # that a kernel of width 10 sees as nearly one value (entropy near 0).
    gray = torch.arange(9, dtype=torch.float64).view(1, 3, 3) / 10
    assert soft_local_entropy_map(gray, 3, sigma=0.01)[0, 1, 1].item() == pytest.approx(math.log2(9))
    assert soft_local_entropy_map(gray, 3, sigma=10.0)[0, 1, 1].item() < 0.01


def test_linear_binning_gives_the_real_histogram_entropy_on_bin_centres() -> None:
    # Gray values at bin centres (v + 0.5) and at the clips 0 and 255 fall wholly in one bin each,
    # as the real histogram counts them; between two centres the mass is shared.
    values = torch.randint(0, 256, (3, 12, 12), generator=torch.Generator().manual_seed(2)).double()
    values[:, 0, :3] = torch.tensor([0.0, 255.0, 255.0])
    gray = torch.where((values > 0) & (values < 255), values + 0.5, values)
    torch.testing.assert_close(soft_histogram_entropy(gray), histogram_entropy(values.to(torch.uint8)))
    shared = soft_histogram_entropy(torch.tensor([[[10.5, 11.0]]], dtype=torch.float64))
    assert 0 < shared.item() < 1  # 10.5 in bin 10; 11.0 half in 10, half in 11


def test_soft_gray_is_the_real_conversion_before_the_floor() -> None:
    maps = torch.randn(4, 3, 10, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(soft_gray(maps), 255 * to_gray_float(maps))


def test_surrogate_gradient_matches_finite_differences() -> None:
    # Second order through the smoothed network: the surrogate's input gradient (float64) against
    # central differences, which a missing create_graph or a detached guided backward would fail.
    model = tiny_model(size=8).module.double()
    images = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    target = torch.tensor([2])
    score = lambda x: surrogate_score(model, x, target, beta=5.0, sigma=2.0)  # noqa: E731
    assert torch.autograd.gradcheck(score, images.requires_grad_(True), eps=1e-6, atol=1e-5)


def test_model_is_left_untouched() -> None:
    model = tiny_model().module
    before = copy.deepcopy(model.state_dict())
    images = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(4), requires_grad=True)
    (grad,) = torch.autograd.grad(surrogate_score(model, images).sum(), images)
    assert grad.abs().sum() > 0 and torch.isfinite(grad).all()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert not model.training
    # With images that do not require grad the score is still computed (no graph to the caller).
    assert surrogate_score(model, images.detach()).shape == (4,)


def test_surrogate_tracks_the_real_score_on_digits() -> None:
    model = tracekit.create("model", "digits-cnn").module
    _, images, labels = digits_arrays("test")
    images, labels = images[:64], labels[:64]
    signs = torch.randint(0, 2, (21, *images.shape[1:]), generator=torch.Generator().manual_seed(5)) * 2 - 1
    varied = torch.cat(
        [
            images[:22],
            NativeFastGradient("inf", 0.1).generate(model, images[22:43], labels[22:43]),
            (images[43:] + 0.1 * signs).clamp(0, 1),
        ]
    )
    real = tracekit.create("detector", "feature-response").score(model, varied)
    surrogate = surrogate_score(model, varied).detach()  # defaults: beta 10, sigma 1
    assert real.std() > 0.02  # the scores do vary
    assert spearmanr(surrogate.numpy(), real.numpy()).statistic > 0.9
