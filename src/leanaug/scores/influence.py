"""Closed-form leave-one-out influence of each training point (Koh & Liang; Kuchnik & Smith).

Setting. ``clf`` minimises (see :mod:`leanaug.classifier`)

    L(theta) = sum_i C w_i logloss_i(theta) + 0.5 ||W||^2,     intercepts unpenalised,

over ``theta = [W | b]`` flattened row-major: for two classes one row, ``d + 1``
parameters (sigmoid); for K > 2 classes K rows, ``K (d + 1)`` parameters (softmax).
Let ``g_i = C w_i grad logloss_i(theta)`` (point i's weighted, C-scaled gradient) and
``H = hess L(theta)`` (loss part PLUS the L2 term, zero penalty on the intercepts).

Removing point i and refitting moves the optimum by (one Newton step from theta)

    theta_{-i} - theta  ~=  H^{-1} g_i                          (:func:`influence_parameter_changes`)

and raises point i's own weighted loss ``C w_i logloss_i`` by, to first order,

    C w_i (logloss_i(theta_{-i}) - logloss_i(theta))  ~=  g_i^T H^{-1} g_i   (:func:`self_influence`)

which is the ``influence`` score (always >= 0, as H is positive definite). The
reference code uses ``s_i = -g_i^T H^{-1} g_i`` with H the Hessian of the summed log loss
*without* the L2 term, and policies use ``|s_i|``; here the L2 term is included (it is
part of the objective the classifier really minimises, and it keeps H invertible) and
the sign is already positive. :mod:`leanaug.scores.loo` computes the exact left-hand
sides by refitting, for checks.

Gradients and Hessian. With ``x~ = [x, 1]`` (no 1 without an intercept), ``c_i = C w_i``:

* sigmoid: ``g_i = c_i (p_i - t_i) x~_i``,
  ``H = X~^T diag(c_i p_i (1 - p_i)) X~ + diag(1, ..., 1, 0)``.
* softmax: ``g_i = c_i (p_i - t_i) (x) x~_i`` (Kronecker, class-major),
  block ``(k, l)`` of H is ``X~^T diag(c_i (delta_kl p_ik - p_ik p_il)) X~ + delta_kl diag(1, ..., 1, 0)``.

The softmax intercept direction. Adding the same constant to every intercept changes
nothing, so ``(0_W, 1_b)`` is a null vector of the loss Hessian, and the intercepts are
not penalised: H is singular (positive semi-definite) along exactly that direction (the
L2 term makes it definite in every direction that touches W). We PIN the last class's
intercept: drop that one row and column of H and that entry of ``g_i`` and solve the
reduced, positive definite system. This is exact, not an approximation: the pinned
model represents the same functions (shift all intercepts so that ``b_K = 0``), every
``g_i`` is orthogonal to the null vector (``sum_k (p_ik - t_ik) = 0``), so the reduced
``g^T H_r^{-1} g`` equals ``g^T H^+ g`` (the pseudo-inverse form) whichever intercept is
pinned. A tiny ridge on the intercepts would instead bias the answer by an amount that
depends on the ridge, and projecting needs an extra basis. Parameter changes are
returned in the full parameterisation with the intercept change centred (sum zero),
matching :class:`~leanaug.classifier.LogisticClassifier`, which centres its intercepts.

Leverage correction (``influence:leverage=true``). The one-step estimate above moves
theta by ``H^{-1} g_i``, with the Hessian of the fit that still holds point i. Taking
point i's own curvature ``H_i`` out of it, ``theta_{-i} - theta ~= (H - H_i)^{-1} g_i``
(a full Newton step on the leave-one-out objective from theta), and the self-loss change
becomes ``g_i^T (H - H_i)^{-1} g_i``. For two classes ``H_i = a_i x~_i x~_i^T`` with
``a_i = c_i p_i (1 - p_i)``, and since ``g_i`` is parallel to ``x~_i`` (Sherman-Morrison)

    g_i^T (H - H_i)^{-1} g_i = g_i^T H^{-1} g_i / (1 - h_ii),   h_ii = a_i x~_i^T H^{-1} x~_i,

the leverage (0 <= h_ii < 1). For K > 2 classes ``H_i = B_i^T A_i B_i`` with
``A_i = c_i (diag p_i - p_i p_i^T)`` (K x K, singular) and ``B_i = I_K (x) x~_i^T``, and
the push-through (Woodbury) identity gives ``u.u + r^T (I - A_i S_i)^{-1} A_i r`` with
``u = L^{-1} g_i``, ``M = L^{-1} B_i^T``, ``r = M^T u``, ``S_i = M^T M``: K extra
triangular solves per point (K times the cost of the plain score).

Linear algebra: H is factorised once with Cholesky (``scipy.linalg.cho_factor``, lower);
``g^T H^{-1} g = ||L^{-1} g||^2`` needs one triangular solve per point (vectorised over
points, in chunks), and parameter changes use ``cho_solve``. No explicit inverse. The
``influence`` score runs that triangular solve in float32, checked (see
:func:`self_influence`); :func:`self_influence` itself defaults to float64.
Cost, binary: ``O(n d^2 + d^3)``, e.g. n = 10,000, d = 512 well under 2 s on 2 cores
(``benchmarks/bench_influence.py``); softmax: ``O(K^2 n d^2 + (K d)^3 + n (K d)^2)``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from scipy.special import expit

from leanaug.classifier import LogisticClassifier, check_xy
from leanaug.errors import LeanaugError
from leanaug.scores.base import SCORES, Score

__all__ = [
    "InfluenceScore",
    "LogisticCurvature",
    "influence_parameter_changes",
    "leverage_self_influence",
    "logistic_curvature",
    "parameter_vector",
    "self_influence",
]

_CHUNK = 2048  # points per triangular solve (bounds memory for big softmax problems)
SOLVE_PRECISIONS = ("float64", "float32")
METHODS = ("dense", "batched")
CHECK_POINTS = 32  # points re-solved in float64 to check a float32 solve
CHECK_RTOL = 1e-4  # largest relative error a float32 solve may show on them


def _design(X: np.ndarray, fit_intercept: bool) -> np.ndarray:
    return np.hstack([X, np.ones((X.shape[0], 1))]) if fit_intercept else X


def parameter_vector(clf: LogisticClassifier) -> np.ndarray:
    """``[W | b]`` flattened row-major (the ordering used by all functions here)."""
    _check_fitted(clf)
    W = clf.coef_
    if clf.fit_intercept:
        W = np.hstack([W, clf.intercept_[:, None]])
    return W.ravel().copy()


def _check_fitted(clf: LogisticClassifier) -> None:
    if not isinstance(clf, LogisticClassifier):
        raise LeanaugError(f"influence needs a fitted LogisticClassifier, got {type(clf).__name__}")
    if not hasattr(clf, "coef_"):
        raise LeanaugError("the classifier is not fitted; fit it on the training points first")


@dataclass
class LogisticCurvature:
    """Per-point gradients and the Cholesky factor of the (reduced) Hessian.

    ``grads`` is (n, P) for P free parameters (the pinned softmax intercept removed),
    ``chol`` is ``cho_factor``'s ``(c, lower)``; ``pinned`` says whether the last
    parameter (the last class's intercept) was dropped.
    """

    grads: np.ndarray
    chol: tuple[np.ndarray, bool]
    n_classes: int
    n_cols: int  # d + 1 with an intercept, d without
    pinned: bool


def _cholesky(H: np.ndarray) -> tuple[np.ndarray, bool]:
    try:
        return scipy.linalg.cho_factor(H, lower=True, overwrite_a=True, check_finite=True)
    except (np.linalg.LinAlgError, ValueError) as exc:
        raise LeanaugError(
            "the Hessian of the logistic objective is not positive definite (or not finite); "
            "the fit is degenerate (C too large for separable data?): lower C or check the features"
        ) from exc


def logistic_curvature(
    clf: LogisticClassifier, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None
) -> LogisticCurvature:
    """Gradients ``g_i`` and the factorised Hessian H of the training objective at ``clf``."""
    _check_fitted(clf)
    X, y, sample_weight = check_xy(X, y, sample_weight)
    assert y is not None
    n, d = X.shape
    if d != clf.coef_.shape[1]:
        raise LeanaugError(
            f"features have {d} columns but the classifier was fitted on {clf.coef_.shape[1]}"
        )
    c = float(clf.C) * (np.ones(n) if sample_weight is None else sample_weight)
    Xt = _design(X, clf.fit_intercept)
    q = Xt.shape[1]
    penalty = np.ones(q)
    if clf.fit_intercept:
        penalty[-1] = 0.0  # the intercept is not penalised
    label_idx = clf.label_indices(y)
    K = clf.classes_.size
    z = X @ clf.coef_.T + clf.intercept_

    if K == 2:
        p = expit(z[:, 0])
        # p - 1 as -expit(-z): subtracting from 1 keeps no digit of a well-fitted point's
        # residual (p = 1 - 1e-15), whose gradient and influence would be rounding noise
        resid = np.where(label_idx == 1, -expit(-z[:, 0]), p)
        grads = (c * resid)[:, None] * Xt
        H = Xt.T @ ((c * p * (1.0 - p))[:, None] * Xt)
        H[np.diag_indices(q)] += penalty
        return LogisticCurvature(grads, _cholesky(H), 2, q, pinned=False)

    P = np.exp(z - z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    R = P.copy()
    rows = np.arange(n)
    R[rows, label_idx] = 0.0
    R[rows, label_idx] = -R.sum(axis=1)  # p_y - 1 = -(sum of the others): no cancellation
    R *= c[:, None]
    grads = (R[:, :, None] * Xt[:, None, :]).reshape(n, K * q)
    H = np.empty((K * q, K * q))
    for k in range(K):
        for m in range(k, K):
            a = c * P[:, k] * ((k == m) - P[:, m])
            block = Xt.T @ (a[:, None] * Xt)
            if k == m:
                block[np.diag_indices(q)] += penalty
            H[k * q : (k + 1) * q, m * q : (m + 1) * q] = block
            if k != m:
                H[m * q : (m + 1) * q, k * q : (k + 1) * q] = block.T
    pinned = bool(clf.fit_intercept)
    if pinned:  # drop the last class's intercept: see the module docstring
        H = H[:-1, :-1]
        grads = grads[:, :-1]
    return LogisticCurvature(np.ascontiguousarray(grads), _cholesky(H), K, q, pinned)


def _check_solve_precision(solve_precision: str) -> None:
    if solve_precision not in SOLVE_PRECISIONS:
        raise LeanaugError(
            f"solve_precision must be one of {', '.join(SOLVE_PRECISIONS)}, got {solve_precision!r}"
        )


def _solve_norms(chol: tuple[np.ndarray, bool], grads: np.ndarray, dtype: type) -> np.ndarray:
    """``||L^{-1} g_i||^2`` for the rows ``g_i`` of ``grads``, the solve in ``dtype``."""
    c, lower = chol
    c = c.astype(dtype, copy=False)
    out = np.empty(grads.shape[0])
    for start in range(0, out.size, _CHUNK):
        G = grads[start : start + _CHUNK].T.astype(dtype)  # P x m
        # g^T H^-1 g = ||L^-1 g||^2 with H = L L^T: one triangular solve instead of two.
        # solve_triangular reads only the lower triangle of cho_factor's output.
        V = scipy.linalg.solve_triangular(
            c, G, lower=lower, trans=0 if lower else 1, check_finite=False
        ).astype(np.float64, copy=False)
        out[start : start + _CHUNK] = np.einsum("ij,ij->j", V, V)
    return out


def self_influence(
    clf: LogisticClassifier,
    X: np.ndarray,
    y: np.ndarray,
    sample_weight: np.ndarray | None = None,
    curvature: LogisticCurvature | None = None,
    solve_precision: str = "float64",
) -> np.ndarray:
    """``g_i^T H^{-1} g_i`` for every training point, (n,) >= 0 (see module doc).

    ``solve_precision="float32"`` runs the triangular solve, the largest cost (``n P^2``),
    in single precision; the Hessian and its Cholesky factor stay in double, where the
    conditioning bites (the solve's error grows with ``cond(L) = sqrt(cond(H))`` only).
    It is about 2x faster on one core (1000 x 513: 19 -> 10-11 ms, the check included, on
    the MNIST paper features; ``benchmarks/bench_scoring_cost.py``). The result is then
    checked: the smallest and largest scores and an evenly spaced sample of
    :data:`CHECK_POINTS` points are recomputed in double, and if any differs by more than
    :data:`CHECK_RTOL` (relative) the whole solve is redone in double, with a warning.
    """
    _check_solve_precision(solve_precision)
    cur = curvature if curvature is not None else logistic_curvature(clf, X, y, sample_weight)
    if solve_precision == "float64":
        return _solve_norms(cur.chol, cur.grads, np.float64)
    fast = _solve_norms(cur.chol, cur.grads, np.float32)
    n = fast.size
    check = np.unique(
        np.r_[np.argmin(fast), np.argmax(fast), np.linspace(0, n - 1, min(n, CHECK_POINTS))]
    ).astype(np.intp)
    exact = _solve_norms(cur.chol, cur.grads[check], np.float64)
    if np.allclose(fast[check], exact, rtol=CHECK_RTOL, atol=1e-12 * exact.max()):
        return fast
    worst = float(np.max(np.abs(fast[check] - exact) / np.maximum(np.abs(exact), 1e-300)))
    warnings.warn(
        f"influence: the float32 solve is off by up to {worst:.1e} (relative) on checked "
        f"points, above {CHECK_RTOL:g} (an ill-conditioned Hessian); solving in float64",
        stacklevel=2,
    )
    return _solve_norms(cur.chol, cur.grads, np.float64)


def leverage_self_influence(
    clf: LogisticClassifier,
    X: np.ndarray,
    y: np.ndarray,
    sample_weight: np.ndarray | None = None,
    curvature: LogisticCurvature | None = None,
) -> np.ndarray:
    """``g_i^T (H - H_i)^{-1} g_i`` for every training point: self-influence with the
    leverage correction, ``g_i^T H^{-1} g_i / (1 - h_ii)`` for two classes (see the
    module docstring), float64, (n,) >= 0."""
    _check_fitted(clf)
    X, y, sample_weight = check_xy(X, y, sample_weight)
    cur = curvature if curvature is not None else logistic_curvature(clf, X, y, sample_weight)
    n = X.shape[0]
    c = float(clf.C) * (np.ones(n) if sample_weight is None else sample_weight)
    Xt = _design(X, clf.fit_intercept)
    z = X @ clf.coef_.T + clf.intercept_
    plain = _solve_norms(cur.chol, cur.grads, np.float64)
    chol, lower = cur.chol
    if cur.n_classes == 2:
        p = expit(z[:, 0])
        h = c * p * (1.0 - p) * _solve_norms(cur.chol, Xt, np.float64)
        return plain / (1.0 - h)
    K, q = cur.n_classes, cur.n_cols
    P = np.exp(z - z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    out = np.empty(n)
    eye = np.eye(K)
    step = max(1, 2**22 // (K * q * K))  # points per chunk: bounds the (P, m, K) block
    for start in range(0, n, step):
        rows = slice(start, start + step)
        m = Xt[rows].shape[0]
        Bt = np.einsum("kl,mj->kjml", eye, Xt[rows]).reshape(K * q, m * K)
        G = cur.grads[rows].T
        if cur.pinned:
            Bt = Bt[:-1]
        tri = dict(lower=lower, trans=0 if lower else 1, check_finite=False)
        M = scipy.linalg.solve_triangular(chol, Bt, **tri).reshape(-1, m, K)
        U = scipy.linalg.solve_triangular(chol, G, **tri)  # (P, m)
        r = np.einsum("pmk,pm->mk", M, U)
        S = np.einsum("pmk,pml->mkl", M, M)
        Pm = P[rows]
        A = c[rows, None, None] * (Pm[:, :, None] * eye - Pm[:, :, None] * Pm[:, None, :])
        Ar = np.einsum("mkl,ml->mk", A, r)
        corr = np.linalg.solve(eye - A @ S, Ar[:, :, None])[:, :, 0]
        out[rows] = np.einsum("pm,pm->m", U, U) + np.einsum("mk,mk->m", r, corr)
    return out


def influence_parameter_changes(
    clf: LogisticClassifier,
    X: np.ndarray,
    y: np.ndarray,
    sample_weight: np.ndarray | None = None,
    indices: np.ndarray | None = None,
    curvature: LogisticCurvature | None = None,
) -> np.ndarray:
    """First-order leave-one-out parameter changes ``H^{-1} g_i`` (~ ``theta_{-i} - theta``).

    Rows follow ``indices`` (default: all points), columns :func:`parameter_vector`'s
    ordering; softmax intercept changes are centred (see module doc).
    """
    cur = curvature if curvature is not None else logistic_curvature(clf, X, y, sample_weight)
    idx = np.arange(cur.grads.shape[0]) if indices is None else np.asarray(indices, dtype=np.intp)
    delta = scipy.linalg.cho_solve(cur.chol, cur.grads[idx].T, check_finite=False).T
    if cur.pinned:
        delta = np.hstack([delta, np.zeros((delta.shape[0], 1))])
        b = delta.reshape(len(idx), cur.n_classes, cur.n_cols)[:, :, -1]
        delta.reshape(len(idx), cur.n_classes, cur.n_cols)[:, :, -1] = b - b.mean(
            axis=1, keepdims=True
        )
    return delta


@SCORES.register("influence")
class InfluenceScore(Score):
    """Closed-form self-influence ``|g_i^T H^{-1} g_i|`` (see the module docstring).

    Pass the same ``sample_weight`` the classifier was fitted with: the score is the
    first-order increase in point i's weighted, C-scaled loss when it is left out.

    Parameters
    ----------
    solve_precision : {"float32", "float64"}
        :func:`self_influence`'s: ``"float32"`` (the default, checked against double on
        a sample of points, redone in double if it is off) or ``"float64"``.
    leverage : bool
        True: the leverage-corrected ``g_i^T H^{-1} g_i / (1 - h_ii)``
        (:func:`leverage_self_influence`, float64), a closer estimate of the exact
        leave-one-out self-loss change for high-leverage points.
    method : {"dense", "batched"}
        ``"dense"``: :func:`self_influence` (numpy; the gradient matrix and the Hessian
        in float64). ``"batched"``: the same scores from
        :func:`~leanaug.scores.influence_batched.batched_self_influence` (torch, no
        gradient matrix, float32 Hessian blocks checked against float64), for fits of
        tens of thousands of points and 10 classes; ``solve_precision`` is its
        precision. Not with ``leverage``.
    device : str
        Where ``"batched"`` computes (``auto``: a GPU when present).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(50, 2))
    >>> y = (X[:, 0] + rng.normal(size=50) > 0).astype(int)
    >>> clf = LogisticClassifier().fit(X, y)
    >>> plain = InfluenceScore().score(clf, X, y)
    >>> corrected = InfluenceScore(leverage=True).score(clf, X, y)
    >>> bool(np.all(corrected >= plain * (1 - 1e-4)))
    True
    """

    name = "influence"

    def __init__(
        self,
        solve_precision: str = "float32",
        leverage: bool = False,
        method: str = "dense",
        device: str = "auto",
    ) -> None:
        _check_solve_precision(solve_precision)
        if method not in METHODS:
            raise LeanaugError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
        if leverage and method != "dense":
            raise LeanaugError("influence: leverage=true needs method=dense")
        self.solve_precision = solve_precision
        self.leverage = bool(leverage)
        self.method = method
        self.device = device

    def _score(self, clf: LogisticClassifier, X, y, sample_weight, rng) -> np.ndarray:  # noqa: ANN001
        if self.method == "batched":
            from leanaug.scores.influence_batched import batched_self_influence

            return np.abs(
                batched_self_influence(
                    clf, X, y, sample_weight, precision=self.solve_precision, device=self.device
                )
            )
        if self.leverage:
            return np.abs(leverage_self_influence(clf, X, y, sample_weight))
        return np.abs(
            self_influence(clf, X, y, sample_weight, solve_precision=self.solve_precision)
        )
