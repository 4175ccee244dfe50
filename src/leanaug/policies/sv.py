"""The ``sv`` policy: support vectors of a linear SVM first (the paper's VSV)."""

from __future__ import annotations

import numpy as np
from sklearn.svm import SVC

from leanaug.errors import LeanaugError
from leanaug.policies.base import POLICIES, OrderPolicy, SelectionProblem


@POLICIES.register("sv")
class SupportVectorPolicy(OrderPolicy):
    """Support vectors of ``sklearn.svm.SVC(kernel="linear", C=C)`` fitted on the clean
    features, highest score first; budgets beyond the number of support vectors
    continue with the other points, also highest score first (ties by lower index).
    Deterministic and nested; needs no rng.
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
