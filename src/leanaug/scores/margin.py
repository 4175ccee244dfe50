"""Margin scores: distance to a linear SVM's decision boundary (the paper's VSV idea).

``m_i`` is the SVM decision value of point ``i``: for two classes ``f(x_i)``; for more
classes (one-vs-rest) the own-class value minus the best other class's value.

* ``margin`` (the reference code's): ``score_i = |m_i|`` with ``m_i`` from
  ``sklearn.svm.SVC(kernel="linear")`` (hinge loss), C given or chosen by 4-fold
  cross-validation over 0.01, 0.1, 1, 10, 100 as for ``vsv``. Large means far from the
  boundary; the paper used it with ``proportional`` (far points first) and ``inverse``
  (near points first). Points on the wrong side count by their distance too (the
  absolute value drops the sign).
* ``margin-exp`` (leanaug's earlier ``margin``): ``score_i = exp(-|m_i|)`` with ``m_i``
  from ``sklearn.svm.LinearSVC`` (squared hinge), in (0, 1], 1 on the boundary: near
  points score high, and one point almost on the boundary cannot take all of a
  proportional policy's mass.

Both ignore the logistic classifier ``clf``.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.svm import SVC, LinearSVC

from leanaug.classifier import LogisticClassifier
from leanaug.errors import LeanaugError
from leanaug.scores.base import SCORES, Score

#: The reference code's grid for the SVM's C (4-fold cross-validation).
C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)


def fit_linear_svc(
    X: np.ndarray,
    y: np.ndarray,
    C: float | None = None,
    cv: int = 4,
    sample_weight: np.ndarray | None = None,
) -> SVC:
    """``SVC(kernel="linear", C=C)`` fitted on (X, y); ``C=None`` picks C from
    :data:`C_GRID` by ``cv``-fold stratified cross-validation (accuracy; scikit-learn's
    ``GridSearchCV``, which breaks ties by the first, i.e. smallest, C), then refits on
    all points. ``svc.C`` is the C used.

    Examples
    --------
    >>> X = np.array([[-3.0], [-2], [-1], [1], [2], [3]])
    >>> fit_linear_svc(X, np.array([0, 0, 0, 1, 1, 1]), C=100.0).support_.tolist()
    [2, 3]
    """
    classes, counts = np.unique(y, return_counts=True)
    if classes.size < 2:
        raise LeanaugError(f"the SVM needs at least two classes, got {classes.tolist()}")
    if C is not None:
        return SVC(kernel="linear", C=float(C)).fit(X, y, sample_weight=sample_weight)
    if counts.min() < cv:
        raise LeanaugError(
            f"choosing the SVM's C by {cv}-fold cross-validation needs at least {cv} points "
            f"of every class, got {counts.min()}; pass C"
        )
    search = GridSearchCV(
        SVC(kernel="linear"), {"C": list(C_GRID)}, cv=StratifiedKFold(cv), refit=True
    )
    search.fit(X, y, sample_weight=sample_weight)
    return search.best_estimator_


def _own_minus_other(z: np.ndarray, classes: np.ndarray, y: np.ndarray) -> np.ndarray:
    if z.ndim == 1:
        return z
    own = np.searchsorted(classes, y)
    rows = np.arange(z.shape[0])
    z_other = z.copy()
    z_other[rows, own] = -np.inf
    return z[rows, own] - z_other.max(axis=1)


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
    return _own_minus_other(svm.decision_function(X), svm.classes_, y)


def svc_margins(
    X: np.ndarray,
    y: np.ndarray,
    sample_weight: np.ndarray | None = None,
    C: float | None = 1.0,
) -> np.ndarray:
    """Signed margins m_i of :func:`fit_linear_svc` (one-vs-rest decision values for
    more than two classes, own class minus the best other)."""
    svm = fit_linear_svc(X, y, C, sample_weight=sample_weight)
    if svm.classes_.size > 2:
        svm.set_params(decision_function_shape="ovr")
    return _own_minus_other(svm.decision_function(X), svm.classes_, y)


@SCORES.register("margin")
class MarginScore(Score):
    """``|m_i|``, a linear SVC's absolute decision value (the reference code's margin).

    Parameters
    ----------
    C : float or None
        The SVC's C; ``None`` chooses it by 4-fold cross-validation over
        :data:`C_GRID` (as ``vsv`` does).

    Examples
    --------
    >>> X = np.array([[-3.0], [-2], [-1], [1], [2], [3]])
    >>> y = np.array([0, 0, 0, 1, 1, 1])
    >>> MarginScore(C=100.0).score(None, X, y).round(6).tolist()
    [3.0, 2.0, 1.0, 1.0, 2.0, 3.0]
    """

    name = "margin"

    def __init__(self, C: float | None = 1.0) -> None:
        self.C = C

    def _score(self, clf: LogisticClassifier, X, y, sample_weight, rng) -> np.ndarray:  # noqa: ANN001
        return np.abs(svc_margins(X, y, sample_weight, C=self.C))


@SCORES.register("margin-exp")
class MarginExpScore(Score):
    """``exp(-|m_i|)`` with ``m_i`` a LinearSVC's decision value (see module doc).

    Parameters
    ----------
    C : float
        LinearSVC's C.
    max_iter : int
        LinearSVC's iteration cap (not converging is an error).

    Examples
    --------
    >>> X = np.array([[-3.0], [-2], [-1], [1], [2], [3]])
    >>> s = MarginExpScore().score(None, X, np.array([0, 0, 0, 1, 1, 1]))
    >>> bool(s[2] > s[0])  # nearer the boundary, higher
    True
    """

    name = "margin-exp"

    def __init__(self, C: float = 1.0, max_iter: int = 10_000) -> None:
        self.C = C
        self.max_iter = max_iter

    def _score(self, clf: LogisticClassifier, X, y, sample_weight, rng) -> np.ndarray:  # noqa: ANN001
        m = svm_margins(X, y, sample_weight, C=self.C, max_iter=self.max_iter)
        return np.exp(-np.abs(m))
