"""Arrays of `.npy` files in a folder or members of an `.npz` archive, memory-mapped.

An array stored uncompressed (a `.npy` file, or an `np.savez` member: zip `STORED`) comes back as
an `NpyData`: where its data start in the file, with the dtype, shape and order of its `.npy`
header, checked against the bytes actually there (a header declaring an absurd shape is a clear
error, never a huge allocation). `NpyData.map()` maps it read-only, so nothing is read until an
element is. A deflated member (`np.savez_compressed`) cannot be mapped: it is decompressed as a
stream, and only as far as needed: the first `rows` entries (a dataset's `limit`) of a C-order
array come back as a `Head`, so `limit` bounds memory; what has to be decompressed is refused
above `MAX_COMPRESSED_BYTES`.
"""

from __future__ import annotations

import math
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from ..errors import TracekitError

MAX_COMPRESSED_BYTES = 256 * 2**20  # largest compressed member decompressed into memory
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, then name and extra field lengths


@dataclass(frozen=True)
class NpyData:
    """An array's data in a file: byte offset, dtype, shape and order (`C` or `F`)."""

    path: Path
    offset: int
    dtype: np.dtype
    shape: tuple[int, ...]
    order: str

    def map(self) -> np.ndarray:
        """The array memory-mapped read-only (an empty array when it has no elements)."""
        if math.prod(self.shape) == 0:
            return np.empty(self.shape, self.dtype)
        return np.memmap(self.path, self.dtype, "r", self.offset, self.shape, self.order)


@dataclass(frozen=True)
class Head:
    """The first rows of a compressed array (`array`), with the shape its header declares."""

    array: np.ndarray
    shape: tuple[int, ...]

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype


Array = NpyData | Head | np.ndarray


def load(array: Array) -> np.ndarray:
    """The whole array in memory (for the small ones: labels, ids)."""
    if isinstance(array, Head):
        raise ValueError("only the first rows of this array were read")
    return np.array(array.map()) if isinstance(array, NpyData) else array


def read_arrays(path: Path, keys: dict[str, str], where: str, rows: dict[str, int] | None = None) -> dict[str, Array]:
    """The arrays named `keys` (role -> name) in the folder of `.npy` files or the `.npz` at `path`;
    missing names are an error that lists the arrays there are. `rows[role]`: only that many
    leading entries of the role's array are needed (a compressed one is not decompressed further)."""
    rows = rows or {}
    if path.is_dir():
        available = sorted(p.stem for p in path.glob("*.npy") if p.is_file())
        _check_names(keys, available, where)
        arrays: dict[str, NpyData | np.ndarray] = {}
        for role, key in keys.items():
            file = path / f"{key}.npy"
            try:
                with file.open("rb") as f:
                    arrays[role] = _located(file, f, 0, file.stat().st_size, f"{where}: '{key}.npy'")
            except OSError as exc:
                raise TracekitError(f"{where}: cannot read '{key}.npy' ({exc})") from None
        return arrays
    try:
        with path.open("rb") as f:
            if f.read(len(_NPY_MAGIC)) == _NPY_MAGIC:
                raise TracekitError(
                    f"{where}: holds a single array, not an .npz archive; save with "
                    "np.savez(path, images=..., labels=...) or put .npy files in a folder"
                )
        with zipfile.ZipFile(path) as archive, path.open("rb") as f:
            members = {name.removesuffix(".npy"): name for name in archive.namelist() if name.endswith(".npy")}
            _check_names(keys, sorted(members), where)
            return {
                role: _member(archive, archive.getinfo(members[key]), path, f, where, rows.get(role))
                for role, key in keys.items()
            }
    except (OSError, ValueError, EOFError, RuntimeError, NotImplementedError, struct.error, zipfile.BadZipFile) as exc:
        raise TracekitError(f"{where}: cannot read it as a NumPy .npz file ({exc})") from None


def _check_names(keys: dict[str, str], available: list[str], where: str) -> None:
    missing = [f"{role} '{key}'" for role, key in keys.items() if key not in available]
    if missing:
        raise TracekitError(
            f"{where}: has no {', '.join(missing)}; its arrays are: {', '.join(available) or 'none'} "
            "(set images_key / labels_key / ids_key)"
        )


def _member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, f: IO[bytes], where: str, rows: int | None = None
) -> Array:
    """A stored member located in the archive (the file `path`, open as `f`); a deflated one
    decompressed (if small enough), only its first `rows` entries when it has more."""
    name = f"{where}: '{info.filename}'"
    if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 1:  # bit 0: encrypted
        f.seek(info.header_offset)
        signature, name_length, extra_length = _ZIP_LOCAL_HEADER.unpack(f.read(_ZIP_LOCAL_HEADER.size))
        if signature != b"PK\x03\x04":
            raise TracekitError(f"{name}: corrupt zip entry; save the file again")
        start = info.header_offset + _ZIP_LOCAL_HEADER.size + name_length + extra_length
        f.seek(0, 2)
        return _located(path, f, start, min(info.file_size, f.tell() - start), name)
    with archive.open(info) as member:
        dtype, shape, order = _header(member, info.file_size, name)
        head = rows is not None and order == "C" and len(shape) > 0 and shape[0] > rows
        wanted = (rows if head else 1) * math.prod(shape[1:] if head else shape) * dtype.itemsize
        if wanted > MAX_COMPRESSED_BYTES:
            raise TracekitError(
                f"{name} is compressed and {wanted / 2**20:.0f} MiB of it would be decompressed into memory "
                f"(limit {MAX_COMPRESSED_BYTES // 2**20} MiB); save the arrays uncompressed with np.savez (not "
                "np.savez_compressed), or as .npy files in a folder (np.save), so that they are memory-mapped"
            )
        data = member.read(wanted)
        if len(data) != wanted:
            raise TracekitError(
                f"{name}: the compressed data end early; the file is truncated or corrupt, save it again"
            )
        if head:
            return Head(np.frombuffer(data, dtype).reshape((rows, *shape[1:])), shape)
        return np.frombuffer(data, dtype).reshape(shape, order=order)


def _located(path: Path, f: IO[bytes], start: int, size: int, name: str) -> NpyData:
    """The `.npy` array whose `size` bytes start at `start` in the file `path` (open as `f`)."""
    f.seek(start)
    dtype, shape, order = _header(f, size, name)
    return NpyData(path, f.tell(), dtype, shape, order)


def _header(f: IO[bytes], size: int, name: str) -> tuple[np.dtype, tuple[int, ...], str]:
    """dtype, shape and order of the `.npy` header at `f`'s position, for an array of `size` bytes
    in all (header included); leaves `f` at the start of the data."""
    start = f.tell()
    try:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"format version {version[0]}.{version[1]} is not supported")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(f)
    except (ValueError, OSError, EOFError) as exc:
        raise TracekitError(f"{name}: not a readable .npy array ({exc})") from None
    if dtype.hasobject:
        raise TracekitError(f"{name}: holds Python objects (a pickled array); store numbers or strings")
    data_bytes = math.prod(shape) * dtype.itemsize
    held = size - (f.tell() - start)
    if data_bytes != held:
        raise TracekitError(
            f"{name}: its header declares {dtype} of shape {list(shape)} ({data_bytes} bytes) but the file "
            f"holds {held} bytes of data; the file is truncated or corrupt, save it again"
        )
    return dtype, tuple(shape), "F" if fortran_order else "C"
