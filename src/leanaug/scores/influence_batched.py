"""Self-influence for large fits (n in the tens of thousands, softmax over 10 classes).

The quantity is :func:`leanaug.scores.influence.self_influence`'s, ``g_i^T H^{-1} g_i``
with the same objective, weights, penalty and pinned softmax intercept (see that
module's docstring); this is a second way to compute it, in torch, for problems where
the dense path's ``(n, K (d + 1))`` float64 gradient matrix and float64 Hessian are the
cost: MNIST, 60,000 points, 512-d features, 10 classes has P = 5,129 free parameters,
a 2.5 GB gradient matrix and about 3.3 TFLOP of Hessian and triangular solves.

What it does differently, and why the answer is still checked:

* **Features that are zero on every point are left out.** Their weights get no loss
  curvature and no gradient, only the penalty's identity, so they decouple from the
  rest of H and add nothing to any score: leaving them out is exact. A ReLU
  featurizer has many (129 of the 512 small-CNN features on MNIST), and the cost
  scales with the square of the number of features.
* **No gradient matrix.** ``g_i = r_i (x) x~_i`` (residual times design row) is built a
  chunk of points at a time, solved, and dropped.
* **Hessian in float32 blocks, accumulated in float64.** Block ``(k, l)`` of H is
  ``X~^T diag(a_kl) X~``; each chunk of points gives one float32 matrix product per
  block (the bulk of the arithmetic at the CPU's single-precision rate), summed in
  float64. The Cholesky factor is float64; the per-point triangular solves run in
  ``precision``.
* **Checked against float64 without forming a float64 Hessian.** With
  ``precision="float32"`` the smallest, the largest and an evenly spaced sample of
  :data:`~leanaug.scores.influence.CHECK_POINTS` scores are recomputed exactly: conjugate
  gradients in float64 on ``H v = g_i`` with exact Hessian-vector products from the
  float64 data (``X~^T (A_i (X~ V))``, two thin products per iteration) and the float32
  Cholesky factor as the preconditioner, so a few iterations reach float64 accuracy.
  If any checked score is off by more than ``CHECK_RTOL`` (relative), everything is
  recomputed in float64, with a warning. ``precision="float64"`` is exact throughout.

``device``: where the arithmetic runs (``auto``: a GPU when present).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from leanaug.classifier import LogisticClassifier, check_xy
from leanaug.device import resolve_device
from leanaug.errors import LeanaugError
from leanaug.logistic import LogisticObjective, pcg

__all__ = ["batched_self_influence"]

PRECISIONS = ("float32", "float64")
CHUNK = 4096  # points per block of triangular solves


def _problem(
    clf: LogisticClassifier,
    X,
    y,
    sample_weight,
    device,  # noqa: ANN001
) -> tuple[LogisticObjective, torch.Tensor]:
    """The fit's objective (zero columns left out) and its parameters."""
    if not isinstance(clf, LogisticClassifier) or not hasattr(clf, "coef_"):
        raise LeanaugError("influence needs a fitted LogisticClassifier")
    X, y, sample_weight = check_xy(X, y, sample_weight)
    if X.shape[1] != clf.coef_.shape[1]:
        raise LeanaugError(
            f"features have {X.shape[1]} columns but the classifier was fitted on "
            f"{clf.coef_.shape[1]}"
        )
    f = LogisticObjective(
        X, clf.label_indices(y), clf.classes_.size, clf.C, sample_weight,
        clf.fit_intercept, device, drop_zero_columns=True,
    )  # fmt: skip
    return f, f.pack(clf.coef_, clf.intercept_)


def _cholesky(H: torch.Tensor) -> torch.Tensor:
    L, info = torch.linalg.cholesky_ex(H)
    if int(info) != 0 or not torch.isfinite(L).all():
        raise LeanaugError(
            "the Hessian of the logistic objective is not positive definite (or not finite); "
            "the fit is degenerate (C too large for separable data?): lower C or check the features"
        )
    return L


def _solve_norms(
    f: LogisticObjective, theta: torch.Tensor, L: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """``||L^{-1} g_i||^2`` for every point, the solves in ``dtype``."""
    n = f.design.shape[0]
    Ld = L.to(dtype)
    out = torch.empty(n, dtype=torch.float64, device=L.device)
    for start in range(0, n, CHUNK):
        rows = slice(start, start + CHUNK)
        V = torch.linalg.solve_triangular(Ld, f.gradients(theta, rows, dtype), upper=False)
        out[rows] = (V.double() ** 2).sum(0)
    return out


def _exact_norms(
    f: LogisticObjective, theta: torch.Tensor, L: torch.Tensor, points: torch.Tensor
) -> torch.Tensor:
    """``g_i^T H^{-1} g_i`` in float64 by conjugate gradients preconditioned by ``L``."""
    G = torch.cat([f.gradients(theta, slice(int(i), int(i) + 1), torch.float64) for i in points], 1)
    x, _ = pcg(lambda V: f.hessian_times(theta, V), G, L, rtol=1e-13)
    return (G * x).sum(0)


def batched_self_influence(
    clf: LogisticClassifier,
    X: np.ndarray,
    y: np.ndarray,
    sample_weight: np.ndarray | None = None,
    precision: str = "float32",
    device: str = "auto",
) -> np.ndarray:
    """``g_i^T H^{-1} g_i`` for every training point (see the module docstring): the
    same values as :func:`~leanaug.scores.influence.self_influence`, for large fits.

    Examples
    --------
    >>> from leanaug.scores.influence import self_influence
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(400, 5))
    >>> y = np.argmax(X[:, :3] + rng.normal(size=(400, 3)), axis=1)
    >>> clf = LogisticClassifier().fit(X, y)
    >>> fast = batched_self_influence(clf, X, y, device="cpu")
    >>> bool(np.allclose(fast, self_influence(clf, X, y), rtol=1e-4))
    True
    """
    from leanaug.scores.influence import CHECK_POINTS, CHECK_RTOL

    if precision not in PRECISIONS:
        raise LeanaugError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    dev = resolve_device(device)
    f, theta = _problem(clf, X, y, sample_weight, dev)
    dtype = torch.float32 if precision == "float32" else torch.float64
    L = _cholesky(f.hessian(theta, dtype))
    scores = _solve_norms(f, theta, L, dtype)
    if precision == "float64":
        return scores.cpu().numpy()
    n = scores.numel()
    check = torch.unique(
        torch.cat([
            scores.argmin()[None], scores.argmax()[None],
            torch.linspace(0, n - 1, min(n, CHECK_POINTS), device=dev).round().long(),
        ])
    )  # fmt: skip
    exact = _exact_norms(f, theta, L, check)
    fast = scores[check]
    err = (fast - exact).abs() / exact.abs().clamp_min(1e-300)
    if bool((err <= CHECK_RTOL).all()):
        return scores.cpu().numpy()
    warnings.warn(
        f"influence: the float32 Hessian and solves are off by up to {float(err.max()):.1e} "
        f"(relative) on checked points, above {CHECK_RTOL:g} (an ill-conditioned Hessian); "
        "solving in float64",
        stacklevel=2,
    )
    return batched_self_influence(clf, X, y, sample_weight, "float64", str(dev))
