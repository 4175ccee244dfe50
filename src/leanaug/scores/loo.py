"""Exact leave-one-out by refitting: the quantity the ``influence`` score approximates.

For each point i the classifier is refitted (same parameters, ``clf.clone()``) on all
points but i, with their sample weights, giving ``theta_{-i}``. The score is the
increase in point i's weighted, C-scaled log loss

    loo_i = C w_i (logloss_i(theta_{-i}) - logloss_i(theta))

which the influence score approximates to first order by ``g_i^T H^{-1} g_i``
(:mod:`leanaug.scores.influence`). It is >= 0 at exact optima (theta minimises
``L_{-i} + C w_i logloss_i`` and theta_{-i} minimises ``L_{-i}``; adding the two
optimality inequalities gives it); the absolute value is taken so that optimiser
round-off cannot produce tiny negative scores. :func:`loo_parameter_changes` gives
``theta_{-i} - theta`` (intercepts centred for softmax), compared with
:func:`~leanaug.scores.influence.influence_parameter_changes` in the tests.

:func:`loo_validation_loss_changes` gives the exact change of a validation set's mean
log loss, ``L_val(theta_{-i}) - L_val(theta)`` (signed), which the ``influence-test``
score approximates (:mod:`leanaug.scores.validation`).

n refits: meant for checks and small n. Refits use the classifier's ``tol``; for
comparisons with influence use a tight one (e.g. 1e-10), as the changes are O(1/n).
"""

from __future__ import annotations

import numpy as np

from leanaug.classifier import LogisticClassifier, check_xy
from leanaug.errors import LeanaugError
from leanaug.progress import Progress
from leanaug.scores.base import SCORES, Score
from leanaug.scores.influence import parameter_vector


def _refits(clf: LogisticClassifier, X, y, sample_weight, indices, progress: bool):  # noqa: ANN001, ANN202
    if not hasattr(clf, "coef_"):
        raise LeanaugError("the classifier is not fitted; fit it on the training points first")
    n = X.shape[0]
    idx = np.arange(n) if indices is None else np.asarray(indices, dtype=np.intp)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise LeanaugError(
            f"leave-one-out indices must lie in [0, {n}), got {idx.min()}..{idx.max()}"
        )
    with Progress(disable=not progress) as bar:
        for i in bar.track(idx, description="leave-one-out refits"):
            keep = np.ones(n, dtype=bool)
            keep[i] = False
            w = None if sample_weight is None else sample_weight[keep]
            yield int(i), clf.clone().fit(X[keep], y[keep], sample_weight=w)


def loo_loss_changes(
    clf: LogisticClassifier,
    X: np.ndarray,
    y: np.ndarray,
    sample_weight: np.ndarray | None = None,
    indices: np.ndarray | None = None,
    progress: bool = False,
) -> np.ndarray:
    """``C w_i (logloss_i(theta_{-i}) - logloss_i(theta))`` for i in ``indices`` (signed)."""
    X, y, sample_weight = check_xy(X, y, sample_weight)
    base = clf.log_loss_per_point(X, y)
    out = []
    for i, refit in _refits(clf, X, y, sample_weight, indices, progress):
        w_i = 1.0 if sample_weight is None else sample_weight[i]
        loss_i = refit.log_loss_per_point(X[i : i + 1], y[i : i + 1])[0]
        out.append(float(clf.C) * w_i * (loss_i - base[i]))
    return np.asarray(out, dtype=np.float64)


def loo_parameter_changes(
    clf: LogisticClassifier,
    X: np.ndarray,
    y: np.ndarray,
    sample_weight: np.ndarray | None = None,
    indices: np.ndarray | None = None,
    progress: bool = False,
) -> np.ndarray:
    """``theta_{-i} - theta`` (rows follow ``indices``; :func:`parameter_vector` order)."""
    X, y, sample_weight = check_xy(X, y, sample_weight)
    theta = parameter_vector(clf)
    rows = []
    for _, refit in _refits(clf, X, y, sample_weight, indices, progress):
        if refit.classes_.size != clf.classes_.size:
            raise LeanaugError(
                "leaving a point out removed a whole class; leave-one-out is undefined"
            )
        rows.append(parameter_vector(refit) - theta)
    return np.asarray(rows).reshape(len(rows), theta.size)


def loo_validation_loss_changes(
    clf: LogisticClassifier,
    X: np.ndarray,
    y: np.ndarray,
    sample_weight: np.ndarray | None,
    X_val: np.ndarray,
    y_val: np.ndarray,
    indices: np.ndarray | None = None,
    progress: bool = False,
) -> np.ndarray:
    """``L_val(theta_{-i}) - L_val(theta)`` for i in ``indices`` (signed), ``L_val`` the
    mean log loss over (X_val, y_val)."""
    X, y, sample_weight = check_xy(X, y, sample_weight)
    base = clf.log_loss_per_point(X_val, y_val).mean()
    out = [
        refit.log_loss_per_point(X_val, y_val).mean() - base
        for _, refit in _refits(clf, X, y, sample_weight, indices, progress)
    ]
    return np.asarray(out, dtype=np.float64)


@SCORES.register("loo")
class LOOScore(Score):
    """Exact leave-one-out loss change ``|C w_i (logloss_i(theta_{-i}) - logloss_i(theta))|``.

    Parameters
    ----------
    progress : bool
        Show a progress bar over the n refits.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(20, 2))
    >>> y = (X[:, 0] + rng.normal(size=20) > 0).astype(int)
    >>> LOOScore().score(LogisticClassifier().fit(X, y), X, y).shape
    (20,)
    """

    name = "loo"

    def __init__(self, progress: bool = False) -> None:
        self.progress = progress

    def _score(self, clf: LogisticClassifier, X, y, sample_weight, rng) -> np.ndarray:  # noqa: ANN001
        counts = np.unique(y, return_counts=True)[1]
        if counts.min() < 2:
            raise LeanaugError("leave-one-out needs at least two points of every class")
        return np.abs(loo_loss_changes(clf, X, y, sample_weight, progress=self.progress))
