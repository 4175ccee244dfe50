"""Random score: i.i.d. uniform values, the no-information baseline."""

from __future__ import annotations

import numpy as np

from leanaug.classifier import LogisticClassifier
from leanaug.errors import LeanaugError
from leanaug.scores.base import SCORES, Score


@SCORES.register("random")
class RandomScore(Score):
    """Uniform(0, 1) scores drawn from ``rng`` (required: there is no hidden global seed)."""

    name = "random"
    stochastic = True

    def _score(self, clf: LogisticClassifier, X, y, sample_weight, rng) -> np.ndarray:  # noqa: ANN001
        if rng is None:
            raise LeanaugError("the random score needs an rng (numpy Generator); pass rng=...")
        return rng.uniform(size=X.shape[0])
