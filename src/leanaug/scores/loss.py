"""Loss score: the per-point log loss -log p(y_i | x_i) under the fitted classifier."""

from __future__ import annotations

import numpy as np

from leanaug.classifier import LogisticClassifier
from leanaug.scores.base import SCORES, Score


@SCORES.register("loss")
class LossScore(Score):
    """``-log p(y_i | x_i)``, unweighted and not scaled by ``C`` (the paper's loss score).

    Computed from the logits with a stable log-sigmoid / log-softmax, so a confidently
    right point gets a tiny (possibly exactly 0) score rather than NaN.
    """

    name = "loss"

    def _score(self, clf: LogisticClassifier, X, y, sample_weight, rng) -> np.ndarray:  # noqa: ANN001
        return clf.log_loss_per_point(X, y)
