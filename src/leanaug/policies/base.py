"""Selection problems, selections, budgets and the policy registry.

A policy picks which training points get their K augmented copies added. It sees a
:class:`SelectionProblem` and returns ``{budget: Selection}``. The augmented training
set for a selection is built by :func:`augmented_training_set`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from leanaug.classifier import LogisticClassifier
from leanaug.errors import LeanaugError
from leanaug.registry import Registry
from leanaug.scores.base import ScoreFn, check_scores

__all__ = [
    "POLICIES",
    "POLICY_WEIGHTINGS",
    "SIGNS",
    "WEIGHTINGS",
    "OrderPolicy",
    "Policy",
    "Selection",
    "SelectionProblem",
    "augmented_training_set",
    "check_budgets",
    "check_sign",
    "check_weighting",
    "proportional_order",
    "require_rng",
    "signed_weights",
]

POLICIES: Registry[type[Policy]] = Registry("policy")

#: How :func:`augmented_training_set` weights a selection's rows (see :class:`Selection`).
WEIGHTINGS = ("uniform", "downweight", "coreset")
#: The weightings a policy's ``weighting`` parameter takes by default (``"coreset"``
#: needs per-point weights, which only the ``coreset`` policy computes).
POLICY_WEIGHTINGS = ("uniform", "downweight")

#: How a policy with a ``sign`` parameter reads a signed score (``influence-test``):
#: ``"magnitude"`` ranks by |s| (as the paper does with its scores); ``"helpful-first"``
#: puts the points with s > 0 (leaving them out raises the validation loss) first, by
#: signed score; ``"skip-harmful"`` selects only those, so a selection may hold fewer
#: points than its budget.
SIGNS = ("magnitude", "helpful-first", "skip-harmful")


@dataclass
class SelectionProblem:
    """Everything a policy may look at.

    ``features`` (n, d) clean training features; ``labels`` (n,); ``scores`` (n,) >= 0
    from the classifier fitted on the clean points; ``augmented_features`` (n, K, d),
    the features of each point's K augmented copies; ``make_classifier()`` returns a
    fresh unfitted classifier (re-scoring policies refit with it); ``score_fn(clf, X, y,
    w)`` re-scores the rows of an augmented training set (None if the policy does not
    re-score; see :func:`leanaug.scores.score_function`).
    """

    features: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    augmented_features: np.ndarray
    make_classifier: Callable[[], LogisticClassifier] = field(default=LogisticClassifier)
    score_fn: ScoreFn | None = None
    signed_scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.features = np.asarray(self.features, dtype=np.float64)
        if self.features.ndim != 2:
            raise LeanaugError(f"features must be (n, d), got shape {self.features.shape}")
        n, d = self.features.shape
        if not np.all(np.isfinite(self.features)):
            raise LeanaugError("features contain NaN or infinite values")
        if n == 0:
            raise LeanaugError("the selection problem has no training points")
        self.labels = np.asarray(self.labels)
        if self.labels.shape != (n,):
            raise LeanaugError(f"labels must have shape ({n},), got {self.labels.shape}")
        self.scores = check_scores(self.scores, n, "scores")
        self.augmented_features = np.asarray(self.augmented_features, dtype=np.float64)
        a = self.augmented_features
        if a.ndim != 3 or a.shape[0] != n or a.shape[2] != d:
            raise LeanaugError(f"augmented_features must be (n={n}, K, d={d}), got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise LeanaugError("augmented_features contain NaN or infinite values")
        if self.signed_scores is not None:
            self.signed_scores = check_scores(self.signed_scores, n, "signed scores", signed=True)

    @property
    def n(self) -> int:
        return self.features.shape[0]

    @property
    def n_copies(self) -> int:
        return self.augmented_features.shape[1]


@dataclass
class Selection:
    """Selected training points (in selection order) and how to weight them.

    ``weighting="uniform"``: every row weight 1. ``"downweight"``: a selected original
    and its K copies share weight ``1 / (K + 1)`` each. ``"coreset"``: originals weight
    1, and each of the K copies of ``indices[t]`` weight ``copy_weights[t]`` (one finite
    weight >= 0 per selected point, aligned with ``indices``; the ``coreset`` policy
    sets them). ``copy_weights`` is required with ``"coreset"`` and refused otherwise.

    Examples
    --------
    >>> len(Selection([4, 1, 2], weighting="downweight"))
    3
    >>> Selection([4, 1], "coreset", copy_weights=[1.5, 0.5]).sorted().copy_weights.tolist()
    [0.5, 1.5]
    """

    indices: np.ndarray
    weighting: str = "uniform"
    copy_weights: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.indices = np.asarray(self.indices, dtype=np.intp).reshape(-1)
        if self.weighting not in WEIGHTINGS:
            raise LeanaugError(
                f"unknown weighting {self.weighting!r}; valid: {', '.join(WEIGHTINGS)}"
            )
        if self.weighting != "coreset":
            if self.copy_weights is not None:
                raise LeanaugError(
                    f"copy_weights are only used with weighting='coreset', not {self.weighting!r}"
                )
            return
        if self.copy_weights is None:
            raise LeanaugError("weighting='coreset' needs copy_weights, one per selected point")
        self.copy_weights = np.asarray(self.copy_weights, dtype=np.float64).reshape(-1)
        if self.copy_weights.shape != self.indices.shape:
            raise LeanaugError(
                f"copy_weights must have one entry per selected point ({self.indices.size}), "
                f"got {self.copy_weights.size}"
            )
        if not np.all(np.isfinite(self.copy_weights)) or np.any(self.copy_weights < 0):
            raise LeanaugError("copy_weights must be finite and >= 0")

    def __len__(self) -> int:
        return int(self.indices.size)

    def sorted(self) -> Selection:
        """The same selection in increasing index order (``copy_weights`` follow their
        points). A fit depends on the set of augmented points, not on their order."""
        order = np.argsort(self.indices, kind="stable")
        weights = None if self.copy_weights is None else self.copy_weights[order]
        return Selection(self.indices[order], self.weighting, weights)


def augmented_training_set(
    problem: SelectionProblem, selection: Selection
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X, y, w)``: the n originals first (index order), then the K copies of each
    selected point, point by point in selection order (a point's copies contiguous).

    Weights are 1; with ``weighting="downweight"`` a selected original and each of its
    copies get ``1 / (K + 1)``, so the weights always sum to n; with
    ``weighting="coreset"`` the originals get 1 and each copy of ``indices[t]`` gets
    ``copy_weights[t]``.
    """
    idx = selection.indices
    n, K = problem.n, problem.n_copies
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise LeanaugError(f"selection indices must lie in [0, {n}), got {idx.min()}..{idx.max()}")
    if np.unique(idx).size != idx.size:
        raise LeanaugError("selection indices contain duplicates")
    d = problem.features.shape[1]
    X = np.concatenate([problem.features, problem.augmented_features[idx].reshape(-1, d)])
    y = np.concatenate([problem.labels, np.repeat(problem.labels[idx], K)])
    w = np.ones(X.shape[0])
    if selection.weighting == "downweight":
        share = 1.0 / (K + 1)
        w[idx] = share
        w[n:] = share
    elif selection.weighting == "coreset":
        w[n:] = np.repeat(selection.copy_weights, K)
    return X, y, w


def check_budgets(budgets: Sequence[int], n: int) -> list[int]:
    """Sorted unique budgets, each an integer in [0, n]; else :class:`LeanaugError`."""
    if isinstance(budgets, int | np.integer):
        budgets = [int(budgets)]
    budgets = list(budgets)
    if not budgets:
        raise LeanaugError("no budgets given; pass at least one number of points to augment")
    out = []
    for b in budgets:
        if isinstance(b, bool) or not isinstance(b, int | np.integer):
            if isinstance(b, float) and b.is_integer():
                b = int(b)
            else:
                raise LeanaugError(f"budget {b!r} is not an integer")
        b = int(b)
        if b < 0:
            raise LeanaugError(f"budget {b} is negative")
        if b > n:
            raise LeanaugError(f"budget {b} is larger than the number of training points ({n})")
        out.append(b)
    return sorted(set(out))


def check_weighting(weighting: str, who: str, valid: Sequence[str] = POLICY_WEIGHTINGS) -> str:
    """``weighting`` if it is one of ``valid``, else :class:`LeanaugError`."""
    if weighting not in valid:
        raise LeanaugError(
            f"{who} policy: unknown weighting {weighting!r}; valid: {', '.join(valid)}"
        )
    return weighting


def check_sign(sign: str, who: str) -> str:
    """``sign`` if it is one of :data:`SIGNS`, else :class:`LeanaugError`."""
    if sign not in SIGNS:
        raise LeanaugError(f"{who} policy: unknown sign {sign!r}; valid: {', '.join(SIGNS)}")
    return sign


def signed_weights(problem: SelectionProblem, sign: str, who: str) -> np.ndarray:
    """The signed scores a ``sign`` mode other than ``"magnitude"`` reads; an error
    naming the policy when the problem's score is unsigned."""
    if problem.signed_scores is None:
        raise LeanaugError(
            f"{who} policy: sign={sign!r} needs a signed score (influence-test); this score "
            "has no sign, use sign=magnitude with it"
        )
    return problem.signed_scores


def require_rng(rng: np.random.Generator | None, who: str) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise LeanaugError(
            f"the {who} policy needs rng=np.random.Generator, got {type(rng).__name__}"
        )
    return rng


def proportional_order(
    weights: np.ndarray, size: int, rng: np.random.Generator, what: str = "score"
) -> np.ndarray:
    """``size`` indices drawn one by one without replacement, P(i) proportional to weights[i]
    among the points not yet drawn (sequential draws; numpy's ``choice(replace=False,
    p=...)`` gives exactly this order).

    Points of weight 0 have probability 0; if ``size`` exceeds the number of positive
    weights they follow the positive ones in uniformly random order (the limit of a
    tiny equal weight). All weights 0 is an error.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise LeanaugError(f"{what} must be finite and >= 0 for proportional sampling")
    total = weights.sum()
    if not total > 0:
        raise LeanaugError(f"{what} is zero everywhere; proportional sampling needs a positive sum")
    positive = np.flatnonzero(weights > 0)
    m = min(size, positive.size)
    first = positive[
        rng.choice(
            positive.size, size=m, replace=False, p=weights[positive] / weights[positive].sum()
        )
    ]
    if size <= m:
        return first
    zeros = np.flatnonzero(weights == 0)
    return np.concatenate([first, rng.permutation(zeros)[: size - m]])


class Policy:
    """Base class: parameters in ``__init__``, :meth:`select` returns ``{budget: Selection}``."""

    name = "policy"
    weighting = "uniform"
    #: True when the selection does not use the rng (given the scores).
    deterministic = False

    def select(
        self,
        problem: SelectionProblem,
        budgets: Sequence[int],
        rng: np.random.Generator | None = None,
    ) -> dict[int, Selection]:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


class OrderPolicy(Policy):
    """A nested policy: one order of the points; budget b takes its first b entries.

    An order may be shorter than the largest budget only where the policy says so
    (``stops_short``, e.g. ``sign="skip-harmful"``): budgets beyond its length then get
    the whole order.
    """

    #: True when :meth:`order` may return fewer points than asked for.
    stops_short = False

    def order(
        self, problem: SelectionProblem, size: int, rng: np.random.Generator | None
    ) -> np.ndarray:
        """The first ``size`` points in selection order."""
        raise NotImplementedError

    def select(
        self,
        problem: SelectionProblem,
        budgets: Sequence[int],
        rng: np.random.Generator | None = None,
    ) -> dict[int, Selection]:
        budgets = check_budgets(budgets, problem.n)
        order = np.asarray(self.order(problem, max(budgets), rng), dtype=np.intp)
        short = order.size < max(budgets) and not self.stops_short
        if short or order.size > max(budgets) or np.unique(order).size != order.size:
            raise AssertionError(
                f"{type(self).__name__} produced an invalid order"
            )  # a bug, not user input
        return {b: Selection(order[:b].copy(), self.weighting) for b in budgets}
