"""Downloads with a progress bar, mirrors and md5 checks.

A file is streamed into a temporary file beside its target and renamed onto it only
after its md5 matched, so an interrupted or corrupt download never leaves a file that
looks finished. ``urllib`` is used (no extra dependency); it also understands
``file://`` URLs, which the tests use to fake a download.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from rich.progress import (
    BarColumn,
    DownloadColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from leanaug.errors import DataError
from leanaug.progress import Progress

CHUNK = 1 << 20
TIMEOUT_S = 60


def md5_file(path: str | os.PathLike[str]) -> str:
    """The md5 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def one_line(exc: BaseException) -> str:
    """An exception's message squeezed onto one line (user errors are one line)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _fetch(url: str, tmp: Path, description: str) -> str:
    """Stream ``url`` into ``tmp``; return the md5 of what was written."""
    digest = hashlib.md5()
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:  # noqa: S310 - fixed https/file URLs
        total = response.headers.get("Content-Length")
        with (
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                transient=True,
            ) as progress,
            open(tmp, "wb") as out,
        ):
            task = progress.add_task(description, total=int(total) if total else None)
            while chunk := response.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                progress.advance(task, len(chunk))
    return digest.hexdigest()


def download(urls: Sequence[str], dest: str | os.PathLike[str], md5: str | None) -> Path:
    """Download ``dest`` from the first of ``urls`` that works and has the right md5.

    Mirrors are tried in order; a network error or a checksum mismatch moves on to the
    next one. A download whose md5 differs from ``md5`` is deleted. When every mirror
    fails, :class:`DataError` says what happened at each (one line).
    """
    target = Path(dest)
    target.parent.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    mismatch = False
    for url in urls:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
        os.close(fd)
        tmp = Path(name)
        try:
            got = _fetch(url, tmp, f"downloading {target.name}")
            if md5 is not None and got != md5:
                mismatch = True
                failures.append(f"{url}: md5 {got}, expected {md5} (bad download deleted)")
                continue
            os.replace(tmp, target)
            return target
        except (urllib.error.URLError, OSError, ValueError) as exc:
            failures.append(f"{url}: {one_line(exc)}")
        finally:
            if tmp.exists():
                tmp.unlink()
    what = "checksum mismatch" if mismatch else "download failed"
    raise DataError(f"{what} for {target.name} into {target.parent}: " + "; ".join(failures))
