"""Images for a model from files, PIL images, tensors or arrays: `[C,H,W]` in [0, 1].

Files (PNG, JPEG, anything Pillow reads, any size or mode) are prepared exactly as the
`imagefolder` dataset prepares them inside a run (one loader for both, so a file scores as it
would in the run that calibrated the threshold): converted to the model's channels (gray `L` or
`RGB`; alpha is dropped); a file already at the model's input height x width is then taken as it
is, pixel for pixel; any other is resized and centre-cropped as torchvision's `Resize` +
`CenterCrop` do, the shorter side to `floor(crop / crop_pct)` with the model's interpolation, the
centre cropped to the model's input height x width. `crop_pct` and the interpolation come from the
model's `info`: torchvision and timm models record their ImageNet-style evaluation preprocessing
(`crop_pct` 0.875 for most), and every other model, one that records none included, gets the
whole frame (`crop_pct` 1.0: resized, no border cut; TorchScript and checkpoint models take
`crop_pct` and `interpolation` in the spec). Tensors and arrays are taken as they are:
float values in [0, 1], `[C,H,W]` or a batch `[N,C,H,W]` of exactly the model's input size, so
that they score bit for bit as they would inside a run.

A file that cannot be read does not stop the others: each input becomes an `ImageInput` that
holds either the image or the reason it could not be used.

Work is bounded whatever the file: only regular files are opened (a named pipe would block),
an image is decoded only when it has at most `MAX_PIXELS` pixels (a small PNG can declare
gigapixels), and resized only when the resize target has at most `MAX_PIXELS` too (an extreme
aspect ratio would otherwise make a huge intermediate image). Such files are refused with the
reason (a run skips them with a warning).
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import TracekitError
from .protocols import LoadedModel

# Here rather than in models/: the models' loaders and the datasets' file loader both import it,
# and neither package imports the other for it.
DEFAULT_CROP_PCT = 0.875  # 224 / 256: ImageNet evaluation resizes to 256, then crops 224 (timm's fallback)
WHOLE_FRAME = 1.0  # the crop_pct of a model that declares no ImageNet-style preprocessing
MAX_PIXELS = 50_000_000  # decoded or resized image size tracekit accepts (about 7,000 x 7,000)


@dataclass
class ImageInput:
    """One input: its display name, and the image `[C,H,W]` or why it could not be read."""

    name: str
    image: torch.Tensor | None = None
    error: str | None = None


@dataclass(frozen=True)
class Preparation:
    """How image files become a model's inputs: channels, crop (height, width), `crop_pct`, resampling."""

    channels: int
    crop: tuple[int, int]
    crop_pct: float = 1.0
    interpolation: str = "bilinear"

    @classmethod
    def for_model(cls, model: LoadedModel, size: int | None = None) -> Preparation:
        """The model's own preparation (from its `info`), optionally cropping `size` x `size` instead."""
        channels, height, width = model.input_size
        if channels not in (1, 3):
            raise TracekitError(f"the model takes {channels}-channel input; image files give 1 (gray) or 3 (RGB)")
        return cls(
            channels,
            (size, size) if size else (height, width),
            float(model.info.get("crop_pct") or WHOLE_FRAME),
            str(model.info.get("interpolation", "bilinear")),
        )

    def record(self) -> dict[str, Any]:
        """What a run directory keeps of it (`detector.json`), so `detect` prepares files as the run did."""
        return {
            "channels": self.channels, "crop": list(self.crop), "crop_pct": self.crop_pct,
            "interpolation": self.interpolation,
        }  # fmt: skip

    @classmethod
    def from_record(cls, record: Any, model: LoadedModel) -> Preparation:
        """A preparation read back from a run directory (`record()`), checked like user input and
        against the model it is for; a `TracekitError` says what is wrong."""
        from PIL import Image

        channels, height, width = model.input_size
        fields = ("channels", "crop", "crop_pct", "interpolation")
        if not isinstance(record, dict) or sorted(record) != sorted(fields):
            raise TracekitError(f"'preparation' must be an object with {', '.join(fields)}")
        crop_pct, interpolation = record["crop_pct"], record["interpolation"]
        if record["channels"] != channels or record["crop"] != [height, width]:
            raise TracekitError(
                f"'preparation' is for {record['channels']}-channel {record['crop']} inputs, the model takes "
                f"{channels}x{height}x{width}"
            )
        if isinstance(crop_pct, bool) or not isinstance(crop_pct, (int, float)) or not 0 < crop_pct <= 1:
            raise TracekitError(f"'preparation.crop_pct' must be a number in (0, 1], got {crop_pct!r}")
        if not isinstance(interpolation, str) or not hasattr(Image.Resampling, interpolation.upper()):
            raise TracekitError(f"'preparation.interpolation' is not a resampling filter: {interpolation!r}")
        return cls(channels, (height, width), float(crop_pct), interpolation)

    def __call__(self, image: Any) -> torch.Tensor:
        """A PIL image as `[C,H,W]` in [0, 1]: converted, shorter side resized, centre-cropped."""
        from PIL import Image

        resample = getattr(Image.Resampling, self.interpolation.upper(), Image.Resampling.BILINEAR)
        if image.mode == "I" or image.mode.startswith("I;16"):
            # 16-bit gray: Pillow's own convert("L") clips every value above 255 to white.
            image = Image.fromarray(np.round(np.asarray(image, dtype=np.float64) / 257).clip(0, 255).astype(np.uint8))
        w, h = image.size
        _bounded(w, h, "the image has")
        height, width = self.crop
        image = image.convert("RGB" if self.channels == 3 else "L")
        if (w, h) != (width, height):  # a file already at the model's input is never resized or cropped
            short = max(math.floor(max(height, width) / self.crop_pct + 1e-6), height, width)
            if w <= h:  # torchvision's Resize(int): the shorter side to `short`, the other in proportion
                size = (short, int(short * h / w))
            else:
                size = (int(short * w / h), short)
            _bounded(*size, f"its aspect ratio ({w}x{h}) would make it")
            if size != image.size:
                image = image.resize(size, resample)
            top, left = int(round((size[1] - height) / 2.0)), int(round((size[0] - width) / 2.0))
            image = image.crop((left, top, left + width, top + height))
        array = np.asarray(image, dtype=np.float32) / 255.0
        return torch.from_numpy(array.reshape(height, width, self.channels)).permute(2, 0, 1).contiguous()

    def load(self, path: str | os.PathLike[str]) -> torch.Tensor:
        """The image file at `path`, prepared; unreadable files raise `OSError`/`ValueError` (Pillow's)."""
        from PIL import Image

        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ImageRefused("not a regular file (a pipe, device or socket); give an image file")
        with Image.open(path) as opened:  # reads the header only: the size is checked before decoding
            return self(opened)


class ImageRefused(ValueError):
    """A file tracekit will not decode (not a regular file, too many pixels)."""


def _bounded(width: int, height: int, what: str) -> None:
    if width * height > MAX_PIXELS:
        raise ImageRefused(
            f"{what} {width}x{height} = {width * height:,} pixels, more than the {MAX_PIXELS:,} tracekit decodes; "
            "resize it first"
        )


def load_image(path: str | os.PathLike[str], preparation: Preparation) -> torch.Tensor:
    """The image file at `path` as `[C,H,W]` in [0, 1], prepared; a clear `TracekitError` if unreadable."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise TracekitError(f"{path}: no such file")
    if path.is_dir():
        raise TracekitError(f"{path}: is a directory, not an image file")
    try:
        return preparation.load(path)
    except UnidentifiedImageError:
        raise TracekitError(f"{path}: not an image file Pillow can read (PNG or JPEG expected)") from None
    except (ImageRefused, Image.DecompressionBombError) as exc:
        raise TracekitError(f"{path}: {exc}") from None
    except (OSError, ValueError) as exc:
        raise TracekitError(f"{path}: cannot read the image ({exc}); is the file complete?") from None


def _check_tensor(image: torch.Tensor, input_size: tuple[int, int, int], name: str) -> torch.Tensor:
    if tuple(image.shape) != tuple(input_size):
        raise TracekitError(f"{name}: shape {tuple(image.shape)}, but the model takes {tuple(input_size)} [C,H,W]")
    if not image.is_floating_point():
        raise TracekitError(f"{name}: dtype {image.dtype}; give float pixels in [0, 1] (or an image file)")
    if image.numel() and not (image.min() >= 0 and image.max() <= 1):
        raise TracekitError(
            f"{name}: values must lie in [0, 1] (got {float(image.min()):.3g}..{float(image.max()):.3g})"
        )
    return image.float()


def read_inputs(images: Any, model: LoadedModel, preparation: Preparation | None = None) -> list[ImageInput]:
    """Each of `images` (a path, PIL image, `[C,H,W]`/`[N,C,H,W]` tensor or array, or a list of
    them) as an `ImageInput` for `model`, files prepared as `preparation` says (default the
    model's own); unreadable inputs carry their error message instead."""
    out: list[ImageInput] = []
    for name, item in _named(images):
        try:
            if isinstance(item, torch.Tensor):
                image = _check_tensor(item.detach().cpu(), model.input_size, name)
            else:
                preparation = preparation or Preparation.for_model(model)
                is_path = isinstance(item, (str, os.PathLike))
                image = load_image(item, preparation) if is_path else preparation(item)
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
