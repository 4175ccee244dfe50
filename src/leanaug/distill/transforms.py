"""Train-time augmentations by name, for training fresh networks on a (real) subset.

:data:`TRAIN_AUGMENTATIONS` maps a name to a factory that builds a per-batch transform
``transform(x, y, index, generator) -> x'`` (the hook of
:func:`leanaug.distill.augment_training.train_on_augmented` and
:func:`leanaug.distill.evaluate.evaluate_images`), or ``None`` for no augmentation:

``none``
    no augmentation (the plain baseline).
``dsa``
    DSA with the experts' settings (``config.json``'s ``training.dsa``; the reference
    strategy ``color_crop_cutout_flip_scale_rotate`` when the experts had none).
``dsa-noflip``
    the same DSA without its ``flip`` group (for digits, where a mirror image is another
    glyph).
``trivialaugment``, ``randaugment``
    kornia's TrivialAugment / RandAugment (n=2, m=10) on the images in ``[0, 1]`` units
    (the preprocessing is undone and redone around them).

:func:`train_transform` puts a frozen phi (fresh noise every batch) in front of the named
augmentation: ``train_transform("dsa", phi=phi, ...)`` is the "phi + DSA" condition.
``benchmarks/augdistill.py`` and ``leanaug evaluate PHI_DIR`` both build their transforms
here. Unknown names raise an error that lists the valid ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from leanaug.distill.augment_training import (
    Compose,
    DSATransform,
    KorniaAutoTransform,
    PhiTransform,
    Transform,
)
from leanaug.distill.augnet import AugNet
from leanaug.distill.dsa import DEFAULT_STRATEGY, DSA
from leanaug.errors import LeanaugError
from leanaug.registry import Registry

#: ``factory(dsa_config=..., preprocessor=...) -> Transform | None``
TrainAugmentationFactory = Callable[..., Transform | None]
TRAIN_AUGMENTATIONS: Registry[TrainAugmentationFactory] = Registry("train-time augmentation")


def _dsa(dsa_config: dict[str, Any] | None) -> DSA:
    """DSA of the experts' config (its strategy and ranges), else the reference strategy."""
    if dsa_config and dsa_config.get("strategy") not in (None, "", "none", "None"):
        return DSA(**dsa_config)
    return DSA(DEFAULT_STRATEGY)


@TRAIN_AUGMENTATIONS.register("none")
def _none(dsa_config: dict[str, Any] | None = None, preprocessor: Any = None) -> None:
    return None


@TRAIN_AUGMENTATIONS.register("dsa")
def _dsa_factory(dsa_config: dict[str, Any] | None = None, preprocessor: Any = None) -> Transform:
    return DSATransform(_dsa(dsa_config))


@TRAIN_AUGMENTATIONS.register("dsa-noflip")
def _dsa_noflip(dsa_config: dict[str, Any] | None = None, preprocessor: Any = None) -> Transform:
    dsa = _dsa(dsa_config)
    strategy = "_".join(g for g in dsa.groups if g != "flip")
    if not strategy:
        raise LeanaugError(f"dsa-noflip: the DSA strategy {dsa.strategy!r} is only a flip")
    return DSATransform(DSA(**{**dsa.config(), "strategy": strategy}))


def _kornia(name: str) -> TrainAugmentationFactory:
    def factory(dsa_config: dict[str, Any] | None = None, preprocessor: Any = None) -> Transform:
        if preprocessor is None:
            raise LeanaugError(f"{name} needs the preprocessor (it works on [0, 1] images)")
        return KorniaAutoTransform(name, preprocessor)

    return factory


TRAIN_AUGMENTATIONS.register("trivialaugment")(_kornia("trivialaugment"))
TRAIN_AUGMENTATIONS.register("randaugment")(_kornia("randaugment"))


def build_train_augmentation(
    name: str, *, dsa_config: dict[str, Any] | None = None, preprocessor: Any = None
) -> Transform | None:
    """The transform registered as ``name`` (``None`` for ``"none"``).

    ``dsa_config`` is the experts' ``training.dsa`` entry (DSA keyword arguments, or
    ``None``); ``preprocessor`` the experts' :class:`~leanaug.distill.preprocess.Preprocessor`
    (needed by the kornia policies).
    """
    return TRAIN_AUGMENTATIONS.get(name)(dsa_config=dsa_config, preprocessor=preprocessor)


def train_transform(
    augment: str = "none",
    *,
    phi: AugNet | None = None,
    dsa_config: dict[str, Any] | None = None,
    preprocessor: Any = None,
) -> Transform | None:
    """``phi`` (frozen, fresh noise per batch; optional) followed by the augmentation
    ``augment``; ``None`` when there is neither.

    Examples
    --------
    >>> from leanaug.distill.augnet import build_phi
    >>> phi = build_phi("residual", 1, (8, 8), 10)
    >>> t = train_transform("dsa", phi=phi)  # phi, then DSA (the reference strategy)
    >>> import torch
    >>> x = torch.rand(4, 1, 8, 8)
    >>> t(x, torch.zeros(4).long(), torch.arange(4), torch.Generator()).shape
    torch.Size([4, 1, 8, 8])
    >>> train_transform("none") is None
    True
    """
    named = build_train_augmentation(augment, dsa_config=dsa_config, preprocessor=preprocessor)
    if phi is None and named is None:
        return None
    return TrainTransform(augment, named, phi)


class TrainTransform:
    """phi (optional) then a named augmentation, with a ``config()`` describing both (what
    :func:`leanaug.distill.evaluate.evaluate_images` records); the draws are those of
    ``Compose(PhiTransform(phi), augmentation)``."""

    def __init__(self, augment: str, augmentation: Transform | None, phi: AugNet | None) -> None:
        self.augment = augment
        self.phi = phi
        self.augmentation = augmentation
        phi_t = PhiTransform(phi) if phi is not None else None
        self._compose = Compose(phi_t, augmentation)

    def __call__(self, x, y, index, generator):
        return self._compose(x, y, index, generator)

    def config(self) -> dict[str, Any]:
        aug = self.augmentation
        return {
            "augment": self.augment,
            "dsa": aug.dsa.config() if isinstance(aug, DSATransform) else None,
            "phi": self.phi.config() if self.phi is not None else None,
        }
