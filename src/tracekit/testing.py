"""Small, fast stand-ins for tests: a tiny CNN, a dummy attack and a dummy score.

Plugin authors can use them too: `tiny_model()` gives a `LoadedModel` in milliseconds, and
`testing_plugin` registers `tiny-cnn` (model), `random-images` (dataset), `sign-noise` (attack)
and `mean-abs` (score) when passed to `tracekit.plugins.register_plugin(testing_plugin, ...)`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import Field
from torch import nn

from .hookspecs import Components, Register
from .plugins import hookimpl
from .protocols import LoadedModel


class TinyCNN(nn.Module):
    """conv-ReLU(in place)-pool-conv-ReLU-pool-linear; a VGG in miniature."""

    def __init__(self, channels: int = 1, size: int = 16, num_classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(16 * (size // 4) ** 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class HalfReLU(nn.Module):
    """conv -> ReLU on the first two of four channels -> linear, on 3x8x8 images. With
    `in_place_on_view`, the ReLU is `relu_` on a channel slice (whose backward is recorded on the
    whole tensor, not on the slice), else an `nn.ReLU` module on it: the same function."""

    def __init__(self, in_place_on_view: bool) -> None:
        super().__init__()
        self.conv, self.fc, self.act = nn.Conv2d(3, 4, 3), nn.Linear(4 * 6 * 6, 5), nn.ReLU()
        self.in_place_on_view = in_place_on_view

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        if self.in_place_on_view:
            h[:, :2].relu_()
        else:
            h = torch.cat([self.act(h[:, :2]), h[:, 2:]], 1)
        return self.fc(h.flatten(1))


def tiny_model(channels: int = 1, size: int = 16, num_classes: int = 3, seed: int = 0) -> LoadedModel:
    """A randomly initialized (seeded) `TinyCNN` ready for tracekit; image files are taken whole
    (`crop_pct` 1.0: resized to the input, no border cropped), as for the embedded digits-cnn."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    module = TinyCNN(channels, size, num_classes).eval()
    torch.random.set_rng_state(gen_state)
    names = [f"class{i}" for i in range(num_classes)]
    return LoadedModel(module, (channels, size, size), names, info={"crop_pct": 1.0})


def train_briefly(module: nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int = 20) -> nn.Module:
    """A few full-batch Adam steps, so attacks and detectors have a decision to work on; eval mode."""
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(module(images), labels).backward()
        opt.step()
    module.zero_grad(set_to_none=True)
    return module.eval()


class RandomImages:
    """Seeded uniform-noise images labelled with the model's own predictions."""

    def __init__(self, n: int = 32, seed: int = 0) -> None:
        self.n, self.seed = n, seed
        self.info: dict[str, Any] = {}

    def samples(self, model: LoadedModel) -> Iterator[tuple[str, torch.Tensor, int]]:
        gen = torch.Generator().manual_seed(self.seed)
        images = torch.rand((self.n, *model.input_size), generator=gen)
        with torch.no_grad():
            labels = model.module(images).argmax(1)
        for i in range(self.n):
            yield f"random-{i}", images[i], int(labels[i])


class SignNoise:
    """Adds `eps` times a seeded random sign pattern (not a real attack; fast and deterministic)."""

    def __init__(self, eps: float = 0.1, seed: int = 0) -> None:
        self.eps, self.seed = eps, seed

    def generate(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed)
        signs = torch.randint(0, 2, images.shape, generator=gen).to(images) * 2 - 1
        return (images + self.eps * signs).clamp(0, 1)


class MeanAbs:
    """Mean absolute value of the map (a trivial score)."""

    def score(self, maps: torch.Tensor) -> torch.Tensor:
        return maps.abs().flatten(1).mean(1)

    def map(self, maps: torch.Tensor) -> torch.Tensor:
        return maps.abs().sum(1)


# The testing plugin's components, registered where they are defined (as a plugin's would be).
_models, _datasets = Components("model"), Components("dataset")
_attacks, _scores = Components("attack"), Components("score")


@_models.register("tiny-cnn")
def _tiny_cnn(channels: int = 1, size: int = 16, num_classes: int = 3, seed: int = 0) -> LoadedModel:
    """A tiny random CNN (tests only)."""
    return tiny_model(channels, size, num_classes, seed)


@_datasets.register("random-images")
def _random_images(n: Annotated[int, Field(gt=0)] = 32, seed: int = 0) -> RandomImages:
    """Uniform-noise images labelled by the model (tests only)."""
    return RandomImages(n, seed)


@_attacks.register("sign-noise")
def _sign_noise(eps: Annotated[float, Field(gt=0, le=1)] = 0.1, seed: int = 0) -> SignNoise:
    """Random sign noise of size eps (tests only)."""
    return SignNoise(eps, seed)


@_scores.register("mean-abs")
def _mean_abs() -> MeanAbs:
    """Mean absolute map value (tests only)."""
    return MeanAbs()


class _TestingPlugin:
    @hookimpl
    def tracekit_register_models(self, register: Register) -> None:
        _models.into(register)

    @hookimpl
    def tracekit_register_datasets(self, register: Register) -> None:
        _datasets.into(register)

    @hookimpl
    def tracekit_register_attacks(self, register: Register) -> None:
        _attacks.into(register)

    @hookimpl
    def tracekit_register_scores(self, register: Register) -> None:
        _scores.into(register)


testing_plugin = _TestingPlugin()


def install_fake_distribution(root: Path, name: str, source: str, entry_point: str = "fake") -> None:
    """A fake installed distribution `name` in the folder `root` (put it on `sys.path`), whose
    `tracekit` entry point `entry_point` is a module with the (dedented) `source`: how plugin tests
    install a third party without pip. The `.dist-info` folder is named as wheels name it (`-` in
    the name becomes `_`), so that importlib reads the name right."""
    import textwrap

    module = name.replace("-", "_")
    dist = root / f"{module}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[tracekit]\n{entry_point} = {module}\n")
    (root / f"{module}.py").write_text(textwrap.dedent(source))


def shard_worker_pids() -> set[int]:
    """The process ids of this machine's `ray` executor workers (`ray::ShardWorker` processes), for
    tests that kill or stop them."""
    pids = set()
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"ray::ShardWorker" in path.read_bytes():
                pids.add(int(path.parent.name))
        except OSError:
            continue
    return pids


def check_stand_in(
    detector: Any, model: nn.Module, images: torch.Tensor, rtol: float, atol: float, step: float = 0.01
) -> torch.Tensor:
    """Assert what a detector whose differentiable stand-in is its score must give adaptive attacks
    (`DifferentiableScore`, docs/plugins.md): `score_for_attack` equals `score` (within `rtol`,
    `atol`), its gradient is finite and non-zero for every image, and one L-inf step of `step`
    against it lowers the mean real score. Returns the real scores."""
    x = images.clone().requires_grad_(True)
    stand_in = detector.score_for_attack(model, x)
    real = detector.score(model, images)
    torch.testing.assert_close(stand_in.detach(), real, rtol=rtol, atol=atol)
    (grad,) = torch.autograd.grad(stand_in.sum(), x)
    assert torch.isfinite(grad).all(), "a non-finite gradient"
    assert (grad.flatten(1).abs().sum(1) > 0).all(), "an image without gradient"
    stepped = (images - step * grad.sign()).clamp(0, 1)
    assert detector.score(model, stepped).mean() < real.mean(), "a step against the stand-in raised the score"
    return real
