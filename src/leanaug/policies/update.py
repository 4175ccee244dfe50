"""The ``update`` policy: refit and re-score as the augmented set grows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from leanaug.errors import LeanaugError
from leanaug.policies.base import (
    POLICIES,
    Policy,
    Selection,
    SelectionProblem,
    augmented_training_set,
    check_budgets,
    check_weighting,
    proportional_order,
    require_rng,
)
from leanaug.scores.base import check_scores

MODES = ("proportional", "greedy")


@POLICIES.register("update")
class UpdatePolicy(Policy):
    """Pick points in groups; before each group after the first, refit the classifier
    on the current augmented training set and re-score the remaining originals.

    Parameters
    ----------
    k:
        Re-score after every ``k`` additions (``k=1``: after every point). ``None``
        (default) re-scores at each requested budget instead, as the paper's "update"
        did (re-score at each budget checkpoint, redraw among the remaining points).
    mode:
        ``"proportional"``: draw the group without replacement with probability
        proportional to the current scores (zero-score points last, see
        :func:`~leanaug.policies.base.proportional_order`); ``"greedy"``: take the
        highest current scores (ties by lower index).
    weighting : {"uniform", "downweight"}
        ``"downweight"``: each selected original and its K copies get weight
        1 / (K + 1), in the re-scoring fits and in the returned selections
        (update + downweight).

    The first group uses ``problem.scores`` (the classifier fitted on the clean points,
    i.e. the augmented set of the empty selection). Each later group costs one
    ``problem.make_classifier().fit(X, y, w)`` on :func:`augmented_training_set` and one
    ``problem.score_fn(clf, X, y, w)``, of whose rows the first n (the originals) are
    used: ``ceil(B / k) - 1`` refits for a largest budget B. Nested across budgets.
    A signed score (``influence-test``) is re-scored and used by its magnitude.

    Examples
    --------
    >>> import numpy as np
    >>> from leanaug.scores import SCORES, score_function
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(20, 2))
    >>> y = (X[:, 0] > 0).astype(int)
    >>> p = SelectionProblem(X, y, rng.uniform(0.1, 1, 20), X[:, None, :] + 0.1,
    ...                      score_fn=score_function(SCORES.get("loss")()))
    >>> sel = UpdatePolicy(k=2, mode="greedy", weighting="downweight").select(p, [4])
    >>> len(sel[4]), sel[4].weighting
    (4, 'downweight')
    """

    name = "update"

    def __init__(
        self, k: int | None = None, mode: str = "proportional", weighting: str = "uniform"
    ) -> None:
        if k is not None and (isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1):
            raise LeanaugError(f"update policy: k must be a positive integer or None, got {k!r}")
        if mode not in MODES:
            raise LeanaugError(f"update policy: unknown mode {mode!r}; valid: {', '.join(MODES)}")
        self.k = None if k is None else int(k)
        self.mode = mode
        self.weighting = check_weighting(weighting, self.name)

    @property
    def deterministic(self) -> bool:  # type: ignore[override]
        """Greedy mode uses no randomness (a random score_fn brings its own rng)."""
        return self.mode == "greedy"

    def select(
        self,
        problem: SelectionProblem,
        budgets: Sequence[int],
        rng: np.random.Generator | None = None,
    ) -> dict[int, Selection]:
        budgets = check_budgets(budgets, problem.n)
        if self.mode == "proportional":
            rng = require_rng(rng, self.name)
        top = budgets[-1]
        if self.k is None:
            stops = [b for b in budgets if b > 0]
        else:
            stops = [*range(self.k, top, self.k), top] if top > 0 else []
        if len(stops) > 1 and problem.score_fn is None:
            raise LeanaugError("the update policy re-scores: the SelectionProblem needs a score_fn")
        n = problem.n
        scores = problem.scores
        remaining = np.ones(n, dtype=bool)
        order: list[int] = []
        for stop in stops:
            need = stop - len(order)
            if need <= 0:
                continue
            if order:
                scores = self._rescore(problem, np.asarray(order))
            cand = np.flatnonzero(remaining)
            if self.mode == "greedy":
                picked = cand[np.argsort(-scores[cand], kind="stable")[:need]]
            else:
                picked = cand[
                    proportional_order(scores[cand], need, rng, "score of the remaining points")
                ]
            order.extend(int(i) for i in picked)
            remaining[picked] = False
        arr = np.asarray(order, dtype=np.intp)
        return {b: Selection(arr[:b].copy(), self.weighting) for b in budgets}

    def _rescore(self, problem: SelectionProblem, selected: np.ndarray) -> np.ndarray:
        X, y, w = augmented_training_set(problem, Selection(selected, self.weighting))
        clf = problem.make_classifier().fit(X, y, sample_weight=w)
        assert problem.score_fn is not None
        s = np.asarray(problem.score_fn(clf, X, y, w), dtype=np.float64)
        if s.shape != (X.shape[0],):
            raise LeanaugError(
                f"score_fn returned shape {s.shape}; expected one score per row of the augmented set ({X.shape[0]},)"
            )
        if getattr(problem.score_fn, "signed", False):
            s = np.abs(s)
        return check_scores(s[: problem.n], problem.n, "re-computed score")
