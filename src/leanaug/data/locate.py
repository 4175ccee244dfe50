"""Finding a data set's files in ``--data-dir`` or in the download folder."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from leanaug.errors import DataError
from leanaug.paths import data_root


def user_dir(data_dir: str | os.PathLike[str]) -> Path:
    """``data_dir`` as a Path, or a DataError when it is not an existing folder."""
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise DataError(f"data directory {path} does not exist")
    if not path.is_dir():
        raise DataError(f"data directory {path} is not a directory")
    return path


def search(
    data_dir: Path, subdirs: Sequence[str], matches: Callable[[Path], object]
) -> object | None:
    """The first non-empty ``matches(folder)`` over ``data_dir`` and its named subfolders.

    The subfolders let one ``--data-dir`` hold several data sets side by side (e.g.
    ``../shared/data`` with ``mnist/`` and ``cifar10-jpg/``).
    """
    for folder in (data_dir, *(data_dir / s for s in subdirs)):
        if folder.is_dir():
            found = matches(folder)
            if found:
                return found
    return None


def download_dir(name: str) -> Path:
    """Where downloads of data set ``name`` land: ``data_root()/name``."""
    return data_root() / name
