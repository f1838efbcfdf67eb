"""Seeded synthetic images (`synthetic`): any number, at any model's input size, no files.

Image `i` is computed from `(seed, i)` alone, so any image can be made on its own, in any
process, and is the same on every run: random patterns at three coarse scales (2x2, 4x4, 8x8
per channel), upsampled bicubically to the image size and averaged (smooth, image-like
structure), plus a little Gaussian noise, clipped to [0, 1]. Ids are `synthetic-000000`,
`synthetic-000001`, ...

The images have no true class: every label is 0, and the dataset is meant to be used with
`labels: predicted` (the spec option that labels each image with the model's own prediction);
`info["labels"]` says so. Size and channels default to the model's input; given, they must
match it (they make a spec state the input it was written for).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import torch

from ..errors import TracekitError
from ..protocols import Item, LoadedModel

SCALES = (2, 4, 8)  # side of each random pattern before upsampling
NOISE = 0.03  # standard deviation of the per-pixel noise


def _seed(seed: int, index: int) -> int:
    """A 63-bit generator seed from `(seed, index)`, the same in every process and on every platform."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class Synthetic:
    """`n` seeded smooth random images, labelled 0 (meant for `labels: predicted`)."""

    def __init__(self, n: int = 64, size: int | None = None, channels: int | None = None, seed: int = 0) -> None:
        self.n, self.size, self.channels, self.seed = n, size, channels, seed
        self.info: dict[str, Any] = {"n": n, "seed": seed, "labels": "predicted"}

    def __len__(self) -> int:
        return self.n

    def _shape(self, model: LoadedModel) -> tuple[int, int, int]:
        """The images' `(C, H, W)`: the model's input, which `size` and `channels` must agree with."""
        channels, height, width = model.input_size
        if (self.channels or channels, self.size or height, self.size or width) != (channels, height, width):
            asked = f"{self.channels or channels}x{self.size or height}x{self.size or width}"
            raise TracekitError(
                f"synthetic: images of {asked} (channels: {self.channels}, size: {self.size}) but the model takes "
                f"{channels}x{height}x{width} inputs; drop size and channels to use the model's"
            )
        return channels, height, width

    def item(self, index: int, model: LoadedModel) -> Item:
        """Image `index` as `(synthetic-<index>, image[C,H,W] in [0, 1], 0)`."""
        if not 0 <= index < self.n:
            raise IndexError(f"synthetic: no image {index} (the dataset has {self.n})")
        channels, height, width = self._shape(model)
        generator = torch.Generator().manual_seed(_seed(self.seed, index))
        patterns = [torch.rand((1, channels, side, side), generator=generator) for side in SCALES]
        smooth = sum(
            torch.nn.functional.interpolate(p, size=(height, width), mode="bicubic", align_corners=False)
            for p in patterns
        ) / len(SCALES)
        noise = NOISE * torch.randn((channels, height, width), generator=generator)
        return f"synthetic-{index:06d}", (smooth[0] + noise).clamp_(0.0, 1.0), 0

    def samples(self, model: LoadedModel) -> Iterator[Item]:
        """Yield `(synthetic-<index>, image[C,H,W] in [0, 1], 0)` for every image."""
        for index in range(self.n):
            yield self.item(index, model)
