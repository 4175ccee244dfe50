"""A cache of decoded data sets under ``cache_root()/datasets/``.

Decoding 60,000 JPEGs takes seconds; reading four ``.npy`` files takes a fraction of
one. An entry is keyed by its source files (absolute path, size and modification time
of each) plus a format version, so editing, adding or removing a source file makes a
new entry instead of serving stale arrays. Arrays are plain uncompressed ``.npy``
(fastest to read); each file is written atomically and ``meta.json`` last, so an entry
without ``meta.json`` is unfinished and ignored.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np

from leanaug.data.base import ImageDataset
from leanaug.paths import cache_root
from leanaug.results import read_json, write_json, write_with

# Bump when a loader's output for the same source files changes.
CACHE_VERSION = 1
ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")


def cache_dir() -> Path:
    return cache_root() / "datasets"


def source_key(name: str, sources: Iterable[str | os.PathLike[str]]) -> str:
    """A hash of the source files' paths, sizes and modification times, in the given order.

    Loaders list their files in a fixed (sorted) order, so no sorting here; hashing
    line by line keeps 60,000 files at one ``stat`` each and little else.
    """
    digest = hashlib.sha256(f"{CACHE_VERSION}\0{name}\n".encode())
    for source in sources:
        path = os.path.abspath(source)  # no resolve(): symlink walks cost seconds per 60k files
        st = os.stat(path)
        digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def _read_entry(entry: Path, name: str) -> ImageDataset | None:
    meta_path = entry / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = read_json(meta_path)
        arrays = {key: np.load(entry / f"{key}.npy", allow_pickle=False) for key in ARRAYS}
        return ImageDataset(
            name=name,
            class_names=tuple(meta["class_names"]),
            source=meta["source"],
            meta={**meta["meta"], "cache": str(entry)},
            **arrays,
        )
    except (OSError, ValueError, KeyError) as exc:
        warnings.warn(f"ignoring unreadable cache entry {entry}: {exc}", stacklevel=3)
        return None


def _write_entry(entry: Path, ds: ImageDataset) -> bool:
    try:
        for key in ARRAYS:
            array = np.ascontiguousarray(getattr(ds, key))
            write_with(entry / f"{key}.npy", lambda p, a=array: np.save(p, a, allow_pickle=False))
        write_json(
            entry / "meta.json",
            {"class_names": list(ds.class_names), "source": ds.source, "meta": ds.meta},
        )
    except OSError as exc:  # a read-only or full cache must not stop the load itself
        warnings.warn(f"could not write data set cache {entry}: {exc}", stacklevel=3)
        return False
    return True


def cached(
    name: str,
    sources: Iterable[str | os.PathLike[str]],
    build: Callable[[], ImageDataset],
    *,
    enabled: bool = True,
) -> ImageDataset:
    """Return the cached arrays for these source files, or ``build()`` and cache them."""
    if not enabled:
        return build()
    entry = cache_dir() / f"{name}-{source_key(name, sources)}"
    hit = _read_entry(entry, name)
    if hit is not None:
        return hit
    ds = build()
    if _write_entry(entry, ds):
        ds = replace(ds, meta={**ds.meta, "cache": str(entry)})
    return ds
