"""The ``cluster`` policy: KMeans on the features, round-robin across clusters."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans

from leanaug.errors import LeanaugError
from leanaug.policies.base import POLICIES, OrderPolicy, SelectionProblem, require_rng


@POLICIES.register("cluster")
class ClusterPolicy(OrderPolicy):
    """KMeans (scikit-learn, k-means++) on the clean features into ``n_clusters``
    clusters; then round-robin: round r takes the r-th highest-scored point of every
    cluster that still has one. Clusters are visited in the order of their best score
    (highest first); ties by lower index. Nested across budgets; ``n_clusters=1`` is
    ``topk``. The paper tried k in {1, 10, ..., 1000}.
    """

    name = "cluster"

    def __init__(self, n_clusters: int = 10, n_init: int = 1) -> None:
        if (
            isinstance(n_clusters, bool)
            or not isinstance(n_clusters, int | np.integer)
            or n_clusters < 1
        ):
            raise LeanaugError(
                f"cluster policy: n_clusters must be a positive integer, got {n_clusters!r}"
            )
        self.n_clusters = int(n_clusters)
        self.n_init = n_init

    def cluster_labels(self, problem: SelectionProblem, rng: np.random.Generator) -> np.ndarray:
        if self.n_clusters > problem.n:
            raise LeanaugError(
                f"cluster policy: n_clusters={self.n_clusters} exceeds the number of points ({problem.n})"
            )
        km = KMeans(
            n_clusters=self.n_clusters,
            n_init=self.n_init,
            random_state=int(rng.integers(2**31 - 1)),
        )
        return km.fit_predict(problem.features)

    def order(self, problem: SelectionProblem, size: int, rng) -> np.ndarray:  # noqa: ANN001
        labels = self.cluster_labels(problem, require_rng(rng, self.name))
        s = problem.scores
        by_score = np.argsort(-s, kind="stable")  # global score order, ties by index
        # rank of each point inside its cluster (0 = best) and the cluster's visiting slot
        rank = np.empty(problem.n, dtype=np.intp)
        slot = np.empty(problem.n, dtype=np.intp)
        slot_of: dict[int, int] = {}
        count: dict[int, int] = {}
        for pos in by_score:
            c = int(labels[pos])
            if c not in slot_of:
                slot_of[c] = len(slot_of)
                count[c] = 0
            slot[pos] = slot_of[c]
            rank[pos] = count[c]
            count[c] += 1
        return np.lexsort((slot, rank))[:size]
