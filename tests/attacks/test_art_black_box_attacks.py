"""The paper's black-box attacks through ART: one-pixel (differential evolution) and the untargeted boundary attack."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tracekit.errors import TracekitError
from tracekit.plugins import registry
from tracekit.testing import tiny_model


def _attack(name: str, **params):
    return registry("attack").create(name, **params)


def _probs(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(images).softmax(1)


def _bright_pixel(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """1x32x32 noise in [0, 0.5] with one pixel at 1, in the top, middle or bottom third of rows (the class)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=gen)
    images = 0.5 * torch.rand(n, 1, 32, 32, generator=gen)
    rows = labels * 10 + torch.randint(0, 10, (n,), generator=gen)
    images[torch.arange(n), 0, rows, torch.randint(0, 32, (n,), generator=gen)] = 1.0
    return images, labels


@pytest.fixture(scope="module")
def pixel_model() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A 1x32x32 tiny CNN that learned to look at single pixels, and 6 images it classifies right."""
    model = tiny_model(size=32).module
    images, labels = _bright_pixel(128, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(80):
        opt.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    model.eval()
    images, labels = _bright_pixel(64, seed=1)
    right = _probs(model, images).argmax(1) == labels
    assert right.sum() >= 6, "the test model did not learn the bright-pixel problem"
    return model, images[right][:6], labels[right][:6]


def _changed_pixels(adv: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return ((adv - images).abs() > 1e-5).flatten(1).sum(1)


def _pixel_run(model, images, labels, **params) -> torch.Tensor:
    np.random.seed(0)  # ART's differential evolution draws from NumPy's global state
    return _attack("pixel", **params).generate(model, images, labels)


def test_one_pixel_changes_one_pixel_and_flips_predictions(pixel_model, capfd):
    model, images, labels = pixel_model
    adv = _pixel_run(model, images, labels, max_iter=5, stop_probability=1.0)  # ART's stopping rule
    assert adv.shape == images.shape == (6, 1, 32, 32) and adv.dtype == images.dtype
    assert adv.min() >= 0 and adv.max() <= 1
    fooled = _probs(model, adv).argmax(1) != labels
    changed = _changed_pixels(adv, images)
    assert fooled.float().mean() >= 0.5
    assert (changed[fooled] == 1).all() and (changed[~fooled] == 0).all()
    new_values = adv[(adv - images).abs() > 1e-5] * 255  # ART sets a pixel to an 8-bit value
    assert torch.allclose(new_values, new_values.round(), atol=1e-3)
    assert capfd.readouterr() == ("", "")


def test_pixels_is_the_most_pixels_changed(pixel_model):
    model, images, labels = pixel_model
    adv = _pixel_run(model, images[:3], labels[:3], pixels=3, max_iter=2, stop_probability=1.0)
    assert (_changed_pixels(adv, images[:3]) <= 3).all()
    assert (_changed_pixels(adv, images[:3]) > 1).any()


def test_the_papers_stopping_rule_pushes_the_true_class_below_five_percent(pixel_model):
    model, images, labels = pixel_model

    def true_class_probability(stop_probability: float) -> torch.Tensor:
        attack = _attack("pixel", max_iter=10, stop_probability=stop_probability)
        adv = []
        for i in range(len(labels)):  # the same evolution for each image, however long the other images ran
            np.random.seed(i)
            adv.append(attack.generate(model, images[i : i + 1], labels[i : i + 1]))
        return _probs(model, torch.cat(adv))[torch.arange(len(labels)), labels]

    first_flip, paper = true_class_probability(1.0), true_class_probability(0.05)  # ART's rule, the paper's
    assert (first_flip < 0.5).sum() >= 3
    assert (paper <= first_flip + 1e-5).all()  # the same search, continued past the first misclassification
    assert (paper < 0.05).sum() > (first_flip < 0.05).sum()


def _changed_box(adv: torch.Tensor, image: torch.Tensor) -> tuple[int, int]:
    """Height and width of the bounding box of the pixels `adv` changed in `image` ([C,H,W])."""
    rows, cols = ((adv - image).abs() > 1e-6).any(0).nonzero(as_tuple=True)
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


@pytest.mark.slow
def test_scale_changes_one_pixel_of_the_coarse_scan_and_flips_real_digits():
    import tracekit
    from tracekit.datasets.digits import digits_arrays

    model = tracekit.create("model", "digits-cnn").module.eval()
    _, images, labels = digits_arrays("test")
    right = _probs(model, images).argmax(1) == labels
    images, labels = images[right][:32], labels[right][:32]
    adv = _pixel_run(model, images, labels, scale=4, max_iter=5)
    assert adv.shape == images.shape and adv.min() >= 0 and adv.max() <= 1
    fooled = _probs(model, adv).argmax(1) != labels
    assert fooled.sum() >= 5  # 9 of these 32 flip with one 8x8 pixel (seeds 0 and 1)
    unchanged = (adv == images).flatten(1).all(1)
    assert (fooled | unchanged).all()
    for i in fooled.nonzero().flatten():
        # one 8x8 pixel reaches the 32x32 input through bilinear upsampling: at most 8x8 input pixels
        height, width = _changed_box(adv[i], images[i])
        assert 2 <= height <= 8 and 2 <= width <= 8
    # scale 1 is the attack on the input's own pixels: a single changed pixel flips none of these digits
    single = _pixel_run(model, images[:4], labels[:4], max_iter=2)
    assert (_changed_pixels(single, images[:4]) <= 1).all()


def test_scale_must_divide_the_image(pixel_model):
    model, images, labels = pixel_model
    with pytest.raises(TracekitError, match="scale 5 does not divide the 32x32 images"):
        _attack("pixel", scale=5).generate(model, images[:1], labels[:1])


@pytest.mark.parametrize("scale,pixels", [(8, 17), (1, 1025)])
def test_pixels_must_fit_the_searched_grid(scale, pixels):
    side = 32 // scale
    with pytest.raises(TracekitError, match=f"more than the {side * side} pixels of the {side}x{side} grid"):
        _attack("pixel", scale=scale, pixels=pixels).check((1, 32, 32))
    _attack("pixel", scale=scale, pixels=side * side).check((1, 32, 32))  # the whole grid is allowed


@pytest.mark.skipif(importlib.util.find_spec("cma") is not None, reason="cma is installed")
def test_cma_es_without_cma_is_a_clear_error():
    with pytest.raises(TracekitError, match="pip install cma"):
        _attack("pixel", es="cma-es")


def _boundary_run(model, images, labels, **params) -> torch.Tensor:
    np.random.seed(0)
    return _attack("boundary", **params).generate(model, images, labels)


def test_boundary_is_untargeted_and_returns_adversarials_or_originals(model, batch, capfd):
    images, labels = batch[0][:8], batch[1][:8]
    adv = _boundary_run(model, images, labels, max_iter=20)
    assert adv.shape == images.shape and adv.dtype == images.dtype and adv.min() >= 0 and adv.max() <= 1
    fooled = _probs(model, adv).argmax(1) != labels
    unchanged = (adv == images).flatten(1).all(1)
    assert fooled.float().mean() >= 0.75  # a targeted attack with the true labels as targets fools none
    assert (fooled | unchanged).all()
    assert capfd.readouterr() == ("", "")


def test_boundary_walks_towards_the_original_and_is_seeded(model, batch):
    images, labels = batch[0][:8], batch[1][:8]
    start = _boundary_run(model, images, labels, max_iter=1)
    walked = _boundary_run(model, images, labels, max_iter=20)
    assert torch.equal(walked, _boundary_run(model, images, labels, max_iter=20))  # ART alone is not reproducible
    distance = (walked - images).flatten(1).norm(dim=1)
    assert (distance < 0.5 * (start - images).flatten(1).norm(dim=1)).float().mean() >= 0.75


def test_boundary_gives_the_original_back_when_no_noise_image_is_misclassified(batch):
    images, labels = batch[0][:2], batch[1][:2]
    constant = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 3))
    torch.nn.init.zeros_(constant[1].weight)
    with torch.no_grad():
        constant[1].bias.copy_(torch.tensor([0.0, 1.0, 0.0]))  # always class 1
    labels = torch.ones_like(labels)
    adv = _boundary_run(constant, images, labels, max_iter=2, init_size=10)
    assert torch.equal(adv, images)


def test_a_scale_the_model_cannot_take_is_refused_before_any_attack_runs(tmp_path, monkeypatch):
    from tracekit.engine import attacking
    from tracekit.engine.run import run

    calls = []
    monkeypatch.setattr(attacking, "_attack_batch", lambda *args: calls.append(args))
    spec = {
        "name": "bad-scale", "device": "cpu", "model": {"name": "digits-cnn"}, "data": {"name": "digits", "limit": 20},
        "attacks": [{"name": "fgsm"}, {"name": "pixel", "scale": 5}], "detector": {"name": "feature-response"},
    }  # fmt: skip
    with pytest.raises(TracekitError, match="^spec: attacks.1: attack 'pixel': scale 5 does not divide the 32x32"):
        run(spec, out=tmp_path / "run")
    assert calls == []  # not even fgsm was attacked
