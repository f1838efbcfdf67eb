"""The native batched one-pixel attack: real flips within the pixel budget, the paper's stopping
rule, per-image reproducibility whatever the batching, ART's success rate on the embedded digits."""

from __future__ import annotations

import pytest
import torch

import tracekit
from tracekit.attacks.evolution import evaluations_per_image
from tracekit.engine.attacking import seed_everything


def native(**params):
    return tracekit.create("attack", "pixel", backend="native", **params)


@pytest.mark.slow
def test_it_flips_predictions_within_its_pixel_budget(digits, model, batch):
    model_, images, labels = digits
    attack = native(max_iter=10, scale=4)
    adversarial = attack.generate_seeded(model_, images, labels, torch.arange(len(images)))
    with torch.no_grad():
        flipped = model_(adversarial).argmax(1) != labels
    assert flipped.any()
    changed = (adversarial != images).any(1)  # [N, H, W]
    assert not changed[~flipped].any()  # a failed search returns the image unchanged
    for mask in changed[flipped]:  # one scan pixel, upsampled bilinearly: within an 8x8 window
        rows, cols = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
        assert rows.max() - rows.min() < 8 and cols.max() - cols.min() < 8
    assert attack.evaluations <= len(images) * evaluations_per_image(10, 1, 1)
    # at the input's own resolution: at most one pixel, set to 8-bit levels
    small, small_labels = batch[0][:8], batch[1][:8]
    own = native(max_iter=3).generate_seeded(model, small, small_labels, torch.arange(8))
    assert (own != small).any(1).flatten(1).sum(1).max() <= 1
    levels = own[own != small] * 255
    assert torch.allclose(levels, levels.round(), atol=1e-4)


@pytest.mark.slow
def test_the_paper_stopping_rule(digits):
    model, images, labels = digits
    seeds = torch.arange(len(images))
    strict = native(max_iter=10, scale=4).generate_seeded(model, images, labels, seeds)
    lenient = native(max_iter=10, scale=4, stop_probability=1.0).generate_seeded(model, images, labels, seeds)
    with torch.no_grad():
        p_strict, p_lenient = (torch.softmax(model(a), 1) for a in (strict, lenient))
    flipped = p_lenient.argmax(1) != labels
    truth = labels[:, None]
    # ART's rule stops at the first misclassification; the paper's evolves on towards 5%
    assert flipped.any() and (p_strict.gather(1, truth) <= p_lenient.gather(1, truth) + 1e-6)[flipped].all()
    done = p_strict.argmax(1) != labels
    assert done.sum() >= flipped.sum()


@pytest.mark.slow
def test_each_image_gets_the_same_adversarial_in_any_batch(digits):
    model, images, labels = digits[0], digits[1][:12], digits[2][:12]
    seeds = torch.arange(100, 112)
    whole = native(max_iter=6, scale=4).generate_seeded(model, images, labels, seeds)
    halves = torch.cat(
        [
            native(max_iter=6, scale=4).generate_seeded(model, images[i : i + 5], labels[i : i + 5], seeds[i : i + 5])
            for i in range(0, 12, 5)
        ]
    )
    assert torch.equal(whole, halves)
    other = native(max_iter=6, scale=4).generate_seeded(model, images, labels, seeds + 1)
    assert whole.ne(images).any() and not torch.equal(whole, other)


def test_small_candidate_batches_give_the_same_result(model, batch):
    images, labels = batch[0][:6], batch[1][:6]
    big = native(max_iter=5, eval_batch=5000).generate_seeded(model, images, labels, torch.arange(6))
    small = native(max_iter=5, eval_batch=7).generate_seeded(model, images, labels, torch.arange(6))
    assert torch.equal(big, small)


@pytest.mark.slow
def test_success_rate_matches_arts_on_the_digits(digits):
    model, images, labels = digits
    params = {"max_iter": 10, "scale": 4}
    mine = native(**params).generate_seeded(model, images, labels, torch.arange(len(images)))
    art = tracekit.create("attack", "pixel", **params)
    seed_everything(0)
    theirs = torch.cat([art.generate(model, images[i : i + 1], labels[i : i + 1]) for i in range(len(images))])
    with torch.no_grad():
        rates = [(model(a).argmax(1) != labels).float().mean().item() for a in (mine, theirs)]
    assert abs(rates[0] - rates[1]) <= 0.15, rates  # 30 images: a binomial standard error of ~0.08
    # scale 4: a change reaches at most the 4x4 block of one scan pixel and its bilinear neighbours
    changed = (mine != images).any(1).flatten(1).sum(1)
    assert changed.max() <= 8 * 8


def test_native_needs_differential_evolution():
    with pytest.raises(tracekit.TracekitError, match="backend: native evolves by differential evolution only"):
        native(es="cma-es")


@pytest.mark.slow
def test_a_run_with_the_native_search_attacks_is_the_same_in_any_batching(tmp_path, monkeypatch, cache_with_models):
    spec = {
        "name": "native-search",
        "model": {"name": "digits-cnn"},
        "device": "cpu",
        "data": {"name": "digits", "split": "test", "limit": 40},
        "evaluation": {"bootstrap": 0},
        "attacks": [
            {"name": "pixel", "backend": "native", "scale": 4, "max_iter": 5},
            {"name": "boundary", "backend": "native", "max_iter": 5},
        ],
    }
    runs = [tracekit.run({**spec, "batch_size": size}, out=tmp_path / f"b{size}", use_cache=False) for size in (3, 16)]
    first, second = ((r.out_dir / "scores.csv").read_bytes() for r in runs)
    assert first == second
    # cached image by image: a run cut into other chunks reuses every adversarial (an empty
    # attack cache, with the session's trained digits-cnn)
    monkeypatch.setenv("TRACEKIT_CACHE", str(cache_with_models))
    tracekit.run({**spec, "batch_size": 3}, out=tmp_path / "c3")
    again = tracekit.run({**spec, "batch_size": 16}, out=tmp_path / "c16")
    assert all(m["cached_images"] == m["n_clean"] for m in again.metrics["attacks"].values())
    assert (again.out_dir / "scores.csv").read_bytes() == first
    assert runs[0].metrics["attacks"]["pixel"]["n_attacked"] > 0
    assert runs[0].metrics["attacks"]["boundary"]["success_rate"] == 1.0
