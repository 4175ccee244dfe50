"""Cluster policies: KMeans on the features, then round-robin across the clusters.

``cluster`` is the reference code's policy (Kuchnik & Smith 2019): clusters are visited
round-robin by cluster id (0, 1, ..., k - 1, 0, 1, ...; an exhausted cluster is
skipped), and each visit takes the next point of that cluster in a random
(``inner="random"``) or score-proportional (``inner="proportional"``) order. The paper
swept k over 1, 10, ..., 1000; here k is the parameter ``n_clusters``
(``cluster:n_clusters=100``), one policy spec per k.

``cluster-topk`` is leanaug's earlier variant (kept under this name): inside a cluster
the highest scores first, and clusters visited in the order of their best score.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans

from leanaug.errors import LeanaugError
from leanaug.policies.base import (
    POLICIES,
    OrderPolicy,
    SelectionProblem,
    proportional_order,
    require_rng,
)

INNER = ("random", "proportional")


def round_robin_order(labels: np.ndarray, within: np.ndarray) -> np.ndarray:
    """All points, round-robin across clusters by id: round r takes, from each cluster
    in increasing id that still has one, its r-th point in the order ``within`` (a
    permutation of all points, read cluster by cluster).

    Examples
    --------
    >>> round_robin_order(np.array([1, 0, 1, 2, 0, 1]), np.array([5, 4, 3, 2, 1, 0])).tolist()
    [4, 5, 3, 1, 2, 0]
    """
    labels = np.asarray(labels)
    within = np.asarray(within, dtype=np.intp)
    rank = np.empty(labels.size, dtype=np.intp)
    count: dict[int, int] = {}
    for pos in within:
        c = int(labels[pos])
        rank[pos] = count.get(c, 0)
        count[c] = rank[pos] + 1
    return np.lexsort((labels, rank))


class _KMeansClusters(OrderPolicy):
    """KMeans labels of the clean features (shared by the cluster policies)."""

    def _check_k(self, n_clusters: int) -> int:
        if (
            isinstance(n_clusters, bool)
            or not isinstance(n_clusters, int | np.integer)
            or n_clusters < 1
        ):
            raise LeanaugError(
                f"{self.name} policy: n_clusters must be a positive integer, got {n_clusters!r}"
            )
        return int(n_clusters)

    def cluster_labels(self, problem: SelectionProblem, rng: np.random.Generator) -> np.ndarray:
        """KMeans (scikit-learn, k-means++, seeded from ``rng``) labels, (n,)."""
        if self.n_clusters > problem.n:
            raise LeanaugError(
                f"{self.name} policy: n_clusters={self.n_clusters} exceeds the number of points ({problem.n})"
            )
        km = KMeans(
            n_clusters=self.n_clusters,
            n_init=self.n_init,
            random_state=int(rng.integers(2**31 - 1)),
        )
        return km.fit_predict(problem.features)


@POLICIES.register("cluster")
class ClusterPolicy(_KMeansClusters):
    """The reference code's cluster policy: KMeans, round-robin across clusters by id,
    a random or score-proportional draw inside each cluster (see the module docstring).

    Parameters
    ----------
    n_clusters : int
        k of KMeans (the paper swept 1, 10, ..., 1000). ``n_clusters=1`` is ``random``
        (``inner="random"``) or ``proportional`` (``inner="proportional"``).
    inner : {"random", "proportional"}
        The order inside each cluster: uniformly random, or sequential draws without
        replacement proportional to the score (one proportional order of all points
        read cluster by cluster, which is a proportional order of each cluster).
    n_init : int
        KMeans restarts.

    Randomised (KMeans initialisation and the inner draws); nested across budgets.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0, 0], [0, 1], [9, 9], [9, 8]])
    >>> p = SelectionProblem(X, np.array([0, 1, 0, 1]), np.ones(4), X[:, None, :])
    >>> order = ClusterPolicy(n_clusters=2).select(p, [2], np.random.default_rng(0))[2].indices
    >>> sorted(int(i) // 2 for i in order)  # one point of each cluster first
    [0, 1]
    """

    name = "cluster"

    def __init__(self, n_clusters: int = 10, inner: str = "random", n_init: int = 1) -> None:
        self.n_clusters = self._check_k(n_clusters)
        if inner not in INNER:
            raise LeanaugError(
                f"cluster policy: unknown inner {inner!r}; valid: {', '.join(INNER)}"
            )
        self.inner = inner
        self.n_init = n_init

    def order(self, problem: SelectionProblem, size: int, rng) -> np.ndarray:  # noqa: ANN001
        rng = require_rng(rng, self.name)
        labels = self.cluster_labels(problem, rng)
        if self.inner == "random":
            within = rng.permutation(problem.n)
        else:
            within = proportional_order(problem.scores, problem.n, rng)
        return round_robin_order(labels, within)[:size]


@POLICIES.register("cluster-topk")
class ClusterTopKPolicy(_KMeansClusters):
    """KMeans into ``n_clusters`` clusters; then round-robin: round r takes the r-th
    highest-scored point of every cluster that still has one. Clusters are visited in
    the order of their best score (highest first); ties by lower index. Nested across
    budgets; ``n_clusters=1`` is ``topk``. (leanaug's earlier ``cluster``.)

    Parameters
    ----------
    n_clusters : int
        k of KMeans.
    n_init : int
        KMeans restarts.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0, 0], [0, 1], [9, 9], [9, 8]])
    >>> p = SelectionProblem(X, np.array([0, 1, 0, 1]), np.array([0.1, 0.2, 0.4, 0.3]),
    ...                      X[:, None, :])
    >>> ClusterTopKPolicy(n_clusters=2).select(p, [4], np.random.default_rng(0))[4].indices.tolist()
    [2, 1, 3, 0]
    """

    name = "cluster-topk"

    def __init__(self, n_clusters: int = 10, n_init: int = 1) -> None:
        self.n_clusters = self._check_k(n_clusters)
        self.n_init = n_init

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
