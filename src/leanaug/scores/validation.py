"""Sign-aware influence on a validation loss: the ``influence-test`` score.

Koh & Liang's first-order influence of a training point on a held-out loss (the
reference code's ``inf_up_loss_influence``, which its experiments do not call): leaving
point i out moves the optimum by ``theta_{-i} - theta ~= H^{-1} g_i`` (see
:mod:`leanaug.scores.influence`), so the mean log loss ``L_val`` of a validation set
changes by

    L_val(theta_{-i}) - L_val(theta)  ~=  grad L_val(theta)^T H^{-1} g_i      (signed)

(:func:`validation_influence`). Positive: leaving i out raises the validation loss, i.e.
point i helps; negative: it hurts. One Cholesky solve for ``H^{-1} grad L_val``, then one
dot product per point: cheaper than self-influence.

The validation set is carved from the TRAINING points, never the test set: the
``influence-test`` score splits them into ``n_folds`` stratified folds; for each fold it
refits the classifier (``clf.clone()``, same parameters and sample weights) on the other
folds and scores their points against that fold's loss; a point's score is the mean
over the ``n_folds - 1`` folds it was trained with. ``n_folds`` refits in all; the fold
split is drawn from ``seed``. :func:`~leanaug.scores.loo.loo_validation_loss_changes`
computes the exact left-hand side by refitting, for checks.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
from scipy.special import expit
from sklearn.model_selection import StratifiedKFold

from leanaug.classifier import LogisticClassifier, check_xy
from leanaug.errors import LeanaugError
from leanaug.scores.base import SCORES, Score
from leanaug.scores.influence import (
    LogisticCurvature,
    _check_fitted,
    _design,
    logistic_curvature,
)

__all__ = ["ValidationInfluenceScore", "mean_loss_gradient", "validation_influence"]


def mean_loss_gradient(clf: LogisticClassifier, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Gradient of the mean (unweighted, not C-scaled) log loss over (X, y) with respect
    to :func:`~leanaug.scores.influence.parameter_vector`'s parameters."""
    _check_fitted(clf)
    X, y, _ = check_xy(X, y, None)
    Xt = _design(X, clf.fit_intercept)
    idx = clf.label_indices(y)
    z = X @ clf.coef_.T + clf.intercept_
    if clf.classes_.size == 2:
        r = expit(z[:, 0]) - (idx == 1)
        return (r[:, None] * Xt).mean(axis=0)
    P = np.exp(z - z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    P[np.arange(len(idx)), idx] -= 1.0
    return np.einsum("nk,nj->kj", P, Xt).ravel() / len(idx)


def validation_influence(
    clf: LogisticClassifier,
    X: np.ndarray,
    y: np.ndarray,
    sample_weight: np.ndarray | None,
    X_val: np.ndarray,
    y_val: np.ndarray,
    curvature: LogisticCurvature | None = None,
) -> np.ndarray:
    """``grad L_val^T H^{-1} g_i`` for the training points (X, y) that ``clf`` was fitted
    on: the first-order change of the validation set's mean log loss when point i is
    left out (signed: > 0 helps, < 0 hurts), (n,).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(60, 2))
    >>> y = (X[:, 0] > 0).astype(int)
    >>> clf = LogisticClassifier().fit(X[:40], y[:40])
    >>> s = validation_influence(clf, X[:40], y[:40], None, X[40:], y[40:])
    >>> s.shape, bool(s.sum() > 0)  # on balance the training points help
    ((40,), True)
    """
    cur = curvature if curvature is not None else logistic_curvature(clf, X, y, sample_weight)
    gv = mean_loss_gradient(clf, X_val, y_val)
    if cur.pinned:  # the reduced system of logistic_curvature (exact: see its module)
        gv = gv[:-1]
    v = scipy.linalg.cho_solve(cur.chol, gv, check_finite=False)
    return cur.grads @ v


@SCORES.register("influence-test")
class ValidationInfluenceScore(Score):
    """Signed first-order influence of each training point on a validation loss carved
    from the training points by stratified K-fold cross-fitting (see module doc).

    Parameters
    ----------
    n_folds : int
        Folds (>= 2): each point is scored by the fits on the ``n_folds - 1`` training
        sets that hold it, against the held-out fold of each, and averaged.
    seed : int
        Seed of the fold split (a run passes its own seed).

    Signed (``signed = True``): > 0 means the point helps the validation loss. Policies
    use its magnitude unless given ``sign=helpful-first`` or ``sign=skip-harmful``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(80, 2))
    >>> y = (X[:, 0] + 0.5 * rng.normal(size=80) > 0).astype(int)
    >>> clf = LogisticClassifier().fit(X, y)
    >>> s = ValidationInfluenceScore(n_folds=4).score(clf, X, y)
    >>> s.shape, bool(s.min() < 0 < s.max())
    ((80,), True)
    """

    name = "influence-test"
    signed = True

    def __init__(self, n_folds: int = 5, seed: int = 0) -> None:
        if isinstance(n_folds, bool) or not isinstance(n_folds, int | np.integer) or n_folds < 2:
            raise LeanaugError(f"influence-test: n_folds must be an integer >= 2, got {n_folds!r}")
        self.n_folds = int(n_folds)
        self.seed = int(seed)

    def folds(self, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(train, validation)`` index pairs of the stratified split."""
        counts = np.unique(y, return_counts=True)[1]
        if counts.min() < self.n_folds:
            raise LeanaugError(
                f"influence-test: n_folds={self.n_folds} needs at least that many points of "
                f"every class, the smallest class has {counts.min()}; lower n_folds"
            )
        split = StratifiedKFold(self.n_folds, shuffle=True, random_state=self.seed)
        return list(split.split(np.zeros(len(y)), y))

    def _score(self, clf: LogisticClassifier, X, y, sample_weight, rng) -> np.ndarray:  # noqa: ANN001
        _check_fitted(clf)
        total = np.zeros(X.shape[0])
        count = np.zeros(X.shape[0])
        for train, val in self.folds(y):
            w = None if sample_weight is None else sample_weight[train]
            fit = clf.clone().fit(X[train], y[train], sample_weight=w)
            total[train] += validation_influence(fit, X[train], y[train], w, X[val], y[val])
            count[train] += 1
        return total / count
