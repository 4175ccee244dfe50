"""Augmentations (registry :data:`AUGMENTATIONS`) and the paper's presets.

>>> from leanaug.augment import preset, to_float
>>> aug = preset("mnist", "translate")
>>> aug.n_copies
4
"""

from leanaug.augment.base import AUGMENTATIONS, Augmentation, check_batch, to_float, to_uint8
from leanaug.augment.geometric import Crop, Flip, Rotate, Translate
from leanaug.augment.presets import PRESETS, preset, preset_names

__all__ = [
    "AUGMENTATIONS",
    "PRESETS",
    "Augmentation",
    "Crop",
    "Flip",
    "Rotate",
    "Translate",
    "check_batch",
    "preset",
    "preset_names",
    "to_float",
    "to_uint8",
]
