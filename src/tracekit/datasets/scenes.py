"""`digit-scenes`: a small handwritten digit somewhere in a larger cluttered scene, so that a
network must find the object before it can name it (the setting the paper's premise is about).

Each scene (gray, `size` x `size`, values in [0, 1]) is the pixelwise maximum of
- a smooth random background: a 4x4 grid of uniform values in [0, `clutter`], upsampled
  bilinearly to the scene;
- `distractors` fragments of other digits of the same part: half of a digit (its top, bottom,
  left or right half, at random), dimmed to `FRAGMENT_BRIGHTNESS` of its brightness, placed
  anywhere in the scene;
- the scene's digit, one of scikit-learn's 8x8 handwritten digits (the `digits` dataset's
  source) resized bilinearly to `digit_size`, at full brightness, placed anywhere inside it.
The label is the digit's class.

Train/test split by digit: the `train` and `test` parts use the `digits` dataset's split of the
1797 digits (stratified 70/30, seeded), and a scene's digit and its distractors all come from
its own part, so no digit appears in both. `copies` scenes are made of each digit; the id of
copy `c` of digit `i` is `digit-scenes-iiii-c`. Every random choice is a counter-based hash of
(digit, copy, `seed`) (`tracekit.counters`), so a scene is the same alone, in any batch, in any
process and with any `limit`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from ..counters import uniforms
from ..errors import TracekitError
from ..protocols import Item, LoadedModel
from .digits import upscaled
from .params import Split

FRAGMENT_BRIGHTNESS = 0.5
BACKGROUND_GRID = 4
BLOCK = 256  # scenes made together when one is read
# counter sites of the random choices
_BACKGROUND, _PLACE, _PICK, _HALF = range(4)


def digit_sources(split: Split, digit_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices (into the 1797 digits), labels and images `[N, digit_size, digit_size]` of a part."""
    images, labels, splits = upscaled(digit_size)
    index = torch.tensor(splits[split], dtype=torch.long)
    return index, labels[index], images[index, 0]


def _paste(canvas: torch.Tensor, patches: torch.Tensor, top: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """`max(canvas, patches placed at (top, left))` for every scene at once (`[N,S,S]`, `[N,D,D]`)."""
    n, side, _ = canvas.shape
    d = patches.shape[-1]
    rows = torch.arange(side)[None, :] - top[:, None]
    cols = torch.arange(side)[None, :] - left[:, None]
    inside = ((rows >= 0) & (rows < d))[:, :, None] & ((cols >= 0) & (cols < d))[:, None, :]
    values = patches[torch.arange(n)[:, None, None], rows.clamp(0, d - 1)[:, :, None], cols.clamp(0, d - 1)[:, None, :]]
    return torch.maximum(canvas, values * inside)


def _halves(digit_size: int) -> torch.Tensor:
    """The four half masks `[4, D, D]`: top, bottom, left, right."""
    half = torch.arange(digit_size) < digit_size // 2
    rows = half[:, None].expand(digit_size, digit_size)
    cols = half[None, :].expand(digit_size, digit_size)
    return torch.stack([rows, ~rows, cols, ~cols]).float()


def make_scenes(
    digits: torch.Tensor,
    keys: torch.Tensor,
    pool: torch.Tensor,
    *,
    size: int,
    clutter: float,
    distractors: int,
    seed: int,
) -> torch.Tensor:
    """Scenes `[N, size, size]` of `digits[N, D, D]`, scene `i` a function of `keys[i]` and `seed`
    only; distractor fragments are drawn from `pool[M, D, D]`."""
    n, d = len(digits), digits.shape[-1]
    grid = uniforms(keys, BACKGROUND_GRID**2, seed, _BACKGROUND, 0).float().view(n, 1, BACKGROUND_GRID, BACKGROUND_GRID)
    scenes = clutter * F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=True)[:, 0]
    span = size - d + 1
    place = (uniforms(keys, 2 * (distractors + 1), seed, _PLACE, 0) * span).long()
    if distractors and len(pool):
        pick = (uniforms(keys, distractors, seed, _PICK, 0) * len(pool)).long()
        half = (uniforms(keys, distractors, seed, _HALF, 0) * 4).long()
        masks = _halves(d)
        for k in range(distractors):  # a few layers, each vectorized over all scenes
            fragment = FRAGMENT_BRIGHTNESS * pool[pick[:, k]] * masks[half[:, k]]
            scenes = _paste(scenes, fragment, place[:, 2 * k + 2], place[:, 2 * k + 3])
    return _paste(scenes, digits, place[:, 0], place[:, 1])


class DigitScenes:
    """One part of the digit scenes (optionally its first `limit` ids), as 1 x size x size images."""

    def __init__(
        self,
        split: Split,
        limit: int | None,
        size: int,
        digit_size: int,
        clutter: float,
        distractors: int,
        copies: range,
        seed: int,
    ) -> None:
        """`copies`: the copy numbers made of each digit (`range(copies)` from the factory)."""
        self.size, self.digit_size, self.clutter, self.distractors, self.seed = (
            size,
            digit_size,
            clutter,
            distractors,
            seed,
        )
        index, labels, self.sources = digit_sources(split, digit_size)
        total = len(index) * len(copies)
        n = total if limit is None else min(limit, total)
        order = torch.arange(n)
        self.which = order // len(copies)  # digit-major: all copies of a digit together
        self.copy = copies.start + (order % len(copies)) * copies.step
        self.keys = index[self.which] * 65536 + self.copy
        self.labels = labels[self.which]
        self.ids = [
            f"digit-scenes-{i:04d}-{c}" for i, c in zip(index[self.which].tolist(), self.copy.tolist(), strict=True)
        ]
        self._last: tuple[int, torch.Tensor | None] = (-1, None)
        self.info: dict[str, Any] = {
            "split": split, "size": n, "split_size": total, "scene_size": size, "digit_size": digit_size,
            "clutter": clutter, "distractors": distractors, "copies": len(copies), "seed": seed,
        }  # fmt: skip

    def __len__(self) -> int:
        return len(self.ids)

    def scenes(self, rows: torch.Tensor) -> torch.Tensor:
        """Scenes `[len(rows), 1, size, size]` of the dataset's items `rows`."""
        made = make_scenes(
            self.sources[self.which[rows]], self.keys[rows], self.sources,
            size=self.size, clutter=self.clutter, distractors=self.distractors, seed=self.seed,
        )  # fmt: skip
        return made[:, None]

    def _block(self, block: int) -> torch.Tensor:
        """Scenes of items `block * BLOCK ...`, made together; the last block read is kept."""
        if self._last[0] != block:
            self._last = (block, self.scenes(torch.arange(block * BLOCK, min((block + 1) * BLOCK, len(self)))))
        return self._last[1]

    def item(self, index: int, model: LoadedModel) -> Item:
        """`(digit-scenes-iiii-c, image[1,size,size], label)`; the model must take that input."""
        if tuple(model.input_size) != (1, self.size, self.size):
            raise TracekitError(
                f"dataset 'digit-scenes' has 1x{self.size}x{self.size} gray scenes but the model takes "
                f"{'x'.join(map(str, model.input_size))} inputs; use model: {{name: digit-scenes-cnn}} "
                f"(it takes the default size, 48) or set the dataset's size to the model's"
            )
        if not 0 <= index < len(self):
            raise IndexError(f"digit-scenes: no item {index} (the dataset has {len(self)})")
        return self.ids[index], self._block(index // BLOCK)[index % BLOCK].clone(), int(self.labels[index])

    def samples(self, model: LoadedModel) -> Iterator[Item]:
        """Yield `(digit-scenes-iiii-c, image[1,size,size], label)` for every item."""
        for index in range(len(self)):
            yield self.item(index, model)
