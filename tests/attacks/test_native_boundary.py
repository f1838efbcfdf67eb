"""The native batched boundary attack: it walks towards the original while staying adversarial,
is reproducible per image whatever the batching, and does what ART's does on the digits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tracekit
from tracekit.engine.attacking import seed_everything


def native(**params):
    return tracekit.create("attack", "boundary", backend="native", **params)


def l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).flatten(1).norm(dim=1)


def test_it_stays_adversarial_and_walks_towards_the_original(digits):
    model, images, labels = digits[0], digits[1][:24], digits[2][:24]
    seeds = torch.arange(len(images))
    start = native(max_iter=1, num_trial=1).generate_seeded(model, images, labels, seeds)
    walked = native(max_iter=40).generate_seeded(model, images, labels, seeds)
    with torch.no_grad():
        assert (model(walked).argmax(1) != labels).all()
    assert (l2(walked, images) < l2(start, images)).float().mean() > 0.9
    assert walked.min() >= 0 and walked.max() <= 1


def test_each_image_gets_the_same_adversarial_in_any_batch(digits):
    model, images, labels = digits[0], digits[1][:10], digits[2][:10]
    seeds = torch.arange(50, 60)
    whole = native(max_iter=10).generate_seeded(model, images, labels, seeds)
    parts = torch.cat(
        [
            native(max_iter=10, eval_batch=7).generate_seeded(
                model, images[i : i + 4], labels[i : i + 4], seeds[i : i + 4]
            )
            for i in range(0, 10, 4)
        ]
    )
    assert torch.equal(whole, parts)
    assert not torch.equal(whole, native(max_iter=10).generate_seeded(model, images, labels, seeds + 1))


class _Stubborn(nn.Module):
    """Always predicts class 0, whatever the input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([5.0, 0.0, 0.0]).expand(len(x), 3) + 0 * x.flatten(1)[:, :1]


def test_without_misclassified_noise_the_image_comes_back_unchanged():
    images = torch.rand(3, 1, 8, 8)
    attack = native(init_size=10, batch_size=4, max_iter=5)
    out = attack.generate_seeded(_Stubborn(), images, torch.zeros(3, dtype=torch.long), torch.arange(3))
    assert torch.equal(out, images) and attack.evaluations == 3 * 10


@pytest.mark.slow
def test_it_does_what_arts_does_on_the_digits(digits):
    model, images, labels = digits[0], digits[1][:24], digits[2][:24]
    params = {"max_iter": 30}
    mine = native(**params).generate_seeded(model, images, labels, torch.arange(len(images)))
    art = tracekit.create("attack", "boundary", **params)
    theirs = []
    for i in range(len(images)):
        seed_everything(i)
        theirs.append(art.generate(model, images[i : i + 1], labels[i : i + 1]))
    theirs = torch.cat(theirs)
    with torch.no_grad():
        success = [(model(a).argmax(1) != labels).float().mean().item() for a in (mine, theirs)]
    assert abs(success[0] - success[1]) <= 0.05, success
    ratio = l2(mine, images).median() / l2(theirs, images).median()
    assert 0.8 < ratio < 1.2, ratio  # different random walks of the same kind and length
