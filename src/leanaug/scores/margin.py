"""Margin score: closeness to a linear SVM's decision boundary (the paper's VSV idea).

A linear SVM (``sklearn.svm.LinearSVC``, squared hinge, L2) is fitted on (X, y) with
the given sample weights; ``m_i`` is the SVM decision value of point ``i``: for two
classes ``f(x_i)``; for more classes (one-vs-rest) the own-class value minus the best
other class's value. Small ``|m_i|`` means near the boundary, i.e. important, so the
score is

    score_i = exp(-|m_i|)   in (0, 1], 1 on the boundary, decreasing with distance.

Why ``exp(-|m|)`` and not ``1 / |m|``: it is bounded, so one point that happens to lie
almost on the boundary cannot take all of a proportional policy's probability mass,
and it is never infinite. It ignores the logistic classifier ``clf``.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from leanaug.classifier import LogisticClassifier
from leanaug.errors import LeanaugError
from leanaug.scores.base import SCORES, Score


def svm_margins(
    X: np.ndarray,
    y: np.ndarray,
    sample_weight: np.ndarray | None = None,
    C: float = 1.0,
    max_iter: int = 10_000,
) -> np.ndarray:
    """Margins m_i (see module doc) of a LinearSVC fitted on (X, y)."""
    classes = np.unique(y)
    if classes.size < 2:
        raise LeanaugError(f"the margin score needs at least two classes, got {classes.tolist()}")
    svm = LinearSVC(C=C, max_iter=max_iter, dual="auto", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        try:
            svm.fit(X, y, sample_weight=sample_weight)
        except ConvergenceWarning as exc:
            raise LeanaugError(
                f"LinearSVC did not converge in max_iter={max_iter} iterations; raise max_iter or lower C"
            ) from exc
    z = svm.decision_function(X)
    if z.ndim == 1:
        return z
    own = np.searchsorted(svm.classes_, y)
    rows = np.arange(X.shape[0])
    z_own = z[rows, own]
    z_other = z.copy()
    z_other[rows, own] = -np.inf
    return z_own - z_other.max(axis=1)


@SCORES.register("margin")
class MarginScore(Score):
    """``exp(-|m_i|)`` with ``m_i`` a linear SVM's decision value (see module doc).

    Parameters: ``C`` (LinearSVC's C), ``max_iter``.
    """

    name = "margin"

    def __init__(self, C: float = 1.0, max_iter: int = 10_000) -> None:
        self.C = C
        self.max_iter = max_iter

    def _score(self, clf: LogisticClassifier, X, y, sample_weight, rng) -> np.ndarray:  # noqa: ANN001
        m = svm_margins(X, y, sample_weight, C=self.C, max_iter=self.max_iter)
        return np.exp(-np.abs(m))
