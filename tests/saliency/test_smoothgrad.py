"""SmoothGrad: equal to Captum's NoiseTunnel with the same noise, the base method without noise,
the paper's noise level, seeded, chunked, and its nested base validated against the registry."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import tracekit
from tracekit.errors import SpecError
from tracekit.saliency.gradient import Gradient
from tracekit.saliency.smoothgrad import SmoothGrad


def images(n: int = 6, seed: int = 1) -> torch.Tensor:
    x = torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(seed))
    x[:, 0, 0, :2] = torch.tensor([0.0, 1.0])  # value range exactly 1: noise std = noise
    return x


@pytest.mark.parametrize("base", ["gradient", "guided-backprop"])
def test_matches_captum_noise_tunnel_with_the_same_seed(tiny, base: str) -> None:
    from captum.attr import GuidedBackprop, NoiseTunnel, Saliency

    x, target = images(), torch.tensor([0, 1, 2, 0, 1, 2])
    ours = tracekit.create("saliency", "smoothgrad", base={"name": base}, n_samples=5, noise=0.2, seed=7)
    maps = ours.maps(tiny.module, x, target)
    captum_base, kwargs = (Saliency, {"abs": False}) if base == "gradient" else (GuidedBackprop, {})
    references = []
    for i in range(len(x)):  # each image as Captum explains it alone, after the same seed
        torch.manual_seed(7)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Captum warns about hooks on activations
            references.append(NoiseTunnel(captum_base(tiny.module)).attribute(
                x[i : i + 1], nt_type="smoothgrad", nt_samples=5, stdevs=0.2, target=target[i : i + 1], **kwargs
            ))  # fmt: skip
    reference = torch.cat(references)
    torch.testing.assert_close(maps, reference, rtol=1e-5, atol=1e-6 * float(reference.abs().max()))


def test_an_images_map_does_not_depend_on_its_batch(tiny) -> None:
    x = images()
    smooth = SmoothGrad(Gradient(), n_samples=4, noise=0.2, seed=3, chunk=8)
    together = smooth.maps(tiny.module, x)
    alone = torch.cat([smooth.maps(tiny.module, x[i : i + 1]) for i in reversed(range(len(x)))]).flip(0)
    torch.testing.assert_close(alone, together, rtol=1e-6, atol=1e-7)


def test_without_noise_one_sample_is_the_base_method(tiny) -> None:
    x = images()
    smooth = tracekit.create("saliency", "smoothgrad", n_samples=1, noise=0.0)
    assert torch.equal(smooth.maps(tiny.module, x), tracekit.create("saliency", "guided-backprop").maps(tiny.module, x))


class Recorder:
    """A base saliency that records what it is asked and returns its noisy inputs as maps."""

    def __init__(self) -> None:
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def maps(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        self.calls.append((images.clone(), target))
        return images.clone()


def test_noise_is_a_fraction_of_each_images_value_range(tiny) -> None:
    x = torch.rand(2, 1, 16, 16)
    x[0] = x[0] * 0.5 + 0.25  # range at most 0.5
    span = x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3))
    base = Recorder()
    SmoothGrad(base, n_samples=400, noise=0.1).maps(tiny.module, x)
    noisy = torch.cat([call[0] for call in base.calls]).view(2, 400, 1, 16, 16)
    std = (noisy - x[:, None]).flatten(1).std(1)
    torch.testing.assert_close(std, 0.1 * span, rtol=0.02, atol=0)


def test_every_copy_explains_the_class_predicted_for_the_clean_image(tiny) -> None:
    x = images()
    base = Recorder()
    SmoothGrad(base, n_samples=3, noise=2.0).maps(tiny.module, x)  # noise that changes predictions
    ((noisy, target),) = base.calls
    assert torch.equal(target, tiny.module(x).argmax(1).repeat_interleave(3))
    assert not torch.equal(tiny.module(noisy).argmax(1), target)


def test_copies_go_to_the_base_in_chunks_and_average_per_image(tiny) -> None:
    x = images(5)
    base = Recorder()
    maps = SmoothGrad(base, n_samples=4, noise=0.0, chunk=8).maps(tiny.module, x)
    assert [len(call[0]) for call in base.calls] == [8, 8, 4]  # two images' copies per call
    assert torch.equal(maps, x)
    more = SmoothGrad(Recorder(), n_samples=4, noise=0.3, chunk=3).maps(tiny.module, x)  # < n: one image
    assert more.shape == x.shape


def test_seeded(tiny) -> None:
    x = images()

    def maps(seed: int) -> torch.Tensor:
        return SmoothGrad(Gradient(), n_samples=4, noise=0.2, seed=seed).maps(tiny.module, x)

    assert torch.equal(maps(3), maps(3))
    assert not torch.allclose(maps(3), maps(4))


def test_nested_base_is_validated_against_the_saliency_registry() -> None:
    saliency = tracekit.plugins.registry("saliency")
    resolved = saliency.resolve({"name": "smoothgrad", "base": {"name": "integrated-gradients"}})
    assert resolved["base"] == {"name": "integrated-gradients", "steps": 32}
    built = tracekit.create("saliency", "smoothgrad", base={"name": "integrated-gradients", "steps": 3})
    assert built.base.steps == 3
    with pytest.raises(SpecError, match=r"base.*unknown saliency 'guided-backprob' \(did you mean 'guided-backprop'"):
        saliency.resolve({"name": "smoothgrad", "base": {"name": "guided-backprob"}})
    with pytest.raises(SpecError, match="base.*steps: Input should be greater than or equal to 1"):
        saliency.resolve({"name": "smoothgrad", "base": {"name": "integrated-gradients", "steps": 0}})
    with pytest.raises(SpecError, match="noise: Input should be less than or equal to 1"):
        saliency.resolve({"name": "smoothgrad", "noise": 1.5})


def test_a_detector_spec_can_use_it() -> None:
    detector = tracekit.plugins.registry("detector").resolve(
        {"name": "feature-response", "saliency": {"name": "smoothgrad", "n_samples": 4}}
    )
    assert detector["saliency"]["base"] == {"name": "guided-backprop"}
