"""Per-point importance scores for augmentation subsampling (registry ``SCORES``).

``SCORES.get(name)(**params).score(clf, X, y, sample_weight=None, rng=None)`` returns one
nonnegative float per training point; ``clf`` is the
:class:`~leanaug.classifier.LogisticClassifier` fitted on (X, y, sample_weight).
Names: ``loss``, ``influence``, ``influence-test`` (signed), ``loo``, ``margin``,
``margin-exp``, ``random``.
"""

from leanaug.scores import influence, loo, loss, margin, random, validation  # noqa: F401
from leanaug.scores.base import SCORES, Score, ScoreFn, check_scores, score_function
from leanaug.scores.influence import (
    InfluenceScore,
    influence_parameter_changes,
    leverage_self_influence,
    logistic_curvature,
    parameter_vector,
    self_influence,
)
from leanaug.scores.loo import (
    LOOScore,
    loo_loss_changes,
    loo_parameter_changes,
    loo_validation_loss_changes,
)
from leanaug.scores.loss import LossScore
from leanaug.scores.margin import (
    MarginExpScore,
    MarginScore,
    fit_linear_svc,
    svc_margins,
    svm_margins,
)
from leanaug.scores.random import RandomScore
from leanaug.scores.validation import (
    ValidationInfluenceScore,
    mean_loss_gradient,
    validation_influence,
)

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
    "ValidationInfluenceScore",
    "check_scores",
    "fit_linear_svc",
    "influence_parameter_changes",
    "leverage_self_influence",
    "logistic_curvature",
    "loo_loss_changes",
    "loo_parameter_changes",
    "loo_validation_loss_changes",
    "mean_loss_gradient",
    "parameter_vector",
    "score_function",
    "self_influence",
    "svc_margins",
    "svm_margins",
    "validation_influence",
]
