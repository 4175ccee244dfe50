"""Nested policies that order the points once: random, proportional, inverse, topk,
bottomk, downweight."""

from __future__ import annotations

import numpy as np

from leanaug.errors import LeanaugError
from leanaug.policies.base import (
    POLICIES,
    OrderPolicy,
    SelectionProblem,
    check_sign,
    check_weighting,
    proportional_order,
    require_rng,
    signed_weights,
)


@POLICIES.register("random")
class RandomPolicy(OrderPolicy):
    """A uniformly random permutation (ignores the scores).

    Examples
    --------
    >>> import numpy as np
    >>> p = SelectionProblem(np.eye(3), np.array([0, 1, 1]), np.ones(3), np.eye(3)[:, None, :])
    >>> sorted(RandomPolicy().select(p, [3], np.random.default_rng(0))[3].indices.tolist())
    [0, 1, 2]
    """

    name = "random"

    def order(self, problem: SelectionProblem, size: int, rng) -> np.ndarray:  # noqa: ANN001
        return require_rng(rng, self.name).permutation(problem.n)[:size]


@POLICIES.register("proportional")
class ProportionalPolicy(OrderPolicy):
    """Sequential draws without replacement, P(i) proportional to score_i among the
    remaining points (the paper's random_proportional).

    Zero-score points come last, in random order (see
    :func:`~leanaug.policies.base.proportional_order`).

    Parameters
    ----------
    sign : {"magnitude", "helpful-first", "skip-harmful"}
        For a signed score (``influence-test``): ``"magnitude"`` draws proportionally to
        |s|; ``"helpful-first"`` draws the points with s > 0 proportionally to s, then
        the others in random order; ``"skip-harmful"`` draws only the points with s > 0
        (a budget beyond their number gets all of them and no more).

    Examples
    --------
    >>> import numpy as np
    >>> p = SelectionProblem(np.eye(3), np.array([0, 1, 1]), np.array([0.0, 1.0, 0.0]),
    ...                      np.eye(3)[:, None, :])
    >>> int(ProportionalPolicy().select(p, [1], np.random.default_rng(0))[1].indices[0])
    1
    """

    name = "proportional"

    def __init__(self, sign: str = "magnitude") -> None:
        self.sign = check_sign(sign, self.name)

    @property
    def stops_short(self) -> bool:  # type: ignore[override]
        return self.sign == "skip-harmful"

    def order(self, problem: SelectionProblem, size: int, rng) -> np.ndarray:  # noqa: ANN001
        rng = require_rng(rng, self.name)
        if self.sign == "magnitude":
            return proportional_order(problem.scores, size, rng)
        s = signed_weights(problem, self.sign, self.name)
        helpful = np.flatnonzero(s > 0)
        first = helpful[:0]
        if helpful.size:
            first = helpful[proportional_order(s[helpful], min(size, helpful.size), rng)]
        if self.sign == "skip-harmful" or first.size == size:
            return first
        rest = rng.permutation(np.flatnonzero(s <= 0))
        return np.concatenate([first, rest[: size - first.size]])


@POLICIES.register("inverse")
class InversePolicy(OrderPolicy):
    """Sequential draws without replacement, P(i) proportional to 1 / score_i.

    Points with score 0 (infinite inverse) come first in random order (the limit of a
    vanishing score), then the rest proportionally to 1 / score.

    Examples
    --------
    >>> import numpy as np
    >>> p = SelectionProblem(np.eye(3), np.array([0, 1, 1]), np.array([0.0, 1.0, 2.0]),
    ...                      np.eye(3)[:, None, :])
    >>> int(InversePolicy().select(p, [1], np.random.default_rng(0))[1].indices[0])
    0
    """

    name = "inverse"

    def order(self, problem: SelectionProblem, size: int, rng) -> np.ndarray:  # noqa: ANN001
        rng = require_rng(rng, self.name)
        s = problem.scores
        zero = np.flatnonzero(s == 0)
        first = rng.permutation(zero)[:size]
        if first.size == size:
            return first
        inv = np.zeros_like(s)
        pos = s > 0
        inv[pos] = 1.0 / s[pos]
        if not np.all(np.isfinite(inv)):
            raise LeanaugError("1 / score overflows (scores too close to 0); rescale the scores")
        return np.concatenate([first, proportional_order(inv, size - first.size, rng, "1 / score")])


@POLICIES.register("topk")
class TopKPolicy(OrderPolicy):
    """Deterministic: highest score first (ties by lower index). Needs no rng.

    Parameters
    ----------
    weighting : {"uniform", "downweight"}
        ``"downweight"``: each selected original and its K copies get weight
        1 / (K + 1), as the ``downweight`` policy does (top-k + downweight).
    sign : {"magnitude", "helpful-first", "skip-harmful"}
        For a signed score (``influence-test``): ``"magnitude"`` ranks by |s|;
        ``"helpful-first"`` by the signed score (most helpful first, most harmful
        last); ``"skip-harmful"`` takes only points with s > 0, most helpful first (a
        budget beyond their number gets all of them and no more).

    Examples
    --------
    >>> import numpy as np
    >>> p = SelectionProblem(np.eye(4), np.array([0, 1, 1, 0]),
    ...                      np.array([0.3, 0.9, 0.1, 0.5]), np.eye(4)[:, None, :])
    >>> TopKPolicy().select(p, [3])[3].indices.tolist()
    [1, 3, 0]
    """

    name = "topk"
    deterministic = True
    _descending = True

    def __init__(self, weighting: str = "uniform", sign: str = "magnitude") -> None:
        self.weighting = check_weighting(weighting, self.name)
        self.sign = check_sign(sign, self.name)

    @property
    def stops_short(self) -> bool:  # type: ignore[override]
        return self.sign == "skip-harmful"

    def order(self, problem: SelectionProblem, size: int, rng) -> np.ndarray:  # noqa: ANN001
        if self.sign == "magnitude":
            s = problem.scores
        else:
            s = signed_weights(problem, self.sign, self.name)
        key = -s if self._descending else s
        order = np.argsort(key, kind="stable")
        if self.sign == "skip-harmful":
            order = order[s[order] > 0]
        return order[:size]


@POLICIES.register("bottomk")
class BottomKPolicy(TopKPolicy):
    """Deterministic: lowest score first (ties by lower index), the reverse of ``topk``'s
    criterion; the same ``weighting`` and ``sign`` parameters (with a signed score,
    ``"helpful-first"`` here means least helpful, i.e. most harmful, first; and
    ``"skip-harmful"`` takes the points with s > 0, least helpful first).

    Examples
    --------
    >>> import numpy as np
    >>> p = SelectionProblem(np.eye(4), np.array([0, 1, 1, 0]),
    ...                      np.array([0.3, 0.9, 0.1, 0.5]), np.eye(4)[:, None, :])
    >>> BottomKPolicy().select(p, [3])[3].indices.tolist()
    [2, 0, 3]
    """

    name = "bottomk"
    _descending = False


@POLICIES.register("downweight")
class DownweightPolicy(ProportionalPolicy):
    """Proportional order, and each selected original and its K copies get weight
    1 / (K + 1) (``Selection.weighting == "downweight"``), as in the paper. The same
    ``sign`` parameter as ``proportional``.

    Examples
    --------
    >>> import numpy as np
    >>> p = SelectionProblem(np.eye(3), np.array([0, 1, 1]), np.array([0.2, 1.0, 0.5]),
    ...                      np.eye(3)[:, None, :])
    >>> DownweightPolicy().select(p, [2], np.random.default_rng(0))[2].weighting
    'downweight'
    """

    name = "downweight"
    weighting = "downweight"
