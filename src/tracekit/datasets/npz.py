"""Images and labels from a NumPy `.npz` file (`npz`).

Images: `(N, H, W)` gray, `(N, C, H, W)` or `(N, H, W, C)` with C = 1 or 3; `uint8` (0..255)
or float in [0, 1]. Their height and width must be the model's (they are not resized; resize
beforehand). Gray images given to an RGB model are repeated over 3 channels, RGB images given
to a gray model become luminance (ITU-R 601: 0.299 R + 0.587 G + 0.114 B, as PIL's `L`).
Labels: integers `(N,)`. Ids: strings from `ids_key`, else `<file stem>-<index>`.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field

from ..errors import TracekitError
from ..protocols import LoadedModel

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _read(path: Path, keys: dict[str, str | None]) -> dict[str, np.ndarray]:
    """The arrays under `keys` (role -> key), or an error naming the keys the file has."""
    where = f"npz {path}"
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise TracekitError(f"{where}: cannot read it as a NumPy .npz file ({exc})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise TracekitError(
            f"{where}: holds a single array, not an .npz archive; save with np.savez(path, images=..., labels=...)"
        )
    with data:
        available = list(data.files)
        missing = [f"{role} '{key}'" for role, key in keys.items() if key is not None and key not in available]
        if missing:
            raise TracekitError(
                f"{where}: has no {', '.join(missing)}; its arrays are: {', '.join(available) or 'none'} "
                "(set images_key / labels_key / ids_key)"
            )
        try:
            return {role: data[key] for role, key in keys.items() if key is not None}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:  # object arrays, truncated members
            raise TracekitError(f"{where}: cannot read its arrays ({exc})") from None


def _as_unit_float(images: np.ndarray, where: str) -> np.ndarray:
    """uint8 -> /255; float checked to lie in [0, 1]; anything else refused."""
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    if not np.issubdtype(images.dtype, np.floating):
        raise TracekitError(f"{where}: images are {images.dtype}; store uint8 (0..255) or float in [0, 1]")
    if images.size and not np.isfinite(images).all():
        raise TracekitError(f"{where}: images contain NaN or infinite values")
    low, high = (float(images.min()), float(images.max())) if images.size else (0.0, 0.0)
    if low < 0.0 or high > 1.0:
        raise TracekitError(
            f"{where}: float images range over [{low:g}, {high:g}], outside [0, 1]; "
            "scale them to [0, 1] (or store uint8 0..255)"
        )
    return images.astype(np.float32, copy=False)


class NpzImages:
    """Arrays from an `.npz` file, laid out `[N,C,H,W]` for the model they are given."""

    def __init__(
        self,
        path: Path,
        limit: int | None = None,
        images_key: str = "images",
        labels_key: str = "labels",
        ids_key: str | None = None,
    ) -> None:
        path = Path(path).expanduser()
        where = f"npz {path}"
        if not path.is_file():
            raise TracekitError(f"{where}: file does not exist; check the path")
        arrays = _read(path, {"images": images_key, "labels": labels_key, "ids": ids_key})
        images, labels = arrays["images"], arrays["labels"]
        n = len(images) if images.ndim else 0
        if n == 0:
            raise TracekitError(f"{where}: '{images_key}' holds no images")
        if images.ndim not in (3, 4):
            raise TracekitError(
                f"{where}: '{images_key}' has shape {list(images.shape)}; expected (N,H,W), (N,C,H,W) or (N,H,W,C)"
            )
        if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
            raise TracekitError(
                f"{where}: '{labels_key}' must be {n} integers (shape ({n},)), got {labels.dtype} {list(labels.shape)}"
            )
        if (labels < 0).any():
            raise TracekitError(f"{where}: '{labels_key}' has negative labels; labels are class indices 0, 1, ...")
        if ids_key is None:
            ids = [f"{path.stem}-{i}" for i in range(n)]
        else:
            raw = arrays["ids"]
            if raw.shape != (n,) or raw.dtype.kind not in "USiu":
                raise TracekitError(f"{where}: '{ids_key}' must hold {n} strings, got {raw.dtype} {list(raw.shape)}")
            ids = [v.decode() if isinstance(v, bytes) else str(v) for v in raw.tolist()]
            if len(set(ids)) != n:
                raise TracekitError(f"{where}: '{ids_key}' has duplicate ids; sample ids must be unique")
        keep = n if limit is None else min(limit, n)
        self.where = where
        self.images = _as_unit_float(images[:keep], where)
        self.labels = labels[:keep].astype(np.int64)
        self.ids = ids[:keep]
        self.info: dict[str, Any] = {"path": str(path), "size": keep, "file_size": n}

    def _layout(self, model: LoadedModel) -> tuple[np.ndarray, str]:
        """Images as `[N,C,H,W]` with the file's channels, and the layout they were found in."""
        images = self.images
        _, height, width = model.input_size
        if images.ndim == 3 and images.shape[1:] == (height, width):
            return images[:, None], "NHW"
        if images.ndim == 4 and images.shape[2:] == (height, width) and images.shape[1] in (1, 3):
            return images, "NCHW"
        if images.ndim == 4 and images.shape[1:3] == (height, width) and images.shape[3] in (1, 3):
            return images.transpose(0, 3, 1, 2), "NHWC"
        raise TracekitError(
            f"{self.where}: images of shape {list(images.shape)} do not fit the model's "
            f"{'x'.join(map(str, model.input_size))} input; they need height {height} and width {width} "
            "and 1 or 3 channels ((N,H,W), (N,C,H,W) or (N,H,W,C)); resize them beforehand"
        )

    def samples(self, model: LoadedModel) -> Iterator[tuple[str, torch.Tensor, int]]:
        """Yield `(id, image[C,H,W], label)` with the model's channels."""
        channels = model.input_size[0]
        if channels not in (1, 3):
            raise TracekitError(f"{self.where}: the model takes {channels}-channel input; only 1 or 3 are supported")
        images, layout = self._layout(model)
        self.info.update(layout=layout, channels=f"{images.shape[1]} -> {channels}")
        if images.shape[1] != channels:
            images = (
                np.repeat(images, 3, axis=1)
                if channels == 3
                else np.tensordot(images, _LUMA, axes=([1], [0]))[:, None].clip(0.0, 1.0)
            )
        for sample_id, image, label in zip(self.ids, images, self.labels):
            yield sample_id, torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)), int(label)


def npz(
    path: Path,
    limit: Annotated[int, Field(gt=0)] | None = None,
    images_key: str = "images",
    labels_key: str = "labels",
    ids_key: str | None = None,
) -> NpzImages:
    """Images and labels from a NumPy .npz file (uint8 or [0,1] floats; not resized)."""
    return NpzImages(path, limit, images_key, labels_key, ids_key)
