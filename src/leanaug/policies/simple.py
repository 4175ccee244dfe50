"""Nested policies that order the points once: random, proportional, inverse, topk, downweight."""

from __future__ import annotations

import numpy as np

from leanaug.errors import LeanaugError
from leanaug.policies.base import (
    POLICIES,
    OrderPolicy,
    SelectionProblem,
    proportional_order,
    require_rng,
)


@POLICIES.register("random")
class RandomPolicy(OrderPolicy):
    """A uniformly random permutation (ignores the scores)."""

    name = "random"

    def order(self, problem: SelectionProblem, size: int, rng) -> np.ndarray:  # noqa: ANN001
        return require_rng(rng, self.name).permutation(problem.n)[:size]


@POLICIES.register("proportional")
class ProportionalPolicy(OrderPolicy):
    """Sequential draws without replacement, P(i) proportional to score_i among the
    remaining points (the paper's random_proportional). Zero-score points come last,
    in random order (see :func:`~leanaug.policies.base.proportional_order`)."""

    name = "proportional"

    def order(self, problem: SelectionProblem, size: int, rng) -> np.ndarray:  # noqa: ANN001
        return proportional_order(problem.scores, size, require_rng(rng, self.name))


@POLICIES.register("inverse")
class InversePolicy(OrderPolicy):
    """Sequential draws without replacement, P(i) proportional to 1 / score_i.

    Points with score 0 (infinite inverse) come first in random order (the limit of a
    vanishing score), then the rest proportionally to 1 / score.
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
    """Deterministic: highest score first (ties by lower index). Needs no rng."""

    name = "topk"
    deterministic = True

    def order(self, problem: SelectionProblem, size: int, rng) -> np.ndarray:  # noqa: ANN001
        return np.argsort(-problem.scores, kind="stable")[:size]


@POLICIES.register("downweight")
class DownweightPolicy(ProportionalPolicy):
    """Proportional order, and each selected original and its K copies get weight
    1 / (K + 1) (``Selection.weighting == "downweight"``), as in the paper."""

    name = "downweight"
    weighting = "downweight"
