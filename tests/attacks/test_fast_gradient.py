"""FGSM and the single-step L2 gradient attack (ART-backed) against hand-written torch references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tracekit.attacks.factories import fgsm, gradient
from tracekit.errors import SpecError, TracekitError
from tracekit.plugins import registry
from tracekit.testing import tiny_model


def _grad(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    x = images.clone().requires_grad_(True)
    F.cross_entropy(model(x), labels).backward()
    model.zero_grad(set_to_none=True)
    return x.grad


def _predict(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(images).argmax(1)


def _linf(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).flatten(1).abs().amax(1)


def test_fgsm_equals_torch_reference_and_flips_predictions(model, batch):
    images, labels = batch
    eps = 0.1
    adv = fgsm(eps=eps).generate(model, images, labels)
    reference = (images + eps * _grad(model, images, labels).sign()).clamp(0, 1)
    assert adv.shape == images.shape and adv.dtype == images.dtype and adv.device == images.device
    assert torch.allclose(adv, reference, atol=1e-5, rtol=0)
    assert _linf(adv, images).max() <= eps + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    assert (_predict(model, adv) != labels).float().mean() > 0.5


def test_gradient_equals_torch_reference_with_l2_norm_eps(model, batch):
    images, labels = batch
    eps = 1.5
    adv = gradient(eps=eps).generate(model, images, labels)
    g = _grad(model, images, labels)
    step = eps * g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    assert torch.allclose(adv, (images + step).clamp(0, 1), atol=1e-5, rtol=0)
    norms = (adv - images).flatten(1).norm(dim=1)
    assert norms.max() <= eps + 1e-4
    unclipped = ((images + step) >= 0).flatten(1).all(1) & ((images + step) <= 1).flatten(1).all(1)
    assert unclipped.sum() >= 50  # then the perturbation is exactly eps long
    assert torch.allclose(norms[unclipped], torch.full_like(norms[unclipped], eps), atol=1e-4)
    assert (_predict(model, adv) != labels).float().mean() > 0.5


def test_float64_images_keep_their_dtype_even_under_no_grad(model, batch):
    images, labels = batch
    with torch.no_grad():
        adv = gradient(eps=1.0).generate(model, images.double(), labels)
    assert adv.dtype == torch.float64
    assert torch.allclose(adv, gradient(eps=1.0).generate(model, images, labels).double(), atol=1e-6)


@pytest.mark.parametrize("factory,eps,eps_step", [(fgsm, 0.08, 0.03), (gradient, 0.8, 0.3)])
def test_minimal_succeeds_wherever_fixed_does_with_no_larger_perturbation(model, batch, factory, eps, eps_step):
    # eps is not a multiple of eps_step: plain ART would never try eps itself and miss some images
    images, labels = batch
    fixed = factory(eps=eps).generate(model, images, labels)
    minimal = factory(eps=eps, minimal=True, eps_step=eps_step).generate(model, images, labels)
    fixed_ok = _predict(model, fixed) != labels
    minimal_ok = _predict(model, minimal) != labels
    assert fixed_ok.any() and not fixed_ok.all()
    assert (minimal_ok | ~fixed_ok).all()  # minimal succeeds wherever fixed does
    norm = math.inf if factory is fgsm else 2
    size = (minimal - images).flatten(1).norm(p=norm, dim=1)
    fixed_size = (fixed - images).flatten(1).norm(p=norm, dim=1)
    assert size.max() <= eps + 1e-4
    assert (size[minimal_ok] <= fixed_size[minimal_ok] + 1e-5).all()
    assert (size[minimal_ok] < eps - 1e-3).any()  # it really searched


def test_minimal_fgsm_finds_the_first_step_that_flips(model, batch):
    images, labels = batch
    eps, step = 0.12, 0.02  # images lie in [0.25, 0.9], so L-inf is the step size despite clipping at 1
    adv = fgsm(eps=eps, minimal=True, eps_step=step).generate(model, images, labels)
    sign = _grad(model, images, labels).sign()
    expected = torch.full((len(images),), eps)
    for k in range(6, 0, -1):  # the smallest k*step that flips, else eps
        flips = _predict(model, (images + k * step * sign).clamp(0, 1)) != labels
        expected[flips] = k * step
    assert torch.allclose(_linf(adv, images), expected, atol=1e-5)


def test_one_attack_object_serves_several_models(model, batch):
    images, labels = batch
    other = tiny_model(seed=1).module  # untrained: the reference needs only gradients
    attack = fgsm(eps=0.05)
    for m in (model, other, model):
        reference = (images + 0.05 * _grad(m, images, labels).sign()).clamp(0, 1)
        assert torch.allclose(attack.generate(m, images, labels), reference, atol=1e-5)


def test_a_float64_model_is_refused_with_a_clear_message(batch):
    images, labels = batch
    with pytest.raises(TracekitError, match="model.float()"):
        fgsm().generate(tiny_model().module.double(), images, labels)


@pytest.mark.parametrize("bad", [{"eps": -0.1}, {"eps": 1.5}, {"eps": 0}, {"eps_step": 0}, {"batch_size": 0}])
def test_fgsm_rejects_bad_parameters(bad):
    with pytest.raises(SpecError, match=next(iter(bad))):
        registry("attack").resolve({"name": "fgsm", **bad})


def test_unknown_parameter_names_the_closest_one():
    with pytest.raises(SpecError, match="did you mean 'eps'"):
        registry("attack").resolve({"name": "fgsm", "epz": 0.1})


def test_gradient_accepts_l2_eps_above_one_and_fills_defaults():
    resolved = registry("attack").resolve({"name": "gradient", "eps": 4.0})
    assert resolved == {
        "name": "gradient", "eps": 4.0, "minimal": False, "eps_step": 0.1, "num_random_init": 0,
        "batch_size": 128, "backend": "art",
    }  # fmt: skip
    with pytest.raises(SpecError, match="eps"):
        registry("attack").resolve({"name": "gradient", "eps": -1.0})
