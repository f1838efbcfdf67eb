"""Maps of the softplus-smoothed network (`tracekit.saliency.smoothed`), which adaptive attacks
differentiate: they tend to the real maps as the smoothing sharpens, and every ReLU spelling is smoothed."""

from __future__ import annotations

import copy

import pytest
import torch

from tracekit.saliency.gradient import Gradient
from tracekit.saliency.guided_backprop import GuidedBackprop
from tracekit.saliency.smoothed import smooth_gradients
from tracekit.testing import HalfReLU, tiny_model


@pytest.mark.parametrize(("guided", "real"), [(True, GuidedBackprop), (False, Gradient)], ids=["guided", "plain"])
def test_smoothed_maps_tend_to_the_real_maps_as_beta_grows(guided: bool, real: type) -> None:
    model = tiny_model().module
    images = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    exact = real().maps(model, images, target)
    errors = [
        ((smooth_gradients(model, images, target, beta, guided=guided).detach() - exact).norm() / exact.norm()).item()
        for beta in (3.0, 30.0, 30000.0)
    ]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-2


def test_in_place_relu_on_a_view_is_smoothed_and_guided() -> None:
    torch.manual_seed(0)
    reference = HalfReLU(in_place_on_view=False).eval()
    model = copy.deepcopy(reference)
    model.in_place_on_view = True
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    target = torch.tensor([1, 2, 4])
    ours = smooth_gradients(model, images, target, guided=True).detach()
    torch.testing.assert_close(ours, smooth_gradients(reference, images, target, guided=True).detach())
