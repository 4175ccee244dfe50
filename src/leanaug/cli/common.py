"""Options and parsing shared by the command groups.

Use the ``Annotated`` option types in a command's signature so every command spells
``--data-dir``, ``--classes``, ``--n-train``, ``--subset`` and ``--seed`` the same way,
and :func:`load_from_options` to turn them into an :class:`ImageDataset`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from leanaug.data import ImageDataset, load_dataset
from leanaug.errors import LeanaugError

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Folder with the data set's files (or a parent holding e.g. mnist/, cifar10-jpg/). "
        "Default: $LEANAUG_DATA/<name>, downloaded when missing.",
    ),
]
ClassesOption = Annotated[
    str | None,
    typer.Option(
        "--classes", help="Comma-separated class names or indices, e.g. 3,8 or airplane,automobile."
    ),
]
NTrainOption = Annotated[
    int | None, typer.Option("--n-train", help="Keep this many training images (after --classes).")
]
SubsetOption = Annotated[
    str,
    typer.Option(
        "--subset", help="How --n-train picks images: random (seeded) or first (file order)."
    ),
]
SeedOption = Annotated[
    int, typer.Option("--seed", help="Seed for the random training subset and draws.")
]
NoDownloadOption = Annotated[
    bool, typer.Option("--no-download", help="Never download; fail when the files are not found.")
]


def parse_classes(text: str | None) -> list[str] | None:
    """``"3,8"`` -> ``["3", "8"]``; ``None`` -> ``None`` (all classes).

    Entries stay strings: :func:`leanaug.data.resolve_classes` matches names first and
    indices second, so ``3`` means MNIST's digit 3 and CIFAR-10's cat.
    """
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise LeanaugError(
            f"--classes {text!r}: expected comma-separated class names or indices, e.g. 3,8"
        )
    return parts


def parse_int_list(text: str, option: str) -> list[int]:
    """``"1,10,50"`` -> ``[1, 10, 50]``, with one clear error naming ``option``."""
    try:
        values = [int(p) for p in text.split(",")]
    except ValueError:
        raise LeanaugError(
            f"{option} {text!r}: expected comma-separated integers, e.g. 1,10,50"
        ) from None
    return values


def load_from_options(
    name: str,
    data_dir: Path | None = None,
    classes: str | None = None,
    n_train: int | None = None,
    subset: str = "random",
    seed: int = 0,
    no_download: bool = False,
) -> ImageDataset:
    """:func:`load_dataset` from the raw values of the shared options."""
    return load_dataset(
        name,
        data_dir=data_dir,
        classes=parse_classes(classes),
        n_train=n_train,
        subset=subset,
        seed=seed,
        download=not no_download,
    )
