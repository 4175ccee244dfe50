"""Choosing classes and a training subset of a loaded data set."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from leanaug.data.base import ImageDataset
from leanaug.errors import DataError
from leanaug.seeding import numpy_rng

SUBSETS = ("random", "first")


def resolve_classes(ds: ImageDataset, classes: Sequence[str | int] | str) -> list[int]:
    """Class names or indices -> original label indices, in the given order.

    A string is matched against the class names first (case-insensitively), then read as
    an index; so MNIST's ``"3"`` is the class named "3" and CIFAR-10's ``"3"`` is "cat".
    A single string may also hold a comma-separated list (``"3,8"``).
    """
    if isinstance(classes, str):
        classes = [c.strip() for c in classes.split(",")]
    classes = list(classes)
    if not classes:
        raise DataError(
            f"{ds.name}: the class list is empty; give at least one of {', '.join(ds.class_names)}"
        )
    lowered = {name.lower(): i for i, name in enumerate(ds.class_names)}
    out: list[int] = []
    for item in classes:
        index: int | None = None
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            index = int(item)
        elif isinstance(item, str):
            key = item.strip().lower()
            if key in lowered:
                index = lowered[key]
            elif key.lstrip("-").isdigit():
                index = int(key)
        if index is None or not 0 <= index < ds.num_classes:
            raise DataError(
                f"{ds.name}: unknown class {item!r}; valid classes: {', '.join(ds.class_names)} "
                f"(or indices 0..{ds.num_classes - 1})"
            )
        if index in out:
            raise DataError(f"{ds.name}: class {item!r} ({ds.class_names[index]}) is listed twice")
        out.append(index)
    return out


def select_classes(ds: ImageDataset, classes: Sequence[str | int] | str) -> ImageDataset:
    """Keep only ``classes`` (train and test), relabelled 0..k-1 in the given order."""
    keep = resolve_classes(ds, classes)
    remap = np.full(ds.num_classes, -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    splits = {}
    rows = {}
    for split in ("train", "test"):
        labels = getattr(ds, f"{split}_labels")
        rows[split] = np.flatnonzero(remap[labels] >= 0)
        splits[f"{split}_images"] = getattr(ds, f"{split}_images")[rows[split]]
        splits[f"{split}_labels"] = remap[labels[rows[split]]]
    base = ds.meta.get("train_indices")
    train_indices = rows["train"] if base is None else np.asarray(base)[rows["train"]]
    return replace(
        ds,
        **splits,
        class_names=tuple(ds.class_names[i] for i in keep),
        meta={**ds.meta, "class_indices": keep, "train_indices": train_indices},
    )


def subset_train(
    ds: ImageDataset, n_train: int, subset: str = "random", seed: int = 0
) -> ImageDataset:
    """Keep ``n_train`` training images: a seeded random subset or the first ones.

    ``"first"`` takes the first ``n_train`` in file order (what the augmentation
    subsampling paper did); ``"random"`` draws without replacement with a seed derived
    from ``(seed, "subset", name)`` and keeps the drawn images in file order.
    """
    if subset not in SUBSETS:
        raise DataError(f"unknown subset {subset!r}; valid: {', '.join(SUBSETS)}")
    n_total = len(ds.train_labels)
    if isinstance(n_train, bool) or not isinstance(n_train, (int, np.integer)) or n_train < 1:
        raise DataError(f"n_train must be a positive integer, got {n_train!r}")
    if n_train > n_total:
        raise DataError(
            f"n_train={n_train} is larger than the {n_total} training images of {ds.name} ({', '.join(ds.class_names)})"
        )
    if subset == "first":
        rows = np.arange(n_train)
    else:
        rows = np.sort(
            numpy_rng(seed, "subset", ds.name).choice(n_total, size=n_train, replace=False)
        )
    base = ds.meta.get("train_indices")
    return replace(
        ds,
        train_images=ds.train_images[rows],
        train_labels=ds.train_labels[rows],
        meta={
            **ds.meta,
            "train_indices": rows if base is None else np.asarray(base)[rows],
            "subset": subset,
            "seed": seed,
        },
    )
