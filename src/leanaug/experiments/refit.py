"""How one training set is fitted and scored: the two protocols of ``subsample run``.

A *fitter* turns a :class:`~leanaug.policies.Selection` into the accuracies of the
classifier trained on the n clean training points plus the K augmented copies of each
selected point (rows and weights as :func:`~leanaug.policies.augmented_training_set`
builds them). The runner's baselines and units only call
``fitter.fit_and_score(selection)``; the protocol lives in the fitter:

``frozen-featurizer`` (:class:`~leanaug.experiments.runner.FrozenFitter`, the default)
    The featurizer is trained once on the clean points and frozen; every fit refits only
    the L2 logistic regression on the precomputed features (``features.npz``).
``featurizer-refit`` (:class:`RefitFitter`, ``--featurizer-refit``)
    The reference's MNIST protocol, where the CNN is part of the classifier pipeline: for
    every fit a fresh featurizer is trained from scratch on that fit's image rows (with
    the selection's sample weights), then it featurizes those rows and the clean and
    augmented test images, and the logistic regression is fitted on its features. One
    featurizer training per fit.

In both protocols the scores, and the features the policies look at, come from the
no-augmentation fit: the featurizer trained on the clean points (``features.npz``). Every
refit featurizer is built from the same configuration and seed, so it starts from the
same initialisation and batch-order seed (common random numbers); the same rows give the
same net, so budget = n reproduces the full-augmentation baseline exactly, and the
no-augmentation fit is the frozen featurizer's net.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from leanaug.classifier import LogisticClassifier
from leanaug.errors import LeanaugError

if TYPE_CHECKING:
    from leanaug.augment.base import Augmentation
    from leanaug.experiments.config import SubsampleConfig
    from leanaug.features.base import Featurizer
    from leanaug.features.trained import TrainedNetFeaturizer
    from leanaug.policies import Selection

PROTOCOL_FROZEN = "frozen-featurizer"
PROTOCOL_REFIT = "featurizer-refit"
#: What ``baselines.json``'s ``protocol`` value means, in the words the CLI prints.
PROTOCOL_TEXT = {
    PROTOCOL_FROZEN: "frozen featurizer",
    PROTOCOL_REFIT: "featurizer retrained for every fit (the reference's MNIST protocol)",
}


@dataclass(frozen=True)
class FitScore:
    """The accuracies of one fit on the clean and the augmented test set, and its number
    of training rows. ``classifier``: the fitted logistic regression (on the frozen
    features, or on that fit's own featurizer's features)."""

    accuracy: float
    accuracy_augmented_test: float
    n_rows: int
    classifier: LogisticClassifier | None = field(default=None, compare=False, repr=False)

    def as_baseline(self) -> dict[str, Any]:
        """The ``baselines.json`` entry: accuracy, accuracy_augmented_test, n_train_rows."""
        return {
            "accuracy": self.accuracy,
            "accuracy_augmented_test": self.accuracy_augmented_test,
            "n_train_rows": int(self.n_rows),
        }


class Fitter(Protocol):
    """Fits the classifier of one selection and scores it (see the module doc)."""

    #: :data:`PROTOCOL_FROZEN` or :data:`PROTOCOL_REFIT`
    protocol: str
    #: True when every fit trains a network (the executor may then reserve a GPU per task)
    trains_networks: bool

    def fit_and_score(self, selection: Selection) -> FitScore: ...


def check_refit_featurizer(name: str, params: dict[str, Any]) -> None:
    """A one-line :class:`LeanaugError` unless featurizer ``name`` with ``params`` can be
    retrained on every fit's rows: a trained network (``smallcnn``, ``resnet``), not
    loaded from a ``weights`` file nor pretrained on another data set.

    Examples
    --------
    >>> check_refit_featurizer("smallcnn", {"epochs": 2})
    >>> check_refit_featurizer("pixels", {})
    Traceback (most recent call last):
    ...
    leanaug.errors.LeanaugError: --featurizer-refit retrains the featurizer for every fit, but 'pixels' is not a trained network (use resnet or smallcnn)
    """
    from leanaug.features import FEATURIZERS
    from leanaug.features.trained import TrainedNetFeaturizer

    if not issubclass(FEATURIZERS.get(name), TrainedNetFeaturizer):
        trained = [
            n for n in FEATURIZERS.names() if issubclass(FEATURIZERS.get(n), TrainedNetFeaturizer)
        ]
        raise LeanaugError(
            f"--featurizer-refit retrains the featurizer for every fit, but {name!r} is not a "
            f"trained network (use {' or '.join(trained)})"
        )
    obstacle = FEATURIZERS.create(name, dict(params)).refit_obstacle()
    if obstacle is not None:
        raise LeanaugError(
            f"--featurizer-refit retrains the featurizer on every fit's rows, but {obstacle}"
        )


def featurize_copies(
    featurizer: Featurizer,
    aug: Augmentation,
    images: np.ndarray,
    chunk: int = 512,
    advance: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Features ``(N, K, d)`` of the K deterministic copies of each image, made and
    featurized ``chunk`` images at a time (the copies are never all in memory);
    ``advance(b)`` is called after each chunk of ``b`` images."""
    from leanaug.augment import to_float

    out = []
    for start in range(0, images.shape[0], chunk):
        copies = aug.copies(to_float(images[start : start + chunk]))  # (b, K, C, H, W)
        b, k = copies.shape[:2]
        out.append(featurizer.transform(copies.reshape(b * k, *copies.shape[2:])).reshape(b, k, -1))
        if advance is not None:
            advance(b)
    return np.concatenate(out) if out else np.zeros((0, aug.n_copies, 0), dtype=np.float32)


@dataclass
class RefitImages:
    """The images a refit needs: uint8 training and test images with their labels, and
    the augmentation preset that regenerates their deterministic copies."""

    train_images: np.ndarray  # uint8 (n, C, H, W)
    train_labels: np.ndarray  # (n,)
    test_images: np.ndarray  # uint8 (m, C, H, W)
    test_labels: np.ndarray  # (m,)
    augmentation: Augmentation

    @classmethod
    def load(
        cls, config: SubsampleConfig, train_images: np.ndarray, train_labels: np.ndarray
    ) -> RefitImages:
        """The data set of ``config`` again (decoded arrays come from the data cache); its
        training images must be the ones ``features.npz`` was computed from."""
        from leanaug.augment import preset
        from leanaug.experiments.config import load_config_data

        ds = load_config_data(config)
        same = np.array_equal(ds.train_images, train_images) and np.array_equal(
            ds.train_labels, train_labels
        )
        if not same:
            raise LeanaugError(
                f"the training images of {config.dataset} differ from those features.npz in "
                f"{config.out} was computed from; rerun with --overwrite"
            )
        return cls(
            ds.train_images,
            np.asarray(ds.train_labels, dtype=np.int64),
            ds.test_images,
            np.asarray(ds.test_labels, dtype=np.int64),
            preset(config.dataset, config.augment),
        )


class RefitFitter:
    """The ``featurizer-refit`` protocol: a fresh featurizer trained on every fit's rows.

    Parameters
    ----------
    images : RefitImages
        Training and test images, labels and the augmentation preset.
    make_featurizer : callable
        Returns a fresh, unfitted :class:`~leanaug.features.trained.TrainedNetFeaturizer`
        (the run's, with ``cache=False``; the same seed every time).
    make_classifier : callable
        Returns an unfitted logistic regression (default ``LogisticClassifier()``).

    Examples
    --------
    >>> from functools import partial
    >>> from leanaug.augment import preset
    >>> from leanaug.data import load_dataset
    >>> from leanaug.features import SmallCNNFeaturizer
    >>> from leanaug.policies import Selection
    >>> ds = load_dataset("digits", classes=[3, 8])
    >>> images = RefitImages(ds.train_images, ds.train_labels, ds.test_images,
    ...                      ds.test_labels, preset("digits", "translate"))
    >>> make = partial(SmallCNNFeaturizer, epochs=1, batch_size=64, cache=False,
    ...                progress=False, device="cpu")
    >>> fit = RefitFitter(images, make).fit_and_score(Selection([5, 2]))
    >>> fit.n_rows  # 268 originals + 4 copies of 2 points
    276
    """

    protocol = PROTOCOL_REFIT
    trains_networks = True

    def __init__(
        self,
        images: RefitImages,
        make_featurizer: Callable[[], TrainedNetFeaturizer],
        make_classifier: Callable[[], LogisticClassifier] = LogisticClassifier,
    ) -> None:
        self.images = images
        self.make_featurizer = make_featurizer
        self.make_classifier = make_classifier

    def training_rows(self, selection: Selection) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(images, labels, weights)`` of ``selection``'s training set: float32 images in
        [0, 1], in exactly :func:`~leanaug.policies.augmented_training_set`'s row order
        and with its weights (it is asked for the order, on a problem whose "features" are
        row numbers)."""
        from leanaug.augment import to_float
        from leanaug.policies import SelectionProblem, augmented_training_set

        train = self.images.train_images
        n, K = train.shape[0], self.images.augmentation.n_copies
        numbered = SelectionProblem(
            features=np.arange(n, dtype=np.float64)[:, None],
            labels=self.images.train_labels,
            scores=np.zeros(n),
            augmented_features=(n + np.arange(n * K, dtype=np.float64)).reshape(n, K, 1),
        )
        ids, y, w = augmented_training_set(numbered, selection)
        ids = ids[:, 0].astype(np.intp)  # < n: an original; n + i * K + k: copy k of point i
        copy_ids = ids[ids >= n] - n
        points = np.unique(copy_ids // K)
        copies = np.zeros((0, K, *train.shape[1:]), dtype=np.float32)
        if points.size:
            copies = self.images.augmentation.copies(to_float(train[points])).numpy()
        pool = np.concatenate([to_float(train).numpy(), copies.reshape(-1, *train.shape[1:])])
        where = ids.copy()
        where[ids >= n] = n + np.searchsorted(points, copy_ids // K) * K + copy_ids % K
        return pool[where], y, w

    def fit_and_score(self, selection: Selection) -> FitScore:
        """Train a fresh featurizer on the selection's rows (sorted selection, weighted),
        fit the logistic regression on its features, score both test sets."""
        images, labels, weights = self.training_rows(selection.sorted())
        featurizer = self.make_featurizer()
        featurizer.fit(images, labels, sample_weight=weights)
        clf = self.make_classifier().fit(
            featurizer.transform(images), labels, sample_weight=weights
        )
        test = featurizer.transform(self.images.test_images)
        copies = featurize_copies(featurizer, self.images.augmentation, self.images.test_images)
        m, k, d = copies.shape
        test_aug = np.concatenate([test, copies.reshape(m * k, d)])
        labels_aug = np.concatenate(
            [self.images.test_labels, np.repeat(self.images.test_labels, k)]
        )
        return FitScore(
            clf.score(test, self.images.test_labels),
            clf.score(test_aug, labels_aug),
            int(labels.shape[0]),
            clf,
        )
