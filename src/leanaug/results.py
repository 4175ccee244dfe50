"""Atomic result files: write to a temporary file in the same folder, then rename.

An interrupted run therefore leaves either the old file or the new one, never half of
one. ``os.replace`` is atomic on POSIX when source and target share a file system,
which a sibling temp file guarantees.

This module is also the one error path for output locations, used by every writing
command: :func:`output_dir` / :func:`output_file` (a file where a folder should be, a
folder that cannot be created or written), the writers (an ``OSError`` while writing),
and the readers of files a run wrote earlier (:func:`read_parquet`, :func:`read_json`,
:func:`reading`: a torn or corrupt file names itself and says what to do). All raise
:class:`~leanaug.errors.LeanaugError` subclasses: one line, exit 2 at the CLI.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from safetensors import SafetensorError

from leanaug.errors import DamagedFileError, LeanaugError, OutputError

#: What to do about a damaged file, when the caller has nothing more specific.
DAMAGED_HINT = (
    "start again in a fresh output folder, or delete the file if the command can redo what it held"
)


def _reason(exc: BaseException) -> str:
    """An OS error as one short line: its strerror ("Permission denied") if any."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__


def _file_ancestor(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` (or ``path``) that is not a folder."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def output_dir(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """Create (when missing) and check an output folder; :class:`OutputError` when ``path``
    is a file, sits under a file, or cannot be created or written."""
    folder = Path(path)
    blocker = _file_ancestor(folder)
    if blocker == folder:
        raise OutputError(
            f"{option} {folder} is a file, not a folder: give a folder path (it is created "
            "when missing), or move the file away"
        )
    if blocker is not None:
        raise OutputError(f"{option} {folder}: cannot create the folder, {blocker} is a file")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"{option} {folder}: cannot create the folder ({_reason(exc)}); choose another "
            "folder or fix the permissions"
        ) from None
    try:  # the only portable test of writability (os.access ignores ACLs, read-only mounts)
        fd, probe = tempfile.mkstemp(prefix=".leanaug-write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(
            f"{option} {folder} is not writable ({_reason(exc)}); choose another folder or "
            "fix its permissions"
        ) from None
    return folder


def output_file(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """Check an output file path: not a folder, its folder created and writable."""
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"{option} {target} is a folder, expected a file path")
    blocker = _file_ancestor(target.parent)
    if blocker is not None:
        raise OutputError(f"{option} {target}: cannot create its folder, {blocker} is a file")
    output_dir(target.parent, option=f"{option} {target}: folder")
    return target


@contextmanager
def _writing(target: Path) -> Iterator[None]:
    try:
        yield
    except LeanaugError:
        raise
    except OSError as exc:
        raise OutputError(f"cannot write {target} ({_reason(exc)})") from None


@contextmanager
def reading(path: str | os.PathLike[str], what: str, hint: str = DAMAGED_HINT) -> Iterator[None]:
    """Turn a failure to read back a file a run wrote (``what``: "parquet table", ...)
    into :class:`DamagedFileError` naming the file and what to do."""
    try:
        yield
    except (LeanaugError, FileNotFoundError):
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, SafetensorError) as exc:
        # pyarrow's ArrowInvalid / ArrowIOError are ValueError / OSError subclasses
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise DamagedFileError(
            f"{path} is damaged (not a readable {what}: {detail}); {hint}"
        ) from None


def _umask_mode() -> int:
    # mkstemp creates files 0600; give results the mode a plain open() would.
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success."""
    target = Path(path)
    with _writing(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        with _writing(target):
            yield tmp_path
            os.chmod(tmp_path, _umask_mode())
            os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")
    return Path(path)


def read_json(path: str | os.PathLike[str], hint: str = DAMAGED_HINT) -> Any:
    with reading(path, "JSON file", hint):
        return json.loads(Path(path).read_text())


def write_parquet(path: str | os.PathLike[str], frame: pd.DataFrame) -> Path:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return Path(path)


def read_parquet(path: str | os.PathLike[str], hint: str = DAMAGED_HINT) -> pd.DataFrame:
    with reading(path, "parquet table", hint):
        return pd.read_parquet(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_with(path: str | os.PathLike[str], writer: Callable[[Path], None]) -> Path:
    """Atomically write with any library's ``save(path)`` (safetensors, savefig, np.save).

    The temp file keeps the target's suffix so writers that infer format from it work.
    """
    target = Path(path)
    with _writing(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{target.stem}.", suffix=target.suffix, dir=target.parent
        )
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        with _writing(target):
            writer(tmp_path)
            os.chmod(tmp_path, _umask_mode())
            os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return target
