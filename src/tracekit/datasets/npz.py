"""Images and labels from NumPy arrays (`npz`): an `.npz` archive or a folder of `.npy` files.

`path` is an `.npz` file (`np.savez(path, images=..., labels=...)`) or a folder holding
`<images_key>.npy`, `<labels_key>.npy` and optionally `<ids_key>.npy` (`np.save`). The images are
memory-mapped, never read whole: each image is read and converted when it is used, so a dataset
larger than memory works. That needs them uncompressed: a `np.savez_compressed` archive is read
whole, and refused when its images exceed 256 MiB.

Images: `(N, H, W)` gray, `(N, C, H, W)` or `(N, H, W, C)` with C = 1 or 3; `uint8` (0..255)
or float in [0, 1] (checked image by image as they are read: an image with values outside
[0, 1], NaN or infinity is an error naming its id). Their height and width must be the model's
(they are not resized; resize beforehand). Gray images given to an RGB model are repeated over
3 channels, RGB images given to a gray model become luminance (ITU-R 601: 0.299 R + 0.587 G +
0.114 B, as PIL's `L`). Labels: integers `(N,)`. Ids: strings from `ids_key`, else
`<file or folder stem>-<index>`. `limit` keeps the first `limit` images.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import TracekitError
from ..protocols import Item, LoadedModel
from .npyfiles import Head, NpyData, load, read_arrays

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@lru_cache(maxsize=64)
def _layout(shape: tuple[int, ...], input_size: tuple[int, int, int], where: str) -> str:
    """How images of `shape` (`[N,...]`) lie for a model taking `input_size`: NHW, NCHW or NHWC."""
    channels, height, width = input_size
    if channels not in (1, 3):
        raise TracekitError(f"{where}: the model takes {channels}-channel input; only 1 or 3 are supported")
    if len(shape) == 3 and shape[1:] == (height, width):
        return "NHW"
    if len(shape) == 4 and shape[2:] == (height, width) and shape[1] in (1, 3):
        return "NCHW"
    if len(shape) == 4 and shape[1:3] == (height, width) and shape[3] in (1, 3):
        return "NHWC"
    raise TracekitError(
        f"{where}: images of shape {list(shape)} do not fit the model's "
        f"{'x'.join(map(str, input_size))} input; they need height {height} and width {width} "
        "and 1 or 3 channels ((N,H,W), (N,C,H,W) or (N,H,W,C)); resize them beforehand"
    )


class NpzImages:
    """Memory-mapped image arrays, each image laid out `[C,H,W]` for the model it is given.

    Pickles without the mapped data (a worker process maps the file again).
    """

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
        if not path.exists():
            raise TracekitError(f"{where}: does not exist; check the path (an .npz file or a folder of .npy files)")
        keys = {"images": images_key, "labels": labels_key} | ({"ids": ids_key} if ids_key is not None else {})
        arrays = read_arrays(path, keys, where, {} if limit is None else {"images": limit})
        images, labels = arrays["images"], load(arrays["labels"])
        n = images.shape[0] if images.shape else 0
        if n == 0:
            raise TracekitError(f"{where}: '{images_key}' holds no images")
        if len(images.shape) not in (3, 4):
            raise TracekitError(
                f"{where}: '{images_key}' has shape {list(images.shape)}; expected (N,H,W), (N,C,H,W) or (N,H,W,C)"
            )
        if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
            raise TracekitError(f"{where}: images are {images.dtype}; store uint8 (0..255) or float in [0, 1]")
        if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
            raise TracekitError(
                f"{where}: '{labels_key}' must be {n} integers (shape ({n},)), got {labels.dtype} {list(labels.shape)}"
            )
        if (labels < 0).any():
            raise TracekitError(f"{where}: '{labels_key}' has negative labels; labels are class indices 0, 1, ...")
        if ids_key is None:
            ids = [f"{path.stem}-{i}" for i in range(n)]
        else:
            raw = load(arrays["ids"])
            if raw.shape != (n,) or raw.dtype.kind not in "USiu":
                raise TracekitError(f"{where}: '{ids_key}' must hold {n} strings, got {raw.dtype} {list(raw.shape)}")
            try:
                ids = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in raw.tolist()]
            except UnicodeDecodeError as exc:
                raise TracekitError(
                    f"{where}: '{ids_key}' holds ids that are not UTF-8 text ({exc.reason}); save them as str"
                ) from None
            if len(set(ids)) != n:
                raise TracekitError(f"{where}: '{ids_key}' has duplicate ids; sample ids must be unique")
        keep = n if limit is None else min(limit, n)
        self.where = where
        self._stored = images if isinstance(images, NpyData) else None  # mapped again after unpickling
        self._images = (
            images.map() if isinstance(images, NpyData) else images.array if isinstance(images, Head) else images
        )
        self.labels = labels[:keep].astype(np.int64)
        self.ids = ids[:keep]
        self.info: dict[str, Any] = {
            "path": str(path),
            "size": keep,
            "file_size": n,
            "memory_mapped": self._stored is not None,
        }

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self._stored is not None:
            del state["_images"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._stored is not None:
            self._images = self._stored.map()

    def __len__(self) -> int:
        return len(self.ids)

    def item(self, index: int, model: LoadedModel) -> Item:
        """Image `index` as `(id, image[C,H,W], label)` with the model's channels; only it is read."""
        if not 0 <= index < len(self):
            raise IndexError(f"{self.where}: no image {index} (the dataset has {len(self)})")
        channels = model.input_size[0]
        layout = _layout(tuple(self._images.shape), tuple(model.input_size), self.where)
        sample_id = self.ids[index]
        image = np.asarray(self._images[index])
        image = image[None] if layout == "NHW" else image.transpose(2, 0, 1) if layout == "NHWC" else image
        image = self._unit_float(image, sample_id)
        if image.shape[0] != channels:
            image = np.repeat(image, 3, axis=0) if channels == 3 else np.tensordot(_LUMA, image, 1)[None].clip(0, 1)
        return sample_id, torch.from_numpy(np.array(image, dtype=np.float32, order="C")), int(self.labels[index])

    def _unit_float(self, image: np.ndarray, sample_id: str) -> np.ndarray:
        """uint8 -> /255; float checked to be finite and in [0, 1]."""
        if image.dtype == np.uint8:
            return image.astype(np.float32) / 255.0
        if not np.isfinite(image).all():
            raise TracekitError(f"{self.where}: image '{sample_id}' contains NaN or infinite values")
        low, high = float(image.min()), float(image.max())
        if low < 0.0 or high > 1.0:
            raise TracekitError(
                f"{self.where}: image '{sample_id}' ranges over [{low:g}, {high:g}], outside [0, 1]; "
                "scale the images to [0, 1] (or store uint8 0..255)"
            )
        return image.astype(np.float32, copy=False)

    def samples(self, model: LoadedModel) -> Iterator[Item]:
        """Yield `(id, image[C,H,W], label)` with the model's channels, one image read at a time."""
        layout = _layout(tuple(self._images.shape), tuple(model.input_size), self.where)
        stored = 1 if layout == "NHW" else self._images.shape[1 if layout == "NCHW" else 3]
        self.info.update(layout=layout, channels=f"{stored} -> {model.input_size[0]}")
        for index in range(len(self)):
            yield self.item(index, model)
