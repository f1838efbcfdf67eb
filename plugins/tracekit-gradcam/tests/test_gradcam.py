"""tracekit-gradcam: Grad-CAM against Captum, the model left untouched, clear errors, the
cam-spread score's properties, and the plugin found through its entry point once installed
(`pip install -e plugins/tracekit-gradcam`): listed, validated in a spec, and run end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from tracekit_gradcam.gradcam import GradCam, find_layer
from tracekit_gradcam.spread import CamSpread

import tracekit
from tracekit import plugins
from tracekit.errors import TracekitError
from tracekit.testing import testing_plugin, tiny_model


def images(n: int = 6, channels: int = 1, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, channels, 16, 16, generator=torch.Generator().manual_seed(seed))


def captum_grad_cam(model: nn.Module, layer: str, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from captum.attr import LayerAttribution, LayerGradCam

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum: "input did not already require gradients"
        cam = LayerGradCam(model, dict(model.named_modules())[layer]).attribute(
            x, target=target, relu_attributions=True
        )
    return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear").detach()


# `features` is the default (the last feature map); features.0 is followed by an in-place
# ReLU, features.3 (the last Conv2d) by a plain one.
@pytest.mark.parametrize("layer", ["features", "features.3", "features.0"])
@pytest.mark.parametrize("given", [True, False], ids=["given-target", "predicted"])
def test_matches_captum_layer_grad_cam_upsampled_bilinearly(layer: str, given: bool) -> None:
    model = tiny_model().module
    x, target = images(), torch.tensor([0, 1, 2, 0, 1, 2])
    predicted = model(x).argmax(1)
    maps = GradCam(layer).maps(model, x, target if given else None)
    reference = captum_grad_cam(model, layer, x, target if given else predicted)
    assert maps.shape == (6, 1, 16, 16) and (maps >= 0).all() and (maps > 0).any()
    torch.testing.assert_close(maps, reference, rtol=1e-5, atol=1e-6 * float(reference.abs().max()))


def test_default_layer_is_the_last_spatial_feature_map() -> None:
    model = tiny_model(channels=3).module
    x = images(channels=3)
    assert find_layer(model, None, x[:1]) == ("features", model.features)
    assert torch.equal(GradCam().maps(model, x), GradCam("features").maps(model, x))
    # Not a 1x1 map (global pooling), nor a module that runs twice (a shared ReLU).
    relu = nn.ReLU()
    pooled = nn.Sequential(
        nn.Conv2d(1, 4, 3), relu, nn.Conv2d(4, 4, 3), relu, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )
    assert find_layer(pooled, None, images(1))[0] == "2"


def hook_counts(model: nn.Module) -> list[tuple[int, ...]]:
    return [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()]


def test_model_and_images_left_exactly_as_they_were_even_when_it_fails() -> None:
    model = tiny_model(channels=3).module.train()
    for p in model.parameters():
        p.requires_grad_(False)  # frozen weights: the map still needs a graph
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hooks, x = hook_counts(model), images(3, channels=3)
    before = x.clone()

    with torch.inference_mode():
        maps = GradCam().maps(model, x.clone())
    assert maps.abs().sum() > 0 and not maps.requires_grad
    with pytest.raises(TracekitError, match="target classes must lie in 0..2"):
        GradCam().maps(model, x, torch.tensor([0, 1, 5]))  # fails after the hooked forward pass

    assert torch.equal(x, before) and hook_counts(model) == hooks and model.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())


class OffPath(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.unused, self.fc = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(1, 2, 1), nn.Linear(2 * 16 * 16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.unused(x.new_zeros(1, 1, 4, 4))  # runs, but off the logits' path
        return self.fc(self.conv(x).flatten(1))


@pytest.mark.parametrize(
    "model, layer, message",
    [
        (tiny_model().module, "feature.3", r"no layer 'feature.3' \(did you mean 'features.3'"),
        (tiny_model().module, "classifier", r"layer 'classifier' outputs \(2, 3\); Grad-CAM needs a convolutional"),
        (nn.Sequential(nn.Flatten(), nn.Linear(256, 3)), None, "no layer of Sequential outputs a spatial feature map"),
        (OffPath(), "unused", "layer 'unused' does not influence the logits"),
    ],
)
def test_bad_layers_are_clear_errors(model: nn.Module, layer: str | None, message: str) -> None:
    hooks = hook_counts(model)
    with pytest.raises(TracekitError, match=f"^grad-cam: .*{message}"):
        GradCam(layer).maps(model, images(2))
    assert hook_counts(model) == hooks


def test_a_layer_that_runs_twice_is_refused() -> None:
    conv = nn.Conv2d(1, 1, 3, padding=1)
    model = nn.Sequential(conv, nn.ReLU(), conv, nn.Flatten(), nn.Linear(256, 3))
    with pytest.raises(TracekitError, match="layer '0' ran 2 times in one forward pass"):
        GradCam("0").maps(model, images(2))


def test_cam_spread_is_the_normalized_entropy_of_the_maps_mass() -> None:
    gen = torch.Generator().manual_seed(0)
    maps = torch.rand(5, 2, 8, 6, generator=gen) ** 4
    maps[1] = 0.0  # no mass: uniform
    maps[2] = torch.zeros(2, 8, 6).index_put_(
        (torch.tensor([1]), torch.tensor([3]), torch.tensor([2])), torch.tensor(5.0)
    )  # one pixel
    maps[3] = 1.0  # uniform
    maps[4, 0] *= -1  # signs do not matter: |map|
    spread = CamSpread()
    scores = spread.score(maps)
    mass = maps.double().abs().sum(1).flatten(1).numpy()
    for i in (0, 4):
        p = mass[i] / mass[i].sum()
        expected = -(p[p > 0] * np.log2(p[p > 0])).sum() / np.log2(48)
        assert scores[i].item() == pytest.approx(expected, abs=1e-12)
    assert scores[1] == pytest.approx(1.0, abs=1e-12) and scores[2] == 0.0
    assert scores[3] == pytest.approx(1.0, abs=1e-12)
    assert (scores >= 0).all() and (scores <= 1 + 1e-12).all()
    torch.testing.assert_close(spread.score(maps * 2.0**-20), scores, rtol=1e-12, atol=0)  # scale-free
    torch.testing.assert_close(spread.map(maps).sum(dim=(1, 2)), scores, rtol=0, atol=1e-12)
    with pytest.raises(TracekitError, match=r"cam-spread: expected maps of shape \[N,C,H,W\], got \(8, 6\)"):
        spread.score(maps[0, 0])


def test_registered_through_its_entry_point_only() -> None:
    (info,) = [p for p in plugins.plugins() if p.distribution == "tracekit-gradcam"]
    assert info.error is None and info.module == "tracekit_gradcam"
    assert info.components == {"saliency": ["grad-cam"], "score": ["cam-spread"]}
    assert plugins.registry("saliency").get("grad-cam").source == "tracekit-gradcam"
    assert plugins.registry("score").get("cam-spread").source == "tracekit-gradcam"
    assert plugins.registry("saliency").resolve({"name": "grad-cam"}) == {"name": "grad-cam", "layer": None}
    assert isinstance(tracekit.create("saliency", "grad-cam", layer="features.0"), GradCam)


def test_listed_and_validated_by_the_cli(tmp_path) -> None:
    from typer.testing import CliRunner

    from tracekit.cli import build_app

    listing = CliRunner().invoke(build_app(), ["plugins", "--json"])
    assert listing.exit_code == 0, listing.output
    saliency = {c["name"]: c for c in json.loads(listing.output)["components"]["saliency"]}
    assert saliency["grad-cam"]["distribution"] == "tracekit-gradcam"
    assert saliency["grad-cam"]["parameters"] == ["layer"]

    spec = tmp_path / "gradcam.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "gradcam",
                "model": {"name": "digits-cnn"},
                "data": {"name": "digits"},
                "attacks": [{"name": "fgsm", "eps": 0.1}],
                "detector": {
                    "name": "feature-response",
                    "saliency": {"name": "grad-cam"},
                    "score": {"name": "cam-spread"},
                },
            }
        )
    )
    result = CliRunner().invoke(build_app(), ["validate", str(spec), "--show"])
    assert result.exit_code == 0, result.output
    assert "grad-cam" in result.output and "is a valid spec" in result.output


def test_listing_and_validating_with_it_installed_do_not_import_torch() -> None:
    # A fresh interpreter: loading the plugin and checking a spec of its components only runs
    # its light factories module (tracekit's own light-import tests then hold with it installed).
    probe = (
        "import sys\n"
        "from tracekit import plugins\n"
        "resolved = plugins.registry('saliency').resolve({'name': 'grad-cam', 'layer': 'features'})\n"
        "assert resolved['layer'] == 'features'\n"
        "assert plugins.registry('score').get('cam-spread').source == 'tracekit-gradcam'\n"
        "heavy = ('torch', 'tracekit_gradcam.gradcam', 'tracekit_gradcam.spread')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_spec_using_it_runs(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TRACEKIT_CACHE", str(tmp_path / "cache"))
    plugins.register_plugin(testing_plugin, "tracekit-testing")  # tiny-cnn, random-images, sign-noise
    try:
        result = tracekit.run(
            {
                "name": "gradcam-tiny",
                "seed": 0,
                "device": "cpu",
                "model": {"name": "tiny-cnn"},
                "data": {"name": "random-images", "n": 24},
                "attacks": [{"name": "sign-noise", "eps": 0.3}],
                "detector": {
                    "name": "feature-response",
                    "saliency": {"name": "grad-cam", "layer": "features.0"},
                    "score": {"name": "cam-spread"},
                },
                "calibration": {"fit_fraction": 0.5, "target_fpr": 0.1},
                "batch_size": 8,
            },
            out=tmp_path / "run",
        )
    finally:
        plugins.unregister_plugin("tracekit-testing")
    metrics = json.loads((result.out_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["attacks"]["sign-noise"]["auc"] <= 1.0
    assert "tracekit-gradcam" in (result.out_dir / "spec.resolved.yaml").read_text()
