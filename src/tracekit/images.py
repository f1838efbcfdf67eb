"""Images for a model from files, PIL images, tensors or arrays: `[C,H,W]` in [0, 1].

Files (PNG, JPEG, anything Pillow reads, any size or mode) are converted to the model's
channels (gray `L` or `RGB`; alpha is dropped) and resized to its input height and width
(bilinear; the aspect ratio is not kept). Tensors and arrays are taken as they are: float
values in [0, 1], `[C,H,W]` or a batch `[N,C,H,W]` of exactly the model's input size, so that
they score bit for bit as they would inside a run.

A file that cannot be read does not stop the others: each input becomes an `ImageInput` that
holds either the image or the reason it could not be used.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import TracekitError


@dataclass
class ImageInput:
    """One input: its display name, and the image `[C,H,W]` or why it could not be read."""

    name: str
    image: torch.Tensor | None = None
    error: str | None = None


def load_image(path: str | os.PathLike[str], input_size: tuple[int, int, int]) -> torch.Tensor:
    """The image file at `path` as `[C,H,W]` in [0, 1], converted and resized to `input_size`."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise TracekitError(f"{path}: no such file")
    if path.is_dir():
        raise TracekitError(f"{path}: is a directory, not an image file")
    try:
        with Image.open(path) as opened:
            return pil_to_tensor(opened, input_size)
    except UnidentifiedImageError:
        raise TracekitError(f"{path}: not an image file Pillow can read (PNG or JPEG expected)") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise TracekitError(f"{path}: cannot read the image ({exc}); is the file complete?") from None


def pil_to_tensor(image: Any, input_size: tuple[int, int, int]) -> torch.Tensor:
    """A PIL image as `[C,H,W]` in [0, 1]: converted to the model's channels, resized to its input."""
    from PIL import Image

    channels, height, width = input_size
    if channels not in (1, 3):
        raise TracekitError(f"the model takes {channels}-channel input; image files give 1 (gray) or 3 (RGB)")
    converted = image.convert("L" if channels == 1 else "RGB")
    if converted.size != (width, height):
        converted = converted.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(converted, dtype=np.float32) / 255.0
    return torch.from_numpy(array.reshape(height, width, channels)).permute(2, 0, 1).contiguous()


def _check_tensor(image: torch.Tensor, input_size: tuple[int, int, int], name: str) -> torch.Tensor:
    if tuple(image.shape) != tuple(input_size):
        raise TracekitError(f"{name}: shape {tuple(image.shape)}, but the model takes {tuple(input_size)} [C,H,W]")
    if not image.is_floating_point():
        raise TracekitError(f"{name}: dtype {image.dtype}; give float pixels in [0, 1] (or an image file)")
    if image.numel() and not (image.min() >= 0 and image.max() <= 1):
        raise TracekitError(f"{name}: values must lie in [0, 1] (got {float(image.min()):.3g}..{float(image.max()):.3g})")
    return image.float()


def read_inputs(images: Any, input_size: tuple[int, int, int]) -> list[ImageInput]:
    """Each of `images` (a path, PIL image, `[C,H,W]`/`[N,C,H,W]` tensor or array, or a list of
    them) as an `ImageInput`; unreadable inputs carry their error message instead of an image."""
    out: list[ImageInput] = []
    for name, item in _named(images):
        try:
            if isinstance(item, torch.Tensor):
                image = _check_tensor(item.detach().cpu(), input_size, name)
            elif isinstance(item, (str, os.PathLike)):
                image = load_image(item, input_size)
            else:
                image = pil_to_tensor(item, input_size)
        except TracekitError as exc:
            out.append(ImageInput(name, error=str(exc)))
        else:
            out.append(ImageInput(name, image))
    return out


def _named(images: Any) -> Iterable[tuple[str, Any]]:
    """`(display name, single input)` pairs; batches are split into their images."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if isinstance(images, torch.Tensor):
        if images.ndim == 4:
            return [(f"tensor[{i}]", image) for i, image in enumerate(images)]
        return [("tensor", images)]
    if isinstance(images, (str, os.PathLike)) or hasattr(images, "convert"):
        images = [images]
    named = []
    for i, item in enumerate(images):
        if isinstance(item, np.ndarray):
            item = torch.from_numpy(item)
        if isinstance(item, (str, os.PathLike)):
            named.append((str(item), item))
        elif isinstance(item, torch.Tensor) or hasattr(item, "convert"):
            named.append((f"{'tensor' if isinstance(item, torch.Tensor) else 'image'}[{i}]", item))
        else:
            raise TracekitError(
                f"images[{i}]: {type(item).__name__} is not an image; give paths, PIL images, or tensors/arrays [C,H,W]"
            )
    return named
