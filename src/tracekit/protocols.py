"""The one small Protocol of each component kind, and the loaded-model record (the executor's
contract, `Executor` and the types it works with, is in `tracekit.executing`).

Everything works in [0, 1] pixel space: models fold their normalization into the module, so
attacks, saliency methods and detectors never see normalized tensors.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
from torch import nn


@dataclass
class LoadedModel:
    """A classifier ready for tracekit: eval mode, normalization folded in, [0, 1] inputs."""

    module: nn.Module
    input_size: tuple[int, int, int]  # (channels, height, width)
    class_names: list[str]
    wnids: list[str] | None = None  # ImageNet WordNet ids, where the model has them
    info: dict[str, Any] = field(default_factory=dict)  # provenance (weights file, hash, ...)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@runtime_checkable
class Dataset(Protocol):
    """Labelled images; `samples` yields `(sample_id, image[C,H,W] in [0,1], label)`.

    `model` lets a dataset resize to the model's input and map folder names to its classes.
    Ids are stable across runs. `info` records choices worth keeping (e.g. a class mapping).
    """

    info: dict[str, Any]

    def samples(self, model: LoadedModel) -> Iterator[tuple[str, torch.Tensor, int]]: ...


class Unreadable(NamedTuple):
    """An item a random-access dataset could not load (a corrupt file): skipped and reported."""

    sample_id: str
    reason: str


Item = tuple[str, torch.Tensor, int]  # (sample_id, image[C,H,W] in [0, 1], label)


@runtime_checkable
class RandomAccessDataset(Dataset, Protocol):
    """Optional capability of a dataset: random access, so that the engine reads it through a torch
    `DataLoader` with worker processes (decoding overlaps the model's work) and any shard of it
    can be read on its own.

    `item(i, model)` loads item `i` (0 <= i < `len(dataset)`) for `model` exactly as `samples`
    yields it, in the same order, or returns `Unreadable` for an item it cannot load. It runs in
    worker processes: it must not depend on earlier calls, and `model` there carries the input
    spec, class names and `info` but a placeholder module (never run it).
    """

    def __len__(self) -> int: ...

    def item(self, index: int, model: LoadedModel) -> Item | Unreadable: ...


@runtime_checkable
class Attack(Protocol):
    """Turns a batch of correctly classified images into adversarial images (same shape).
    Optional capabilities: `PerImageAttack`, `SeededAttack`, `InputChecked`, `CacheKeyed`,
    `DetectorBound`."""

    def generate(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class PerImageAttack(Attack, Protocol):
    """Optional capability of an attack: `per_image = True` makes the engine call `generate` one
    image at a time, each with the random state seeded from the run's seed and the image's id
    alone, so that a random search gives an image the same adversarial however the images are
    batched (for attacks that search image by image anyway, like ART's one-pixel and boundary
    attacks)."""

    per_image: bool


@runtime_checkable
class InputChecked(Protocol):
    """Optional capability of an attack: `check(input_size)` raises `TracekitError` for a model
    input the attack cannot work on; the engine calls it before any work starts."""

    def check(self, input_size: tuple[int, ...]) -> None: ...


@runtime_checkable
class DetectorBound(Attack, Protocol):
    """Optional capability of an attack: with `needs_detector = True` it attacks the run's own
    fitted detector (an adaptive attack). The engine asks `accepts(detector)` of every detector
    it will be bound to before any work (it raises `TracekitError` saying why it cannot attack
    one), and runs it after the detector is fitted and calibrated, calling `bind(detector,
    threshold)` before `generate`."""

    needs_detector: bool

    def accepts(self, detector: Any) -> None: ...

    def bind(self, detector: Any, threshold: float) -> None: ...


@runtime_checkable
class SeededAttack(Attack, Protocol):
    """Optional capability of an attack: it draws its random numbers per image from `seeds` (one
    integer per image, from the run seed and the image's id), so the engine runs it on whole
    batches and each image still gets the same adversarial in any batch (the native one-pixel
    attack). The engine then calls `generate_seeded` instead of `generate`."""

    def generate_seeded(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, seeds: torch.Tensor
    ) -> torch.Tensor: ...


@runtime_checkable
class CacheKeyed(Protocol):
    """Optional capability of an attack: `cache_key()` adds to what its cached adversarials are
    keyed by (a JSON-able dict: say, the version of an external solver or data file it uses), so
    that a change there is never served adversarials computed before it. Its source file and its
    distribution's name and version are part of the key already."""

    def cache_key(self) -> dict[str, Any]: ...


@runtime_checkable
class ModelChecked(Protocol):
    """Optional capability of an attack, a saliency method or a detector that needs something of
    the model (forward hooks on the layers of an eager module, dropout modules, named layers):
    `check_model(model)` raises `TracekitError` saying what it needs and the way out when the model
    cannot give it. The engine calls it as soon as the model is loaded, before any work."""

    def check_model(self, model: LoadedModel) -> None: ...


@runtime_checkable
class Saliency(Protocol):
    """Feature response maps `Tensor[N,C,H,W]`; `target=None` means the predicted class."""

    def maps(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor: ...


@runtime_checkable
class DifferentiableMaps(Saliency, Protocol):
    """Optional capability of a saliency method: `maps_for_attack(model, images, target=None)`,
    maps that follow `maps` with autograd through `images` (for a ReLU network's gradient maps,
    those of a smoothed network: the real maps' own derivative is zero almost everywhere). With a
    score offering `DifferentiableMapScore`, the feature-response detector built of the two offers
    `DifferentiableScore`, so adaptive attacks can attack it."""

    def maps_for_attack(
        self, model: nn.Module, images: torch.Tensor, target: torch.Tensor | None = None
    ) -> torch.Tensor: ...


@runtime_checkable
class Score(Protocol):
    """One number per map, higher = more likely adversarial. Optional capability: `ScoreMap`."""

    def score(self, maps: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class ScoreMap(Score, Protocol):
    """Optional capability of a score: `map(maps) -> Tensor[N,H,W]`, the per-pixel picture of what
    it scores (the local entropy of every neighbourhood, for the mean local entropy); the report
    draws it beside each example's feature response."""

    def map(self, maps: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class DifferentiableMapScore(Score, Protocol):
    """Optional capability of a score: `score_for_attack(maps) -> Tensor[N]`, a differentiable
    stand-in of `score` (a kernel or linear-binning estimate where the real score counts 8-bit
    values), with autograd through `maps`. See `DifferentiableMaps`."""

    def score_for_attack(self, maps: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class Detector(Protocol):
    """Fits on clean (and optionally adversarial) images, then scores images. Optional
    capabilities: `MapsDetector`, `StatefulDetector`, `ModelChecked`."""

    needs_adversarial_fit: bool

    def fit(
        self,
        model: nn.Module,
        clean_fit_images: torch.Tensor,
        adversarial_fit_images: torch.Tensor | None = None,
    ) -> None: ...

    def score(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class MapsDetector(Detector, Protocol):
    """Optional capability of a detector that scores feature response maps (the paper's):
    `maps(model, images) -> Tensor[N,C,H,W]`, its maps of the images, and `score_map(maps)`, the
    per-pixel picture of its score (`ScoreMap.map` of its score, None when the score has none).
    A run stores both for its example images, so the report draws them without the model."""

    def maps(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor: ...

    def score_map(self, maps: torch.Tensor) -> torch.Tensor | None: ...


@runtime_checkable
class DifferentiableScore(Detector, Protocol):
    """Optional capability of a detector: a differentiable stand-in of its score, for adaptive
    attacks (`adaptive`) that descend it. `score_for_attack(model, images)` returns one value per
    image, with autograd through `images`, that follows the real `score` (higher = more likely
    adversarial): equal to it where the score is differentiable, otherwise the score with its
    non-differentiable steps replaced (a straight-through gradient for quantization or a median,
    BPDA; an expectation over random masks, EOT; a smooth surrogate). Attacks use it for gradients
    only: every decision (success, evasion, the kept candidate) uses the real `score` and the
    calibrated threshold. A detector without it is never attacked adaptively through a weaker
    stand-in: tables say "no adaptive attack available"."""

    def score_for_attack(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class StatefulDetector(Detector, Protocol):
    """A detector that learns in `fit` and can hand over what it learned, so that `tracekit detect`
    scores new images with the run's fitted detector (saved as `detector_state.pt`, loaded with
    `torch.load(weights_only=True)`: tensors, numbers, strings, lists and dicts only)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
