"""Support-vector policies: ``vsv`` (the paper's VSV) and ``sv`` (support vectors first).

``vsv`` augments exactly the support vectors of a linear SVC whose C is chosen by 4-fold
cross-validation over 0.01, 0.1, 1, 10, 100 (the reference code's VSV). Its selection
has the size it has: every budget b > 0 gets all support vectors (the results'
``n_augmented`` column says how many), budget 0 gets none. The paper reported it as a
single point. ``sv`` is leanaug's budgeted ordering: support vectors of an SVC with a
fixed C first, by score, then the other points by score.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.svm import SVC

from leanaug.errors import LeanaugError
from leanaug.policies.base import (
    POLICIES,
    OrderPolicy,
    Policy,
    Selection,
    SelectionProblem,
    check_budgets,
    check_weighting,
)
from leanaug.scores.margin import fit_linear_svc


@POLICIES.register("sv")
class SupportVectorPolicy(OrderPolicy):
    """Support vectors of ``sklearn.svm.SVC(kernel="linear", C=C)`` fitted on the clean
    features, highest score first; budgets beyond the number of support vectors
    continue with the other points, also highest score first (ties by lower index).
    Deterministic and nested; needs no rng.

    Parameters
    ----------
    C : float
        The SVC's C.

    Examples
    --------
    >>> X = np.array([[-3.0], [-2], [-1], [1], [2], [3]])
    >>> p = SelectionProblem(X, np.array([0, 0, 0, 1, 1, 1]),
    ...                      np.array([0.6, 0.5, 0.1, 0.2, 0.3, 0.4]), X[:, None, :])
    >>> SupportVectorPolicy(C=100.0).select(p, [3])[3].indices.tolist()
    [3, 2, 0]
    """

    name = "sv"
    deterministic = True

    def __init__(self, C: float = 1.0) -> None:
        self.C = C

    def support_vectors(self, problem: SelectionProblem) -> np.ndarray:
        if np.unique(problem.labels).size < 2:
            raise LeanaugError("sv policy: the SVM needs at least two classes")
        svm = SVC(kernel="linear", C=self.C).fit(problem.features, problem.labels)
        return np.sort(svm.support_)

    def order(self, problem: SelectionProblem, size: int, rng) -> np.ndarray:  # noqa: ANN001
        is_sv = np.zeros(problem.n, dtype=bool)
        is_sv[self.support_vectors(problem)] = True
        by_score = np.argsort(-problem.scores, kind="stable")
        return np.concatenate([by_score[is_sv[by_score]], by_score[~is_sv[by_score]]])[:size]


@POLICIES.register("vsv")
class VSVPolicy(Policy):
    """All support vectors of a linear SVC, C by 4-fold cross-validation (the paper's VSV).

    Parameters
    ----------
    C : float or None
        ``None`` (default): chosen from 0.01, 0.1, 1, 10, 100 by 4-fold stratified
        cross-validation (see :func:`~leanaug.scores.margin.fit_linear_svc`); a number
        fixes it. ``C_`` holds the C used after :meth:`select`.
    weighting : {"uniform", "downweight"}
        As for ``topk``.

    Budgets: the selection does not depend on them. Every budget b > 0 gets all the
    support vectors (in index order), however many they are; budget 0 gets none.
    Deterministic; needs no rng.

    Examples
    --------
    >>> X = np.array([[-3.0], [-2], [-1], [1], [2], [3]])
    >>> p = SelectionProblem(X, np.array([0, 0, 0, 1, 1, 1]), np.ones(6), X[:, None, :])
    >>> sel = VSVPolicy(C=100.0).select(p, [0, 1, 5])
    >>> [sel[b].indices.tolist() for b in (0, 1, 5)]
    [[], [2, 3], [2, 3]]
    """

    name = "vsv"
    deterministic = True

    def __init__(self, C: float | None = None, weighting: str = "uniform") -> None:
        if C is not None and not (np.isfinite(C) and C > 0):
            raise LeanaugError(f"vsv policy: C must be positive or None, got {C!r}")
        self.C = C
        self.weighting = check_weighting(weighting, self.name)

    def support_vectors(self, problem: SelectionProblem) -> np.ndarray:
        """Indices of the support vectors, sorted."""
        svm = fit_linear_svc(problem.features, problem.labels, self.C)
        self.C_ = float(svm.C)
        return np.sort(svm.support_)

    def select(
        self,
        problem: SelectionProblem,
        budgets: Sequence[int],
        rng: np.random.Generator | None = None,
    ) -> dict[int, Selection]:
        budgets = check_budgets(budgets, problem.n)
        sv = self.support_vectors(problem) if any(b > 0 for b in budgets) else None
        return {
            b: Selection(sv.copy() if b > 0 else np.empty(0, dtype=np.intp), self.weighting)
            for b in budgets
        }
