"""Your own images (`imagefolder`): `ROOT/<class folder>/**/*.png|jpg|jpeg`.

Images are prepared like ImageNet evaluation, exactly as torchvision's `Resize` + `CenterCrop`
(`tracekit.images.Preparation`, the loader `explain` and `detect` use too): converted to the
model's channels (RGB or gray; alpha is dropped), the shorter side resized to
`floor(crop / crop_pct)`, then the center cropped to the model's input height x width (or
`size` x `size`). `crop_pct` and the interpolation come from the model's `info` where it records
them (torchvision and timm models do), else 0.875 (= 224/256) and bilinear; a model whose
images are whole frames can record `crop_pct: 1.0`.

Folder names map to the model's classes by WordNet id (`n01440764`, where the model has them)
or by class name (case-insensitive, `_` for spaces). If no folder matches, folders are taken in
sorted order as classes 0, 1, ... (with a warning). The mapping and its method are recorded in
`info`. Sample ids are paths relative to ROOT (`class/file.png`); files come round-robin over
the sorted class folders (each folder's files sorted), so `limit` takes a balanced subset: the
first `limit` files in that order, and `len(dataset)` is `min(limit, number of files)`.
Unreadable files among them are skipped: `samples` warns and lists them in `info["skipped"]`,
random access (`item`) returns `Unreadable` for them.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from itertools import zip_longest
from pathlib import Path
from typing import Any

from ..errors import TracekitError, closest
from ..images import Preparation
from ..protocols import Item, LoadedModel, Unreadable

EXTENSIONS = (".png", ".jpg", ".jpeg")


def _key(name: str) -> str:
    return name.strip().lower().replace("_", " ")


def _class_mapping(folders: list[str], model: LoadedModel) -> tuple[dict[str, int], str]:
    """`(folder -> class index, method)`; method is `wnid`, `name`, `wnid+name` or `sorted` (no
    folder named after a class: folders in sorted order as classes 0, 1, ...)."""
    by_wnid = {w.lower(): i for i, w in enumerate(model.wnids or [])}
    by_name: dict[str, list[int]] = {}
    for i, name in enumerate(model.class_names):
        by_name.setdefault(_key(name), []).append(i)
    mapping: dict[str, int] = {}
    methods: set[str] = set()
    unmatched: list[str] = []
    for folder in folders:
        if folder.lower() in by_wnid:
            mapping[folder] = by_wnid[folder.lower()]
            methods.add("wnid")
        elif _key(folder) in by_name:
            hits = by_name[_key(folder)]
            if len(hits) > 1:
                raise TracekitError(
                    f"imagefolder: folder '{folder}' names {len(hits)} classes of the model "
                    f"({', '.join(map(str, hits))}); rename it to the WordNet id or another class name"
                )
            mapping[folder] = hits[0]
            methods.add("name")
        else:
            unmatched.append(folder)
    if not mapping:
        if len(folders) > model.num_classes:
            raise TracekitError(
                f"imagefolder: {len(folders)} class folders but the model has {model.num_classes} classes, "
                "and no folder is named after a class; name folders after the model's classes"
            )
        return {folder: i for i, folder in enumerate(folders)}, "sorted"
    if unmatched:
        detail = "; ".join(f"'{f}'" + _suggest(f, model) for f in unmatched[:10])
        raise TracekitError(
            f"imagefolder: {len(unmatched)} folder(s) match no class of the model: {detail}; "
            "rename them after the model's class names (or WordNet ids)"
        )
    return mapping, "+".join(m for m in ("wnid", "name") if m in methods)


def _suggest(folder: str, model: LoadedModel) -> str:
    hits = closest(folder.replace("_", " "), model.class_names)
    return f" (closest: {', '.join(hits)})" if hits else ""


class ImageFolder:
    """Images in class subfolders of `root`, prepared for the model they are given."""

    def __init__(self, root: Path, size: int | None = None, limit: int | None = None) -> None:
        self.root = Path(root).expanduser()
        self.size, self.limit = size, limit
        if not self.root.is_dir():
            raise TracekitError(f"imagefolder: root {self.root} is not a directory; check the path")
        files: dict[str, list[Path]] = {}
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            found = sorted(
                p
                for p in folder.rglob("*")
                if p.suffix.lower() in EXTENSIONS and p.is_file() and not p.name.startswith(".")
            )
            if found:
                files[folder.name] = found
        if not files:
            raise TracekitError(
                f"imagefolder: no images ({', '.join(EXTENSIONS)}) in class folders under {self.root}; "
                "put them in ROOT/<class>/<image>"
            )
        self.files = files
        columns = [[(folder, path) for path in paths] for folder, paths in files.items()]
        ordered = [item for row in zip_longest(*columns) for item in row if item is not None]
        self._ordered: list[tuple[str, Path]] = ordered[:limit]  # (folder, file), round-robin
        self._prepared: dict[tuple[Any, ...], tuple[Preparation, dict[str, int], str]] = {}
        self._skipped: dict[str, str] = {}
        self.info: dict[str, Any] = {
            "root": str(self.root),
            "classes": len(files),
            "files": len(ordered),
            "skipped": self._skipped,
        }

    def __len__(self) -> int:
        return len(self._ordered)

    def _prepare(self, model: LoadedModel) -> tuple[Preparation, dict[str, int], str]:
        """The model's `Preparation`, class mapping and mapping method, computed once per kind of model."""
        key = (
            tuple(model.input_size),
            tuple(model.class_names),
            tuple(model.wnids or ()),
            model.info.get("crop_pct"),
            model.info.get("interpolation"),
        )
        if key not in self._prepared:
            try:
                preparation = Preparation.for_model(model, self.size)
            except TracekitError as exc:
                raise TracekitError(f"imagefolder: {exc}") from None
            mapping, method = _class_mapping(list(self.files), model)
            self._prepared[key] = (preparation, mapping, method)
            # Recorded (and warned about) once per process; the engine prepares in its main
            # process before it starts the loader's workers, which inherit this.
            if method == "sorted":
                warnings.warn(
                    "imagefolder: no folder is named after one of the model's classes; taking folders in sorted "
                    f"order as classes 0..{len(mapping) - 1}",
                    stacklevel=3,
                )
            self.info.update(
                class_mapping=dict(mapping), mapping=method, crop=list(preparation.crop), crop_pct=preparation.crop_pct
            )
        return self._prepared[key]

    def item(self, index: int, model: LoadedModel) -> Item | Unreadable:
        """File `index` (round-robin order) as `(relative path, image[C,H,W], class index)`, or
        `Unreadable` when it cannot be decoded. Only the first call for a kind of model records the
        class mapping in `info` (and warns when it falls back to sorted order)."""
        from PIL import Image

        preparation, mapping, _ = self._prepare(model)
        folder, path = self._ordered[index]
        sample_id = path.relative_to(self.root).as_posix()
        try:
            image = preparation.load(path)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            return Unreadable(sample_id, f"{type(exc).__name__}: {exc}")
        return sample_id, image, mapping[folder]

    def samples(self, model: LoadedModel) -> Iterator[Item]:
        """Yield `(relative path, image[C,H,W], class index)`; unreadable files are skipped with a warning."""
        self._prepare(model)
        count = 0
        for index in range(len(self)):
            got = self.item(index, model)
            if isinstance(got, Unreadable):
                if got.sample_id not in self._skipped:
                    self._skipped[got.sample_id] = got.reason
                    warnings.warn(
                        f"imagefolder: skipping unreadable image {self.root / got.sample_id} ({got.reason})",
                        stacklevel=2,
                    )
                continue
            count += 1
            yield got
        if count == 0:
            raise TracekitError(f"imagefolder: none of the images under {self.root} could be read")
