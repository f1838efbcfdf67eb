"""PGD, DeepFool, Carlini-Wagner L2 and AutoAttack (ART-backed), and what every ART-backed attack shares:
the user's model left as it was, no progress bars, parameters checked when the spec loads."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tracekit.errors import SpecError
from tracekit.plugins import registry


def _attack(name: str, **params):
    return registry("attack").create(name, **params)


def _predict(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(images).argmax(1)


def _size(adv: torch.Tensor, images: torch.Tensor, norm: float) -> torch.Tensor:
    return (adv - images).flatten(1).norm(p=norm, dim=1)


def _check_images(adv: torch.Tensor, images: torch.Tensor) -> None:
    assert adv.shape == images.shape and adv.dtype == images.dtype and adv.device == images.device
    assert adv.min() >= 0 and adv.max() <= 1


def _pgd_reference(model, images, labels, eps: float, eps_step: float, steps: int) -> torch.Tensor:
    """L-inf PGD from the clean image (Madry et al.), written out in torch."""
    adv = images.clone()
    for _ in range(steps):
        x = adv.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x), labels), x)
        adv = images + ((adv + eps_step * grad.sign()).clamp(0, 1) - images).clamp(-eps, eps)
    return adv


def test_pgd_linf_equals_torch_reference_within_eps(model, batch, capfd):
    images, labels = batch
    adv = _attack("pgd", eps=0.05, eps_step=0.01, max_iter=10).generate(model, images, labels)
    _check_images(adv, images)
    assert torch.allclose(adv, _pgd_reference(model, images, labels, 0.05, 0.01, 10), atol=1e-6, rtol=0)
    assert _size(adv, images, math.inf).max() <= 0.05 + 1e-6
    assert (_predict(model, adv) != labels).any()
    assert capfd.readouterr() == ("", "")  # ART's progress bars are off


def test_pgd_l2_stays_in_the_ball_and_beats_one_step(model, batch):
    images, labels = batch
    eps = 0.5
    adv = _attack("pgd", norm=2, eps=eps, eps_step=0.1, max_iter=20).generate(model, images, labels)
    one_step = _attack("gradient", eps=eps).generate(model, images, labels)
    _check_images(adv, images)
    assert _size(adv, images, 2).max() <= eps + 1e-4
    fooled, fooled_once = _predict(model, adv) != labels, _predict(model, one_step) != labels
    assert fooled.sum() > fooled_once.sum() > 0


def test_pgd_random_starts_are_seeded_by_numpy(model, batch):
    images, labels = batch[0][:16], batch[1][:16]

    def run() -> torch.Tensor:
        np.random.seed(3)
        return _attack("pgd", eps=0.05, eps_step=0.02, max_iter=3, num_random_init=2).generate(model, images, labels)

    first = run()
    assert torch.equal(first, run())
    assert not torch.equal(first, _attack("pgd", eps=0.05, eps_step=0.02, max_iter=3).generate(model, images, labels))
    assert _size(first, images, math.inf).max() <= 0.05 + 1e-6


def test_deepfool_flips_nearly_all_with_a_minimal_perturbation(model, batch, capfd):
    images, labels = batch
    adv = _attack("deepfool").generate(model, images, labels)
    _check_images(adv, images)
    assert (_predict(model, adv) != labels).float().mean() >= 0.95
    # minimal: the same direction at half the length does not cross the boundary
    assert (_predict(model, images + 0.5 * (adv - images)) == labels).float().mean() >= 0.95
    assert capfd.readouterr() == ("", "")


def test_carlini_l2_returns_small_adversarials_or_the_original(model, batch):
    images, labels = batch[0][:16], batch[1][:16]
    adv = _attack("cw-l2", binary_search_steps=3, max_iter=5, initial_const=1.0).generate(model, images, labels)
    _check_images(adv, images)
    fooled = _predict(model, adv) != labels
    unchanged = _size(adv, images, math.inf) == 0
    assert fooled.float().mean() >= 0.75
    assert (fooled | unchanged).all()
    # close to the boundary: half the perturbation does not cross it
    assert (_predict(model, images + 0.5 * (adv - images)) == labels).float().mean() >= 0.9


def test_autoattack_keeps_only_misclassified_results_within_eps(model, batch, capfd):
    images, labels = batch[0][:16], batch[1][:16]
    eps = 0.05  # some images resist APGD, so DeepFool and Square run too
    adv = _attack("autoattack", eps=eps, square_max_iter=50).generate(model, images, labels)
    _check_images(adv, images)
    fooled = _predict(model, adv) != labels
    changed = _size(adv, images, math.inf) > 0
    assert 0 < fooled.sum() < len(labels)
    assert torch.equal(fooled, changed)
    assert _size(adv, images, math.inf).max() <= eps * (1 + 1e-4)
    assert capfd.readouterr() == ("", "")


def test_autoattack_l2(model, batch):
    images, labels = batch[0][:16], batch[1][:16]
    adv = _attack("autoattack", norm=2, eps=1.0, eps_step=0.2, square_max_iter=20).generate(model, images, labels)
    assert (_predict(model, adv) != labels).float().mean() >= 0.5
    assert _size(adv, images, 2).max() <= 1.0 + 1e-4


def _hook_counts(model: torch.nn.Module) -> list[tuple[int, int, int]]:
    return [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()]


CHEAP = [
    ("fgsm", {"eps": 0.1}),
    ("gradient", {"eps": 1.0, "minimal": True}),
    ("pgd", {"max_iter": 2}),
    ("deepfool", {"max_iter": 3}),
    ("cw-l2", {"binary_search_steps": 1, "max_iter": 2}),
    ("autoattack", {"eps": 0.01, "max_iter": 2, "square_max_iter": 2}),
    ("boundary", {"max_iter": 2, "num_trial": 2, "sample_size": 4}),
    ("pixel", {"max_iter": 1}),
]


@pytest.mark.parametrize("name,params", CHEAP, ids=[name for name, _ in CHEAP])
def test_the_users_model_is_left_as_it_was(model, batch, name, params):
    images, labels = batch[0][:4], batch[1][:4]
    model = copy.deepcopy(model).train()  # training mode, as a user mid-training might have it
    model.features[0].weight.grad = torch.ones_like(model.features[0].weight)
    model.classifier.bias.requires_grad_(False)
    model.classifier.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    hooks = _hook_counts(model)
    _attack(name, **params).generate(model, images, labels)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert [m.training for m in model.modules()] == modes
    assert _hook_counts(model) == hooks
    assert torch.equal(model.features[0].weight.grad, torch.ones_like(model.features[0].weight))
    assert model.classifier.weight.grad is None
    assert [p.requires_grad for p in model.parameters()] == [True] * 5 + [False]
    assert all(p.device.type == "cpu" for p in model.parameters())


NORM = "norm must be inf \\(L-inf\\) or 2 \\(L2\\)"
LINF = "eps must be at most 1 for the L-inf norm"
POSITIVE, NON_NEGATIVE = "greater than 0", "greater than or equal to 0"


@pytest.mark.parametrize(
    "name,bad,message",
    [
        ("pgd", {"norm": 1}, NORM),
        ("pgd", {"norm": "l2"}, NORM),
        ("pgd", {"eps": 1.5}, LINF),
        ("pgd", {"eps": -0.1}, POSITIVE),
        ("pgd", {"eps_step": 0}, POSITIVE),
        ("pgd", {"max_iter": 0}, POSITIVE),
        ("pgd", {"num_random_init": -1}, NON_NEGATIVE),
        ("pgd", {"decay": -0.5}, NON_NEGATIVE),
        ("fgsm", {"num_random_init": -1}, NON_NEGATIVE),
        ("gradient", {"minimal": True, "num_random_init": 1}, "needs minimal: false"),
        ("cw-l2", {"max_halving": 0}, POSITIVE),
        ("pgd", {"backend": "jax"}, "'art' or 'native'"),
        ("deepfool", {"overshoot": -0.1}, NON_NEGATIVE),
        ("deepfool", {"max_iter": 0}, POSITIVE),
        ("deepfool", {"nb_grads": 0}, POSITIVE),
        ("deepfool", {"batch_size": 0}, POSITIVE),
        ("cw-l2", {"confidence": -1}, NON_NEGATIVE),
        ("cw-l2", {"binary_search_steps": 0}, POSITIVE),
        ("cw-l2", {"learning_rate": 0}, POSITIVE),
        ("autoattack", {"norm": 1}, NORM),
        ("autoattack", {"eps": 2.0}, LINF),
        ("autoattack", {"restarts": 0}, POSITIVE),
        ("boundary", {"step_adapt": 1.0}, "less than 1"),
        ("boundary", {"delta": 0}, POSITIVE),
        ("boundary", {"max_iter": 0}, POSITIVE),
        ("boundary", {"min_epsilon": -1}, NON_NEGATIVE),
        ("pixel", {"pixels": 0}, POSITIVE),
        ("pixel", {"stop_probability": 0}, POSITIVE),
        ("pixel", {"stop_probability": 1.5}, "less than or equal to 1"),
        ("pixel", {"es": 1}, "'de' or 'cma-es'"),
        ("pixel", {"max_iter": 0}, POSITIVE),
        ("pixel", {"scale": 0}, POSITIVE),
    ],
)
def test_bad_parameters_are_refused_when_the_spec_loads(name, bad, message):
    key = list(bad)[-1]
    with pytest.raises(SpecError, match=f"^attacks\\.0\\.{key}: .*{message}"):
        registry("attack").resolve({"name": name, **bad}, where="attacks.0")


@pytest.mark.parametrize("given,norm", [("inf", "inf"), (math.inf, "inf"), ("Inf", "inf"), (2, 2), (2.0, 2), ("2", 2)])
def test_norm_spellings(given, norm):
    assert registry("attack").resolve({"name": "pgd", "norm": given})["norm"] == norm


def test_l2_eps_may_exceed_one_and_defaults_are_batched():
    resolved = registry("attack").resolve({"name": "pgd", "norm": 2, "eps": 3.0})
    assert resolved == {
        "name": "pgd", "norm": 2, "eps": 3.0, "eps_step": 0.01, "max_iter": 40, "num_random_init": 0,
        "decay": None, "random_eps": False, "batch_size": 128, "backend": "art",
    }  # fmt: skip
    for name in ("deepfool", "cw-l2", "autoattack", "boundary"):
        assert registry("attack").resolve({"name": name})["batch_size"] > 1


def test_native_backends_get_the_same_parameters(model, batch):
    native = pytest.importorskip("tracekit.attacks.native")
    images, labels = batch[0][:32], batch[1][:32]
    params = {"eps": 0.05, "eps_step": 0.01, "max_iter": 5}
    pgd = _attack("pgd", **params, backend="native")
    assert isinstance(pgd, native.NativePGD)
    reference = _attack("pgd", **params).generate(model, images, labels)
    assert torch.allclose(pgd.generate(model, images, labels), reference, atol=1e-5)
    params = {"max_iter": 20, "overshoot": 0.1}
    deepfool = _attack("deepfool", **params, backend="native")
    assert isinstance(deepfool, native.NativeDeepFool)
    reference = _attack("deepfool", **params).generate(model, images, labels)
    assert torch.allclose(deepfool.generate(model, images, labels), reference, atol=1e-4)


def test_art_options_reach_art(model, batch):
    """ART's own parameters are passed through, and change what ART does."""
    images, labels = batch[0][:16], batch[1][:16]
    pgd = _attack("pgd", eps=0.05, eps_step=0.01, max_iter=5, decay=1.0, random_eps=True)
    built = pgd._art_attack(model, images)._attack  # ART's PyTorch variant inside its dispatcher
    assert built.decay == 1.0 and built.random_eps
    np.random.seed(0)
    adv = pgd.generate(model, images, labels)
    assert _size(adv, images, math.inf).max() <= built.eps + 1e-6 < 0.05  # the radius ART drew
    cw = _attack("cw-l2", max_halving=2, max_doubling=3)._art_attack(model, images)
    assert (cw.max_halving, cw.max_doubling) == (2, 3)
    fgsm = _attack("fgsm", eps=0.08, num_random_init=1)
    assert fgsm._art_attack(model, images).num_random_init == 1
    np.random.seed(0)
    started = fgsm.generate(model, images, labels)
    assert _size(started, images, math.inf).max() <= 0.08 + 1e-6
    assert not torch.equal(started, _attack("fgsm", eps=0.08).generate(model, images, labels))
