"""The augmentation settings of the augmentation-subsampling paper, per data set.

Kuchnik & Smith (ICLR 2019), deterministic copies per image:

=========  ========================  ===============================  ==================
data set   translate                 rotate                           crop
=========  ========================  ===============================  ==================
mnist      +-2 px, 4 diagonals       linspace(-30, 30, 15) w/o 0: 14  1..6 px: 6
cifar10    +-3 px, 4 diagonals       linspace(-5, 5, 4): 4            2 px: 1
smallnorb  +-6 px, 4 diagonals       as cifar10: 4                    as cifar10: 1
digits     +-1 px, 4 diagonals       linspace(-15, 15, 5) w/o 0: 4    1 px: 1
=========  ========================  ===============================  ==================

``digits`` (8 x 8 images) is not in the paper; its values are ours, scaled down from
MNIST's 28 x 28 (a 1 px shift of 8 px is about MNIST's 2-3 px of 28; +-15 degrees keeps
the 8 x 8 digits legible; 1 px crop is 1/8 of the side as 3 px is for MNIST).
``cifar10`` also has ``flip`` (left-right mirror), which the paper does not use.
"""

from __future__ import annotations

from collections.abc import Callable

from leanaug.augment.base import Augmentation
from leanaug.augment.geometric import Crop, Flip, Rotate, Translate
from leanaug.errors import UnknownNameError

PRESETS: dict[str, dict[str, Callable[[], Augmentation]]] = {
    "mnist": {
        "translate": lambda: Translate(max_shift=2),
        "rotate": lambda: Rotate(max_angle=30.0, n_angles=15),
        "crop": lambda: Crop(max_crop=6),
    },
    "cifar10": {
        "translate": lambda: Translate(max_shift=3),
        "rotate": lambda: Rotate(max_angle=5.0, n_angles=4),
        "crop": lambda: Crop(max_crop=2, sizes=(2,)),
        "flip": lambda: Flip(),
    },
    "smallnorb": {
        "translate": lambda: Translate(max_shift=6),
        "rotate": lambda: Rotate(max_angle=5.0, n_angles=4),
        "crop": lambda: Crop(max_crop=2, sizes=(2,)),
    },
    "digits": {
        "translate": lambda: Translate(max_shift=1),
        "rotate": lambda: Rotate(max_angle=15.0, n_angles=5),
        "crop": lambda: Crop(max_crop=1),
    },
}


def preset_names(dataset: str) -> list[str]:
    """The augmentation presets of ``dataset``."""
    if dataset not in PRESETS:
        raise UnknownNameError(
            f"no augmentation presets for data set {dataset!r}; valid data sets: {', '.join(sorted(PRESETS))}"
        )
    return sorted(PRESETS[dataset])


def preset(dataset: str, name: str) -> Augmentation:
    """A fresh instance of the paper's ``name`` augmentation for ``dataset``."""
    names = preset_names(dataset)
    if name not in PRESETS[dataset]:
        raise UnknownNameError(
            f"unknown augmentation preset {name!r} for {dataset}; valid presets: {', '.join(names)}"
        )
    return PRESETS[dataset][name]()
