"""The ``dpp`` policy: an exact k-DPP over the points, quality = score, diversity = features.

Kernel (as in the paper)::

    L = diag(s) Phi Phi^T diag(s) + eps I,    Phi = feature_scale * (L2-normalised features)

and a budget k draws S with ``P(S) proportional to det(L_S)`` over |S| = k. The paper used
``feature_scale = 1e3`` and ``eps = 1e-3`` (the defaults here). Scaling L by a constant
does not change a k-DPP, so only ``eps / feature_scale^2`` matters relative to the
squared scores: with the paper's values the ridge is ~1e-9 relative, i.e. diversity
dominates until k exceeds the rank of Phi, after which the ridge lets more points in.

Sampling is exact, with DPPy: ``FiniteDPP('likelihood', L_eig_dec=(c * lambda, V))``
and ``sample_exact_k_dpp(size=k, random_state=...)``, one FiniteDPP per budget. The
eigendecomposition of L is computed once (scipy ``eigh``, largest eigenvalues first)
and shared; passing it instead of ``L=`` only avoids recomputing it. The constant c
(a k-DPP is unchanged by scaling L) is chosen per budget so that DPPy's float64 table
of elementary symmetric polynomials stays finite and nonzero. When no constant can do
that (k far above the rank of Phi with a tiny relative ridge: the polynomials span more
than float64's range), the same exact algorithm (Kulesza & Taskar 2012, Alg. 8,
eigenvector selection) runs with the polynomials in log space (hand-written, because
DPPy's float64 table would silently under/overflow and return a wrong sample), then
DPPy's projection-DPP sampler ``proj_dpp_sampler_eig``. ``policy.samplers_`` records
which path each budget took ("dppy", "log-space", or "all" when k = n).

``weighted=False`` drops the quality term: ``L = Phi Phi^T + eps I`` (diversity only,
the scores are not used). The feature part of L has rank at most d (the features'
dimension); a budget k above that rank is decided by the ridge ``eps I``, not by
diversity: the policy warns (``UserWarning``) when a budget exceeds it.

Each budget is a FRESH, independent draw: selections are NOT nested across budgets
(the paper did the same). Within a selection, indices are in the sampler's order.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import scipy.linalg
from dppy.exact_sampling import proj_dpp_sampler_eig
from dppy.finite_dpps import FiniteDPP

from leanaug.errors import LeanaugError
from leanaug.policies.base import (
    POLICIES,
    Policy,
    Selection,
    SelectionProblem,
    check_budgets,
    require_rng,
)

_LOG_RANGE = 600.0  # |log E| kept below this for DPPy's float64 table (e^709 overflows)


def _quality_features(
    features: np.ndarray, scores: np.ndarray | None, feature_scale: float
) -> np.ndarray:
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise LeanaugError("dpp policy: a feature vector is all zeros, it cannot be L2-normalised")
    phi = feature_scale * (features / norms)
    return phi if scores is None else scores[:, None] * phi


def dpp_kernel(
    features: np.ndarray,
    scores: np.ndarray | None,
    feature_scale: float = 1e3,
    eps: float = 1e-3,
) -> np.ndarray:
    """``diag(s) Phi Phi^T diag(s) + eps I`` with Phi the scaled, L2-normalised features;
    ``scores=None``: the unweighted ``Phi Phi^T + eps I``.

    Examples
    --------
    >>> dpp_kernel(np.array([[3.0, 4.0], [0.0, 2.0]]), None, feature_scale=1.0, eps=0.5)
    array([[1.5, 0.8],
           [0.8, 1.5]])
    """
    q = _quality_features(features, scores, feature_scale)
    L = q @ q.T
    L[np.diag_indices_from(L)] += eps
    return L


def log_elementary_symmetric(log_lam: np.ndarray, k: int) -> np.ndarray:
    """``logE[j, m] = log e_j(lambda_1..lambda_m)`` for j <= k, m <= N (-inf where 0).

    The recursion of DPPy's ``elementary_symmetric_polynomials``, in log space.
    """
    N = log_lam.size
    logE = np.full((k + 1, N + 1), -np.inf)
    logE[0, :] = 0.0
    for m in range(1, N + 1):
        logE[1:, m] = np.logaddexp(logE[1:, m - 1], log_lam[m - 1] + logE[:-1, m - 1])
    return logE


def _select_eigvecs_log(
    log_lam: np.ndarray, V: np.ndarray, k: int, logE: np.ndarray, rs
) -> np.ndarray:  # noqa: ANN001
    # Kulesza & Taskar Alg. 8: keep eigenvector m with prob lambda_m e_{j-1}(..m-1) / e_j(..m)
    chosen = []
    j = k
    for m in range(log_lam.size, 0, -1):
        if j == 0:
            break
        if j == m:  # must take all remaining (probability 1 up to round-off)
            chosen.extend(range(m - 1, -1, -1))
            break
        p = np.exp(log_lam[m - 1] + logE[j - 1, m - 1] - logE[j, m])
        if rs.rand() < p:
            chosen.append(m - 1)
            j -= 1
    return V[:, sorted(chosen)]


@POLICIES.register("dpp")
class DPPPolicy(Policy):
    """Exact k-DPP sample per budget (fresh draw each, NOT nested); see module doc.

    Parameters
    ----------
    feature_scale : float
        Phi = feature_scale * (L2-normalised features); the paper's 1e3.
    eps : float
        The ridge eps I; the paper's 1e-3.
    weighted : bool
        True: ``L = diag(s) Phi Phi^T diag(s) + eps I`` (the paper's); False:
        ``L = Phi Phi^T + eps I`` (the scores are ignored).

    ``samplers_`` records each budget's sampler path; ``feature_rank_`` the rank of the
    kernel's feature part (a budget above it triggers a ``UserWarning``).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(6, 3))
    >>> p = SelectionProblem(X, np.array([0, 1] * 3), np.ones(6), X[:, None, :])
    >>> sel = DPPPolicy(weighted=False).select(p, [2], rng)
    >>> len(sel[2])
    2
    """

    name = "dpp"

    def __init__(
        self, feature_scale: float = 1e3, eps: float = 1e-3, weighted: bool = True
    ) -> None:
        if not (np.isfinite(feature_scale) and feature_scale > 0):
            raise LeanaugError(f"dpp policy: feature_scale must be positive, got {feature_scale!r}")
        if not (np.isfinite(eps) and eps >= 0):
            raise LeanaugError(f"dpp policy: eps must be >= 0, got {eps!r}")
        self.feature_scale = feature_scale
        self.eps = eps
        self.weighted = bool(weighted)

    def kernel(self, problem: SelectionProblem) -> np.ndarray:
        """The L-ensemble kernel L (n, n)."""
        scores = problem.scores if self.weighted else None
        return dpp_kernel(problem.features, scores, self.feature_scale, self.eps)

    def select(
        self,
        problem: SelectionProblem,
        budgets: Sequence[int],
        rng: np.random.Generator | None = None,
    ) -> dict[int, Selection]:
        budgets = check_budgets(budgets, problem.n)
        rng = require_rng(rng, self.name)
        positive = [b for b in budgets if b > 0]
        if not positive:
            return {b: Selection(np.empty(0, dtype=np.intp)) for b in budgets}
        self._warn_beyond_feature_rank(problem, max(positive))
        lam, V = self._eigen(problem, max(positive))
        with np.errstate(divide="ignore"):
            log_lam = np.log(lam)
        logE = log_elementary_symmetric(log_lam, max(positive))
        seeds = {b: int(rng.integers(2**32 - 1)) for b in budgets}  # one per budget, in order
        self.samplers_: dict[int, str] = {}
        out = {b: self._draw(b, problem.n, lam, V, log_lam, logE, seeds[b]) for b in budgets}
        out = dict(sorted(out.items()))
        for b, sel in out.items():
            if len(sel) != b or np.unique(sel.indices).size != b:
                raise RuntimeError(
                    f"dpp policy: the k-DPP sampler returned {len(sel)} points for budget {b}"
                )
        return out

    def _warn_beyond_feature_rank(self, problem: SelectionProblem, budget: int) -> None:
        q = _quality_features(
            problem.features, problem.scores if self.weighted else None, self.feature_scale
        )
        self.feature_rank_ = int(np.linalg.matrix_rank(q))
        if budget > self.feature_rank_:
            warnings.warn(
                f"dpp policy: budget {budget} exceeds the rank {self.feature_rank_} of "
                "the kernel's feature part; beyond it the draw is decided by the ridge "
                f"eps={self.eps:g}, not by diversity",
                UserWarning,
                stacklevel=3,
            )

    def _eigen(self, problem: SelectionProblem, budget: int) -> tuple[np.ndarray, np.ndarray]:
        """The kernel's eigenvalues (clipped at 0) and vectors, largest first."""
        lam, V = scipy.linalg.eigh(self.kernel(problem))
        # Largest eigenvalues first: any order gives the same exact sampler, and with this
        # one the polynomial table e_j(lambda_1..lambda_m) spans the least range.
        lam, V = np.clip(lam[::-1], 0.0, None), V[:, ::-1]
        rank = int(np.count_nonzero(lam > lam.max() * lam.size * np.finfo(float).eps))
        if budget > rank:
            raise LeanaugError(
                f"dpp policy: budget {budget} exceeds the rank {rank} of the kernel L; use eps > 0"
            )
        return lam, V

    def _draw(
        self,
        b: int,
        n: int,
        lam: np.ndarray,
        V: np.ndarray,
        log_lam: np.ndarray,
        logE: np.ndarray,
        seed: int,
    ) -> Selection:
        """One exact k-DPP draw of size ``b`` (recording the sampler in ``samplers_``)."""
        if b == 0:
            return Selection(np.empty(0, dtype=np.intp))
        if b == n:  # det L_S with S = everything: the only subset of that size
            self.samplers_[b] = "all"
            return Selection(np.random.RandomState(seed).permutation(n))
        log_c = self._rescale(logE[: b + 1])
        if log_c is not None:
            # A fresh FiniteDPP per budget: DPPy 0.3.3 caches its polynomial table from
            # the first sample_exact_k_dpp call and never enlarges it for larger sizes.
            dpp = FiniteDPP("likelihood", projection=False, L_eig_dec=(lam * np.exp(log_c), V))
            sample = dpp.sample_exact_k_dpp(size=b, random_state=seed)
            self.samplers_[b] = "dppy"
        else:
            rs = np.random.RandomState(seed)
            Vk = _select_eigvecs_log(log_lam, V, b, logE, rs)
            sample = proj_dpp_sampler_eig(Vk, mode="GS", random_state=rs)
            self.samplers_[b] = "log-space"
        return Selection(np.asarray(sample, dtype=np.intp))

    @staticmethod
    def _rescale(logE: np.ndarray) -> float | None:
        """log c such that every nonzero log(c^j e_j) lies in +-_LOG_RANGE, or None."""
        j = np.broadcast_to(np.arange(logE.shape[0])[:, None], logE.shape)
        ok = np.isfinite(logE) & (j > 0)
        if not np.any(ok):
            return 0.0
        lo = np.max((-_LOG_RANGE - logE[ok]) / j[ok])
        hi = np.min((_LOG_RANGE - logE[ok]) / j[ok])
        if lo > hi:
            return None
        return 0.5 * (lo + hi)
