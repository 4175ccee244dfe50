"""Per-point importance scores for augmentation subsampling (registry ``SCORES``).

``SCORES.get(name)(**params).score(clf, X, y, sample_weight=None, rng=None)`` returns one
nonnegative float per training point; ``clf`` is the
:class:`~leanaug.classifier.LogisticClassifier` fitted on (X, y, sample_weight).
Names: ``loss``, ``influence``, ``loo``, ``margin``, ``random``.
"""

from leanaug.scores import influence, loo, loss, margin, random  # noqa: F401  (register)
from leanaug.scores.base import SCORES, Score, ScoreFn, check_scores, score_function
from leanaug.scores.influence import (
    InfluenceScore,
    influence_parameter_changes,
    logistic_curvature,
    parameter_vector,
    self_influence,
)
from leanaug.scores.loo import LOOScore, loo_loss_changes, loo_parameter_changes
from leanaug.scores.loss import LossScore
from leanaug.scores.margin import (
    MarginExpScore,
    MarginScore,
    fit_linear_svc,
    svc_margins,
    svm_margins,
)
from leanaug.scores.random import RandomScore

__all__ = [
    "SCORES",
    "InfluenceScore",
    "LOOScore",
    "LossScore",
    "MarginExpScore",
    "MarginScore",
    "RandomScore",
    "Score",
    "ScoreFn",
    "check_scores",
    "fit_linear_svc",
    "influence_parameter_changes",
    "logistic_curvature",
    "loo_loss_changes",
    "loo_parameter_changes",
    "parameter_vector",
    "score_function",
    "self_influence",
    "svc_margins",
    "svm_margins",
]
