"""The score registry, the score interface and the checks every score passes through."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from leanaug.classifier import LogisticClassifier, check_xy
from leanaug.errors import LeanaugError
from leanaug.registry import Registry

__all__ = ["SCORES", "Score", "ScoreFn", "check_scores", "score_function"]

SCORES: Registry[type[Score]] = Registry("score")

#: ``score_fn(clf, X, y, sample_weight) -> (n,)``, as used by re-scoring policies.
ScoreFn = Callable[[LogisticClassifier, np.ndarray, np.ndarray, "np.ndarray | None"], np.ndarray]


def check_scores(
    scores: np.ndarray, n: int, name: str = "score", signed: bool = False
) -> np.ndarray:
    """Scores as a float64 (n,) array, finite and (unless ``signed``) >= 0, else
    :class:`LeanaugError`."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (n,):
        raise LeanaugError(
            f"{name} must have shape ({n},), one value per training point, got {scores.shape}"
        )
    bad = ~np.isfinite(scores)
    if np.any(bad):
        where = np.flatnonzero(bad)
        raise LeanaugError(
            f"{name} has {where.size} NaN/infinite value(s) (first at index {int(where[0])}); "
            "check the features and the classifier's fit (C too large, diverged fit?)"
        )
    if not signed and np.any(scores < 0):
        where = np.flatnonzero(scores < 0)
        raise LeanaugError(
            f"{name} must be >= 0, got {scores[where[0]]!r} at index {int(where[0])}"
        )
    return scores


class Score:
    """One nonnegative importance value per training point (any sign where ``signed``).

    Subclasses set parameters in ``__init__`` and implement :meth:`_score`;
    :meth:`score` validates inputs and outputs.

    Examples
    --------
    >>> import numpy as np
    >>> class Ones(Score):
    ...     def _score(self, clf, X, y, sample_weight, rng):
    ...         return np.ones(len(X))
    >>> Ones().score(None, np.zeros((3, 2)), np.array([0, 1, 0])).tolist()
    [1.0, 1.0, 1.0]
    """

    name = "score"
    #: True when the score itself is random (draws from ``rng``), e.g. ``random``.
    stochastic = False
    #: True when the score has a sign (``influence-test``): policies use its magnitude
    #: unless they are asked to read the sign (``sign=helpful-first|skip-harmful``).
    signed = False

    def score(
        self,
        clf: LogisticClassifier,
        X: np.ndarray,
        y: np.ndarray,
        sample_weight: np.ndarray | None = None,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """Scores (n,) >= 0 for the training points (X, y) that ``clf`` was fitted on."""
        X, y, sample_weight = check_xy(X, y, sample_weight)
        s = self._score(clf, X, y, sample_weight, rng)
        return check_scores(s, X.shape[0], f"{self.name} score", signed=self.signed)

    def _score(
        self,
        clf: LogisticClassifier,
        X: np.ndarray,
        y: np.ndarray,
        sample_weight: np.ndarray | None,
        rng: np.random.Generator | None,
    ) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


def score_function(score: Score, rng: np.random.Generator | None = None) -> ScoreFn:
    """Bind a score (and an rng for random ones) into ``score_fn(clf, X, y, w)``; its
    ``signed`` attribute is the score's (re-scoring policies take the magnitude)."""

    def score_fn(clf, X, y, sample_weight=None):  # noqa: ANN001, ANN202
        return score.score(clf, X, y, sample_weight=sample_weight, rng=rng)

    score_fn.signed = bool(getattr(score, "signed", False))  # type: ignore[attr-defined]
    return score_fn
