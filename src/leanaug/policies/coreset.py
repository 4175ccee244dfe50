"""Augmentation-aware coreset policy ``coreset`` (Liu & Mirzasoleiman, NeurIPS 2022).

Liu & Mirzasoleiman, "Data-Efficient Augmentation for Training Neural Networks"
(NeurIPS 2022), augment only a weighted coreset: per class, the points whose
gradients best cover the gradients of the whole class, found as in CRAIG
(Mirzasoleiman, Bilmes & Leskovec, ICML 2020) by greedy maximisation of the
facility-location function

    F(S) = sum_i max_{j in S} (c - ||g_i - g_j||),     c >= max_{i, j} ||g_i - g_j||,

each selected j weighted by gamma_j, the number of points of its class whose nearest
selected element is j (so sum_j gamma_j g_j approximates the class's gradient sum).

Gradient proxy. With leanaug's frozen features and logistic regression, g_i is the
gradient of the log loss with respect to the classifier's parameters
(:func:`~leanaug.scores.influence.parameter_vector`'s ``[W | b]``) at the fit on the
clean points, averaged over point i's K augmented copies (:func:`augmented_gradients`):
``mean_k (p(x_ik) - t_i) (x) [x_ik, 1]`` (softmax over the classes, t_i one-hot; for
two classes the one sigmoid row, ``p_1(x_ik) - t_i`` a scalar). The policy fits that clean classifier itself with
``problem.make_classifier()`` (one fit, so :class:`SelectionProblem` stays as it is).

Steps of :meth:`CoresetPolicy.select`, one pass for all budgets:

1. :func:`class_interleaving`: one nested order of class slots; every prefix of length
   b holds each class c floor or ceil of its share b m_c / n (the largest-remainder
   allocation wherever that allocation is itself nested; see there).
2. Per class, one class at a time (its m x m distance matrix is the memory peak):
   :func:`facility_location_order`, the greedy order, computed once up to the class's
   count at the largest budget: the greedy is nested by construction, so a smaller
   budget's coreset is a prefix of it and no gains are recomputed per budget.
3. :func:`coreset_gammas` for every budget (the nearest selected element of a point
   depends on the prefix), then the weights (:class:`CoresetPolicy`).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence

import numpy as np
from sklearn.metrics.pairwise import euclidean_distances

from leanaug.classifier import LogisticClassifier
from leanaug.errors import LeanaugError
from leanaug.policies.base import (
    POLICIES,
    Policy,
    Selection,
    SelectionProblem,
    check_budgets,
    check_weighting,
)

__all__ = [
    "CoresetPolicy",
    "augmented_gradients",
    "class_interleaving",
    "coreset_gammas",
    "facility_location_order",
]

SPACES = ("gradient", "features")
SOURCES = ("augmented", "clean")
CORESET_WEIGHTINGS = ("coreset", "uniform")


def class_interleaving(sizes: Sequence[int], size: int) -> np.ndarray:
    """The class (position in ``sizes``) of each of the first ``size`` slots of one nested
    order over classes of the given sizes, each prefix split as proportionally as a
    nested order allows.

    Largest-remainder (Hamilton) rounding of each budget on its own is not nested: a
    class may lose a slot when the budget grows (the Alabama paradox), so no single
    order reproduces it at every budget. This order keeps what largest remainder
    guarantees, at every prefix: counts sum to b and each class holds floor or ceil of
    its exact share b m_c / n (quota). Slot b goes to the class furthest below its
    share (the largest remainder; ties to the lower class) among those eligible by
    Still's test (Still 1979, the house-monotone quota methods of Balinski & Young's
    "Fair Representation"): the slot keeps the class within its upper quota, and every
    later prefix can still meet all lower quotas. With two classes this is exactly
    largest remainder at every budget; with more, wherever largest remainder is nested
    (MNIST's ten class sizes: 41 of the 60,000 budgets differ, around the 34 where
    largest remainder takes a slot away from a class).

    Written by hand (no maintained package implements quota-method apportionment).

    Examples
    --------
    >>> class_interleaving([6, 3, 1], 10).tolist()
    [0, 1, 0, 0, 1, 0, 2, 0, 1, 0]
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    n = int(sizes.sum())
    if sizes.ndim != 1 or sizes.size == 0 or np.any(sizes < 1):
        raise LeanaugError(f"class sizes must be positive integers, got {sizes.tolist()}")
    if not 0 <= size <= n:
        raise LeanaugError(f"size must lie in [0, {n}], got {size}")
    counts = np.zeros(sizes.size, dtype=np.int64)
    ids = np.arange(sizes.size)
    out = np.empty(size, dtype=np.intp)
    for pos in range(size):
        b = pos + 1
        below_share = b * sizes - counts * n  # n * (share at budget b - count), exact
        for c in np.lexsort((ids, -below_share)):
            if counts[c] * n < b * sizes[c] and _lower_quotas_reachable(sizes, counts, c, b):
                break
        else:  # pragma: no cover - Still's theorem: some class is always eligible
            raise AssertionError(f"no eligible class at budget {b} for sizes {sizes.tolist()}")
        counts[c] += 1
        out[pos] = c
    return out


def _lower_quotas_reachable(sizes: np.ndarray, counts: np.ndarray, c: int, b: int) -> bool:
    """Whether, after class ``c`` takes slot ``b``, every budget h > b still has room to
    bring each class up to floor(h m_j / n). Past the budget at which every floor has
    reached the class's count the condition holds by itself, so only up to there."""
    n = int(sizes.sum())
    after = counts.copy()
    after[c] += 1
    last = int(np.max(-(-after * n // sizes)))  # min h with floor(h m_j / n) >= after_j, all j
    if last <= b:
        return True
    h = np.arange(b + 1, last + 1)
    missing = np.maximum(h[:, None] * sizes // n - after, 0).sum(axis=1)
    return bool(np.all(missing <= h - b))


def facility_location_order(distances: np.ndarray, size: int) -> np.ndarray:
    """The first ``size`` elements chosen by the greedy maximisation of
    ``F(S) = sum_i max_{j in S} (c - distances[i, j])``, c = the largest distance.

    The gain of j is ``sum_i max(0, best_i - distances[i, j])`` with ``best_i`` the
    distance from i to its nearest chosen element (c while none is chosen), so the
    order does not depend on c as long as c >= every distance. Ties go to the lower
    index. Greedy is nested: the first k of a longer order are the order for k.

    Lazy greedy (Minoux 1978): gains only shrink as S grows (submodularity; in floating
    point too, as each term and the summation are monotone), so a gain computed at an
    earlier step bounds the current one, and only the candidates whose stale bound tops
    the heap are re-evaluated, each in O(m). It picks exactly what the plain greedy
    picks (one O(m^2) pass per step, too slow for a class of thousands), ties included.
    Written by hand: apricot-select's FacilityLocationSelection installs and runs here,
    but its last release is from February 2021, it pulls in numba and the unmaintained
    nose, and it documents no tie-breaking; this is 30 lines of numpy and heapq.

    Examples
    --------
    >>> x = np.array([0.0, 1, 2, 10, 11])
    >>> facility_location_order(np.abs(x[:, None] - x[None, :]), 3).tolist()
    [2, 3, 0]
    """
    D = np.asarray(distances, dtype=np.float64)
    m = D.shape[0]
    if D.shape != (m, m):
        raise LeanaugError(f"distances must be a square matrix, got shape {D.shape}")
    if not 0 <= size <= m:
        raise LeanaugError(f"size must lie in [0, {m}], got {size}")
    best = np.full(m, float(D.max()) if m else 0.0)

    def gain(j: int) -> float:
        return float(np.maximum(best - D[j], 0.0).sum())  # D symmetric: row j = column j

    heap = [(-gain(j), j) for j in range(m)]
    heapq.heapify(heap)
    evaluated_at = np.zeros(m, dtype=np.intp)  # the step whose S a heap entry's gain used
    order = np.empty(size, dtype=np.intp)
    for step in range(size):
        while True:
            _, j = heapq.heappop(heap)
            if evaluated_at[j] == step:
                break
            evaluated_at[j] = step
            heapq.heappush(heap, (-gain(j), j))
        order[step] = j
        np.minimum(best, D[j], out=best)
    return order


def coreset_gammas(
    distances: np.ndarray, order: np.ndarray, lengths: Iterable[int]
) -> dict[int, np.ndarray]:
    """``{L: gamma}`` for each prefix length L of ``order``: ``gamma[t]`` is the number
    of points whose nearest element of ``order[:L]`` is ``order[t]`` (ties to the
    element chosen first; a chosen point always counts for itself), so each gamma sums
    to the number of points (L > 0).

    Examples
    --------
    >>> x = np.array([0.0, 1, 2, 10, 11])
    >>> g = coreset_gammas(np.abs(x[:, None] - x[None, :]), np.array([2, 3, 0]), [1, 2, 3])
    >>> [g[k].tolist() for k in (1, 2, 3)]
    [[5], [3, 2], [2, 2, 1]]
    """
    D = np.asarray(distances, dtype=np.float64)
    order = np.asarray(order, dtype=np.intp)
    lengths = sorted({int(k) for k in lengths})
    if lengths and not 0 <= lengths[0] <= lengths[-1] <= order.size:
        raise LeanaugError(f"prefix lengths must lie in [0, {order.size}], got {lengths}")
    nearest = np.full(D.shape[0], np.inf)
    owner = np.full(D.shape[0], -1, dtype=np.intp)
    out = {0: np.zeros(0, dtype=np.int64)} if 0 in lengths else {}
    for t, j in enumerate(order[: lengths[-1] if lengths else 0]):
        closer = D[j] < nearest
        nearest[closer] = D[j][closer]
        owner[closer] = t
        nearest[j], owner[j] = 0.0, t
        if t + 1 in lengths:
            out[t + 1] = np.bincount(owner, minlength=t + 1)
    return out


def augmented_gradients(
    clf: LogisticClassifier, copies: np.ndarray, labels: np.ndarray
) -> np.ndarray:
    """(m, P): for each point the gradient of the log loss (unweighted, not C-scaled)
    with respect to ``parameter_vector(clf)``, averaged over its copies.

    ``copies`` is (m, K, d) (K = 1 for the clean points), ``labels`` (m,). Per copy the
    gradient is ``(p(x) - t) (x) [x, 1]`` (softmax, class-major) or ``(p_1(x) - t)
    [x, 1]`` (two classes, one sigmoid row); no 1 without an intercept.

    Examples
    --------
    >>> X = np.array([[-2.0], [-1], [1], [2]])
    >>> clf = LogisticClassifier().fit(X, np.array([0, 0, 1, 1]))
    >>> augmented_gradients(clf, X[:, None, :], np.array([0, 0, 1, 1])).shape
    (4, 2)
    """
    copies = np.asarray(copies, dtype=np.float64)
    m, K, d = copies.shape
    flat = copies.reshape(m * K, d)
    target = np.repeat(clf.label_indices(labels), K)
    p = clf.predict_proba(flat)
    if clf.classes_.size == 2:
        r = (p[:, 1] - (target == 1))[:, None]
    else:
        r = p
        r[np.arange(m * K), target] -= 1.0
    design = np.hstack([flat, np.ones((m * K, 1))]) if clf.fit_intercept else flat
    rows = r.reshape(m, K, -1).transpose(0, 2, 1)  # (m, R, K)
    return (np.matmul(rows, design.reshape(m, K, -1)) / K).reshape(m, -1)


@POLICIES.register("coreset")
class CoresetPolicy(Policy):
    """Augment a per-class weighted coreset of the (augmented) gradients (Liu &
    Mirzasoleiman, NeurIPS 2022; facility location as in CRAIG): see the module docs.

    Budget b is split across the classes in proportion to their sizes
    (:func:`class_interleaving`); inside each class the greedy facility-location order
    (:func:`facility_location_order`) takes its share. Nested across budgets (budget
    b's indices are the first b of one order); deterministic, needs no rng, ignores the
    scores.

    Parameters
    ----------
    space : {"gradient", "features"}
        ``"gradient"`` (default, the paper's): points are compared by their log-loss
        gradient at the classifier fitted on the clean points
        (:func:`augmented_gradients`); ``"features"``: by their features (no fit; a
        gradient-free, k-medoids-like variant).
    source : {"augmented", "clean"}
        ``"augmented"`` (default, the paper's): a point's gradient (or features) is the
        mean over its K augmented copies; ``"clean"``: that of the clean point (CRAIG).
    weighting : {"coreset", "uniform"}
        ``"coreset"`` (default): each copy of a selected point j weighs
        ``gamma_j * |S| / sum_{s in S} gamma_s`` (:func:`coreset_gammas`, recomputed for
        every budget), i.e. gamma_j |S| / n once every class has a selected point: the
        copies' weights average 1, so the augmented part weighs K |S| in total as with
        ``"uniform"``, and the originals keep weight 1. It is the default because the
        method's guarantee is for the weighted coreset (sum_j gamma_j g_j approximates
        the full gradient sum); unweighted, a coreset over-represents isolated points.
        ``"uniform"``: every row weight 1.

    Examples
    --------
    >>> X = np.array([[-3.0], [-2.9], [-1], [1], [2.9], [3]])
    >>> p = SelectionProblem(X, np.array([0, 0, 0, 1, 1, 1]), np.ones(6), X[:, None, :])
    >>> sel = CoresetPolicy(space="features").select(p, [2, 4])
    >>> sel[4].indices.tolist(), np.round(sel[4].copy_weights, 3).tolist()
    ([1, 4, 2, 3], [1.333, 1.333, 0.667, 0.667])
    """

    name = "coreset"
    deterministic = True

    def __init__(
        self, space: str = "gradient", source: str = "augmented", weighting: str = "coreset"
    ) -> None:
        if space not in SPACES:
            raise LeanaugError(
                f"coreset policy: unknown space {space!r}; valid: {', '.join(SPACES)}"
            )
        if source not in SOURCES:
            raise LeanaugError(
                f"coreset policy: unknown source {source!r}; valid: {', '.join(SOURCES)}"
            )
        self.space = space
        self.source = source
        self.weighting = check_weighting(weighting, self.name, CORESET_WEIGHTINGS)

    def embedding(
        self, problem: SelectionProblem, members: np.ndarray, clf: LogisticClassifier | None
    ) -> np.ndarray:
        """(m, P): the vectors the points ``members`` are compared by."""
        if self.source == "augmented":
            points = problem.augmented_features[members]
        else:
            points = problem.features[members][:, None, :]
        if self.space == "features":
            return points.mean(axis=1)
        return augmented_gradients(clf, points, problem.labels[members])

    def weighted_coresets(
        self, problem: SelectionProblem, budgets: Sequence[int]
    ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """``{b: (indices, gamma)}``: budget b's points in selection order and their
        gammas (aligned with them; within each class they sum to the class size when
        the class has a selected point)."""
        budgets = check_budgets(budgets, problem.n)
        _, label_of, sizes = np.unique(problem.labels, return_inverse=True, return_counts=True)
        top = budgets[-1]
        slots = class_interleaving(sizes, top)
        counts = {b: np.bincount(slots[:b], minlength=sizes.size) for b in budgets}
        clf = None
        if self.space == "gradient" and top > 0:
            clf = problem.make_classifier().fit(problem.features, problem.labels)
        order = np.empty(top, dtype=np.intp)
        gammas = {b: np.zeros(b, dtype=np.int64) for b in budgets}
        for c in range(sizes.size):
            at = np.flatnonzero(slots == c)  # this class's positions in the global order
            if at.size == 0:
                continue
            members = np.flatnonzero(label_of == c)
            # float64 (m, m), one class at a time: 288 MB for a class of 6,000 points
            D = euclidean_distances(self.embedding(problem, members, clf))
            within = facility_location_order(D, at.size)
            order[at] = members[within]
            class_gammas = coreset_gammas(D, within, (counts[b][c] for b in budgets))
            for b in budgets:
                gammas[b][at[: counts[b][c]]] = class_gammas[counts[b][c]]
            del D
        return {b: (order[:b].copy(), gammas[b]) for b in budgets}

    def select(
        self,
        problem: SelectionProblem,
        budgets: Sequence[int],
        rng: np.random.Generator | None = None,
    ) -> dict[int, Selection]:
        out = {}
        for b, (indices, gamma) in self.weighted_coresets(problem, budgets).items():
            if self.weighting == "uniform":
                out[b] = Selection(indices)
                continue
            weights = gamma * (b / gamma.sum()) if b else np.zeros(0)
            out[b] = Selection(indices, "coreset", weights)
        return out
