"""Integrated gradients: equal to Captum's right Riemann sum, complete, and chunk-independent."""

from __future__ import annotations

import pytest
import torch

import tracekit
from tracekit.errors import SpecError
from tracekit.saliency.integrated_gradients import IntegratedGradients
from tracekit.testing import tiny_model


def images(n: int = 6, channels: int = 1, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, channels, 16, 16, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "steps, chunk",  # chunk = images per forward pass: 6 images, so 1 step, 3 steps, or every step
    [(2, 1000), (7, 1), (7, 20), (32, 20), (32, 1000)],
)
def test_matches_captum_riemann_right(tiny, steps: int, chunk: int) -> None:
    from captum.attr import IntegratedGradients as CaptumIG

    x, target = images(), torch.tensor([0, 1, 2, 0, 1, 2])
    reference = CaptumIG(tiny.module).attribute(x, target=target, n_steps=steps, method="riemann_right")
    ours = IntegratedGradients(steps, chunk=chunk).maps(tiny.module, x, target)
    # Same terms, summed in another order: float32 rounding only.
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6 * float(reference.abs().max()))


def test_default_target_is_the_class_predicted_for_the_image(tiny) -> None:
    x = images()
    predicted = tiny.module(x).argmax(1)
    ig = IntegratedGradients(8)
    assert torch.equal(ig.maps(tiny.module, x), ig.maps(tiny.module, x, predicted))


def test_one_step_is_input_times_gradient(tiny) -> None:
    x = images()
    gradient = tracekit.create("saliency", "gradient").maps(tiny.module, x)
    assert torch.equal(IntegratedGradients(1).maps(tiny.module, x), x * gradient)


def test_completeness_attributions_sum_to_the_logit_difference() -> None:
    # Sundararajan et al., Prop. 1: sum_i IG_i(x) = F_t(x) - F_t(0), approached as steps grow.
    model = tiny_model(channels=3).module
    x = images(4, channels=3, seed=2)
    with torch.no_grad():
        logits = model(x)
        target = logits.argmax(1, keepdim=True)
        difference = (logits - model(torch.zeros_like(x))).gather(1, target).squeeze(1)

    def relative_error(steps: int) -> float:
        total = IntegratedGradients(steps).maps(model, x).sum(dim=(1, 2, 3))
        return float(((total - difference).abs() / difference.abs()).max())

    coarse, fine = relative_error(8), relative_error(256)
    assert fine < 0.03 and fine < coarse / 5, (coarse, fine)


def test_steps_are_validated() -> None:
    saliency = tracekit.plugins.registry("saliency")
    assert tracekit.create("saliency", "integrated-gradients", steps=5).steps == 5
    with pytest.raises(SpecError, match="steps: Input should be greater than or equal to 1"):
        saliency.resolve({"name": "integrated-gradients", "steps": 0})
    with pytest.raises(SpecError, match="did you mean 'steps'"):
        saliency.resolve({"name": "integrated-gradients", "n_steps": 8})
