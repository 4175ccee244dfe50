"""Readers for the on-disk formats of the data sets.

Each reader validates the structure it expects (magic numbers, dimensions, exact byte
length) and raises :class:`DataError` naming the file and what was expected, so a
truncated download or a wrong file is caught here rather than as a reshape error.

The IDX and NORB binary-matrix readers are written by hand on ``numpy.frombuffer``:
both formats are a short integer header followed by raw arrays, and no maintained
library we depend on reads them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

from leanaug.data.download import one_line
from leanaug.errors import DataError
from leanaug.progress import Progress

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def read_bytes(path: Path) -> bytes:
    """A file's bytes, decompressed when its name ends in ``.gz``."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {one_line(exc)}") from exc
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(
            f"{path} is not a complete gzip file (truncated or corrupt download?): {one_line(exc)}"
        ) from exc


# --- IDX (MNIST) -------------------------------------------------------------------

# IDX header: two zero bytes, a type code, the number of dimensions, then one
# big-endian int32 per dimension. Only unsigned bytes (0x08) occur in MNIST.
_IDX_UINT8 = 0x08


def parse_idx(data: bytes, path: Path, ndim: int) -> np.ndarray:
    """Parse an IDX file's bytes (already decompressed) into a uint8 array."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(
            f"{path} is not an IDX file (expected magic 0x0000{_IDX_UINT8:02X}{ndim:02X}, got {data[:4].hex() or 'an empty file'})"
        )
    if data[2] != _IDX_UINT8 or data[3] != ndim:
        raise DataError(
            f"{path}: IDX magic 0x{data[:4].hex()} is not an unsigned-byte array with {ndim} dimensions (expected 0x0000{_IDX_UINT8:02X}{ndim:02X})"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"{path} is truncated: {len(data)} bytes, shorter than its {header}-byte IDX header"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "too long"
        raise DataError(
            f"{path} is {what}: {len(data)} bytes, expected {expected} for a {' x '.join(map(str, dims))} uint8 array"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx(path: Path, ndim: int, md5: str | None = None) -> np.ndarray:
    """Read an IDX file (``.gz`` or not); check the decompressed md5 when one is given."""
    data = read_bytes(path)
    array = parse_idx(data, path, ndim)
    if md5 is not None:
        got = hashlib.md5(data).hexdigest()
        if got != md5:
            raise DataError(
                f"{path}: decompressed md5 {got} differs from the official file's {md5}"
            )
    return array


# --- NORB binary matrix (smallNORB) -------------------------------------------------

# Header (little-endian int32s): magic, ndim, then max(3, ndim) dimensions.
NORB_MAGIC = {0x1E3D4C55: np.dtype("<u1"), 0x1E3D4C54: np.dtype("<i4")}


def _open_maybe_gz(path: Path):
    try:
        return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {one_line(exc)}") from exc


def _read_exact(f: io.BufferedIOBase, n: int, path: Path, what: str) -> bytes:
    try:
        data = f.read(n)
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(
            f"{path} is not a complete gzip file (truncated or corrupt download?): {one_line(exc)}"
        ) from exc
    if len(data) != n:
        raise DataError(f"{path} is truncated: it ends inside the {what}")
    return data


def read_norb_matrix(path: Path, *, first_of_axis1: bool = False, chunk: int = 1024) -> np.ndarray:
    """Read a NORB binary-matrix file (``.mat`` or ``.mat.gz``).

    ``first_of_axis1=True`` keeps only index 0 of the second axis while reading, e.g. the
    first image of each stereo pair of a ``N x 2 x 96 x 96`` file, without holding both.
    """
    with _open_maybe_gz(path) as f:
        head = _read_exact(f, 8, path, "header")
        magic, ndim = (int(v) for v in np.frombuffer(head, dtype="<i4"))
        if magic not in NORB_MAGIC:
            valid = ", ".join(f"0x{m:08X}" for m in NORB_MAGIC)
            raise DataError(
                f"{path} is not a NORB binary matrix of uint8 or int32 (magic 0x{magic & 0xFFFFFFFF:08X}, expected one of {valid})"
            )
        if not 1 <= ndim <= 16:
            raise DataError(f"{path}: NORB header says {ndim} dimensions (expected 1 to 16)")
        dims_raw = np.frombuffer(_read_exact(f, 4 * max(3, ndim), path, "header"), dtype="<i4")
        dims = tuple(int(d) for d in dims_raw[:ndim])
        if any(d < 0 for d in dims):
            raise DataError(f"{path}: negative dimension in NORB header {dims}")
        dtype = NORB_MAGIC[magic]
        if first_of_axis1 and ndim < 2:
            raise DataError(f"{path}: expected at least 2 dimensions, header says {dims}")
        shape_desc = " x ".join(map(str, dims))
        if first_of_axis1:
            row = int(np.prod(dims[1:])) * dtype.itemsize
            out = np.empty((dims[0], *dims[2:]), dtype=dtype.newbyteorder("="))
            for start in range(0, dims[0], chunk):
                n = min(chunk, dims[0] - start)
                block = _read_exact(f, n * row, path, f"data (expected {shape_desc} {dtype.name})")
                out[start : start + n] = np.frombuffer(block, dtype=dtype).reshape(n, *dims[1:])[
                    :, 0
                ]
        else:
            size = int(np.prod(dims)) * dtype.itemsize
            block = _read_exact(f, size, path, f"data (expected {shape_desc} {dtype.name})")
            out = np.frombuffer(block, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))
        try:
            extra = f.read(1)
        except (EOFError, OSError, zlib.error) as exc:
            raise DataError(
                f"{path} is not a complete gzip file (truncated or corrupt download?): {one_line(exc)}"
            ) from exc
        if extra:
            raise DataError(
                f"{path} is too long: data continues after the {shape_desc} {dtype.name} array its header announces"
            )
    return out


# --- CIFAR-10 python batches ----------------------------------------------------------

CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_BATCH = "test_batch"


def parse_cifar_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled CIFAR-10 batch -> (uint8 N x 3 x 32 x 32, int64 N).

    The official python release is a pickle; unpickling runs code from the file, so only
    read copies from the official source (downloads are md5-checked).
    """
    try:
        batch = pickle.loads(raw, encoding="bytes")  # noqa: S301 - official CIFAR-10 format
        data = np.asarray(batch[b"data"])
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as exc:  # any unpickling failure means "not a CIFAR batch"
        raise DataError(f"{where} is not a CIFAR-10 python batch: {one_line(exc)}") from exc
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{where}: expected uint8 data of N x 3072, got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],) or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise DataError(f"{where}: expected {data.shape[0]} labels in 0..9")
    return data.reshape(-1, 3, 32, 32), labels


def _concat(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def read_cifar_batches_dir(
    folder: Path,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``data_batch_1..5`` and ``test_batch`` from an extracted ``cifar-10-batches-py``."""
    for name in (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH):
        if not (folder / name).is_file():
            raise DataError(
                f"{folder} has no {name} (expected the extracted cifar-10-batches-py folder)"
            )
    train = _concat(
        [parse_cifar_batch(read_bytes(folder / n), str(folder / n)) for n in CIFAR_TRAIN_BATCHES]
    )
    test = parse_cifar_batch(read_bytes(folder / CIFAR_TEST_BATCH), str(folder / CIFAR_TEST_BATCH))
    return train, test


def read_cifar_tarball(
    path: Path,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The batches straight out of ``cifar-10-python.tar.gz`` (members read in memory)."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH):
                    handle = tar.extractfile(member)
                    assert handle is not None
                    found[base] = handle.read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(
            f"{path} is not a complete CIFAR-10 tarball (truncated or corrupt download?): {one_line(exc)}"
        ) from exc
    missing = [n for n in (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH) if n not in found]
    if missing:
        raise DataError(f"{path} lacks {', '.join(missing)} (expected the CIFAR-10 python version)")
    train = _concat([parse_cifar_batch(found[n], f"{path}:{n}") for n in CIFAR_TRAIN_BATCHES])
    test = parse_cifar_batch(found[CIFAR_TEST_BATCH], f"{path}:{CIFAR_TEST_BATCH}")
    return train, test


# --- image folders ------------------------------------------------------------------


def list_image_folder(split_dir: Path) -> dict[str, list[str]]:
    """``{class name: sorted image files}`` for ``split_dir/<class>/*.{png,jpg,...}``.

    Paths are absolute strings built with ``os.scandir`` from the folder resolved once:
    60,000 ``Path`` objects (or ``resolve()`` calls) would cost seconds on every load.
    """
    if not split_dir.is_dir():
        raise DataError(
            f"image folder {split_dir} does not exist (expected <root>/{{train,test}}/<class>/*.png|jpg)"
        )
    root = str(split_dir.resolve())
    with os.scandir(root) as it:
        class_dirs = sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
    classes: dict[str, list[str]] = {}
    for name in class_dirs:
        folder = os.path.join(root, name)
        with os.scandir(folder) as it:
            files = sorted(
                e.name
                for e in it
                if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES
                and not e.name.startswith(".")
            )
        if not files:
            raise DataError(
                f"class folder {folder} has no images (expected *{'|*'.join(IMAGE_SUFFIXES)})"
            )
        classes[name] = [os.path.join(folder, f) for f in files]
    if not classes:
        raise DataError(
            f"image folder {split_dir} has no class folders (expected {split_dir}/<class>/*.png|jpg)"
        )
    return classes


def decode_images(
    files: Sequence[str | os.PathLike[str]], mode: str, description: str = "decoding images"
) -> np.ndarray:
    """Decode image files with PIL into uint8 ``N x C x H x W`` (all the same size).

    Single-threaded on purpose: tiny images decode in ~0.2 ms, where threads only add
    GIL contention (measured), and the result is cached anyway.
    """
    channels = {"L": 1, "RGB": 3}[mode]
    out: np.ndarray | None = None
    size: tuple[int, int] | None = None
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=len(files))
        for i, path in enumerate(files):
            try:
                with Image.open(path) as im:
                    array = np.asarray(im.convert(mode) if im.mode != mode else im)
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                raise DataError(f"cannot decode image {path}: {one_line(exc)}") from exc
            if out is None:
                size = array.shape[:2]
                out = np.empty((len(files), size[0], size[1], channels), dtype=np.uint8)
            if array.shape[:2] != size:
                raise DataError(
                    f"{path} is {array.shape[1]}x{array.shape[0]} pixels, expected {size[1]}x{size[0]} like {files[0]}"
                )
            out[i] = array.reshape(size[0], size[1], channels)
            if i % 1000 == 999:
                progress.advance(task, 1000)
    if out is None:
        raise DataError("no images to decode")
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))
