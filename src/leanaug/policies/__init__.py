"""Augmentation subsampling policies (registry ``POLICIES``).

``POLICIES.get(name)(**params).select(problem, budgets, rng) -> {budget: Selection}``;
``augmented_training_set(problem, selection) -> (X, y, w)``. Names: ``random``,
``proportional``, ``inverse``, ``topk``, ``bottomk``, ``update``, ``downweight``,
``cluster``, ``cluster-topk``, ``dpp``, ``sv``, ``vsv``, ``coreset``. All are nested
across budgets (a smaller budget's selection is a prefix of a larger one's) except
``dpp`` (a fresh k-DPP draw per budget) and ``vsv`` (all support vectors at every
budget > 0); ``coreset``'s copy weights are recomputed for each budget.
"""

from leanaug.policies import cluster, coreset, dpp, simple, sv, update  # noqa: F401  (register)
from leanaug.policies.base import (
    POLICIES,
    SIGNS,
    OrderPolicy,
    Policy,
    Selection,
    SelectionProblem,
    augmented_training_set,
    check_budgets,
    proportional_order,
)
from leanaug.policies.cluster import ClusterPolicy, ClusterTopKPolicy, round_robin_order
from leanaug.policies.coreset import (
    CoresetPolicy,
    augmented_gradients,
    class_interleaving,
    coreset_gammas,
    facility_location_order,
)
from leanaug.policies.dpp import DPPPolicy, dpp_kernel
from leanaug.policies.simple import (
    BottomKPolicy,
    DownweightPolicy,
    InversePolicy,
    ProportionalPolicy,
    RandomPolicy,
    TopKPolicy,
)
from leanaug.policies.sv import SupportVectorPolicy, VSVPolicy
from leanaug.policies.update import UpdatePolicy

__all__ = [
    "POLICIES",
    "SIGNS",
    "BottomKPolicy",
    "ClusterPolicy",
    "ClusterTopKPolicy",
    "CoresetPolicy",
    "DPPPolicy",
    "DownweightPolicy",
    "InversePolicy",
    "OrderPolicy",
    "Policy",
    "ProportionalPolicy",
    "RandomPolicy",
    "Selection",
    "SelectionProblem",
    "SupportVectorPolicy",
    "TopKPolicy",
    "UpdatePolicy",
    "VSVPolicy",
    "augmented_gradients",
    "augmented_training_set",
    "check_budgets",
    "class_interleaving",
    "coreset_gammas",
    "dpp_kernel",
    "facility_location_order",
    "proportional_order",
    "round_robin_order",
]
