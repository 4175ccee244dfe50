"""The L2 logistic objective in torch: value, gradient, Hessian and Hessian-vector products.

One home for the arithmetic that the ``torch`` and ``newton`` solvers of
:class:`~leanaug.classifier.LogisticClassifier` and the batched influence score
(:mod:`leanaug.scores.influence_batched`) share. The objective is the classifier's
(see :mod:`leanaug.classifier`)::

    L(theta) = sum_i c_i logloss_i(theta) + 0.5 ||W||^2,   c_i = C w_i,  intercepts unpenalised

over ``theta = [W | b]``: one sigmoid row for two classes, K softmax rows otherwise.
Parameters are handled as the *free* vector of length ``P = rows * q - pinned``
(``q = d + 1`` with an intercept): with softmax and intercepts, the last class's
intercept is pinned to 0, which changes neither the model nor L (adding a constant to
every intercept changes nothing) and makes the Hessian positive definite
(:mod:`leanaug.scores.influence` explains why this is exact).

Hessian block ``(k, m)`` is ``X~^T diag(a_km) X~`` with ``a_km = c p_k (delta_km - p_m)``
(sigmoid: ``c p (1 - p)``). :meth:`LogisticObjective.hessian` forms it a chunk of points
at a time, each chunk's products in ``dtype`` (float32: the CPU's single-precision
rate), summed in float64; :meth:`LogisticObjective.hessian_times` multiplies by it
without forming it (two thin products with the data, float64).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

__all__ = ["LogisticObjective", "pcg"]

CHUNK = 4096  # points per block of Hessian products


class LogisticObjective:
    """L and its derivatives for fixed data (see the module docstring).

    Parameters
    ----------
    X : ndarray (n, d)
        Features (float64 on ``device``).
    label_idx : ndarray (n,)
        Each point's class index in ``0 .. n_classes - 1``.
    n_classes : int
        K >= 2 (two classes: one sigmoid row).
    C : float
        Inverse L2 strength; ``sample_weight`` (n,) the weights w_i (default 1).
    fit_intercept : bool
        Whether ``theta`` holds intercepts.
    dtype : torch.dtype
        Of the data and of :meth:`value_and_grad`'s products (float32: twice as fast on a
        CPU, the gradient accurate to about 1e-6 relative; its sums are taken in
        float64). The Hessian methods need float64.
    drop_zero_columns : bool
        Leave out features that are zero on every point. Their weights get no loss
        curvature and no gradient, so they decouple from everything else: for
        quantities built from per-point gradients (influence) leaving them out is exact.
        Parameter vectors then cover the kept columns only.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(50, 3))
    >>> f = LogisticObjective(X, (X[:, 0] > 0).astype(int), 2, C=1.0)
    >>> theta = torch.zeros(f.size, dtype=torch.float64)
    >>> value, grad = f.value_and_grad(theta)
    >>> round(value, 4) == round(50 * float(np.log(2)), 4)
    True
    """

    def __init__(
        self,
        X: np.ndarray,
        label_idx: np.ndarray,
        n_classes: int,
        C: float,
        sample_weight: np.ndarray | None = None,
        fit_intercept: bool = True,
        device: torch.device | str = "cpu",
        drop_zero_columns: bool = False,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        dev = torch.device(device)
        self.dtype = dtype
        Xd = torch.as_tensor(X, dtype=dtype, device=dev)
        n, d = Xd.shape
        keep = (Xd != 0).any(dim=0) if drop_zero_columns else torch.ones(d, dtype=torch.bool)
        self.columns = keep.cpu().numpy()
        Xd = Xd[:, keep.to(dev)]
        ones = torch.ones(n, 1, dtype=dtype, device=dev)
        self.design = torch.cat([Xd, ones], 1) if fit_intercept else Xd
        self.fit_intercept = bool(fit_intercept)
        self.rows = 1 if n_classes == 2 else int(n_classes)
        self.q = self.design.shape[1]
        self.pinned = self.rows > 1 and self.fit_intercept
        self.size = self.rows * self.q - int(self.pinned)
        w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        self.c = float(C) * torch.as_tensor(w, dtype=dtype, device=dev)
        labels = torch.as_tensor(np.asarray(label_idx), dtype=torch.int64, device=dev)
        if self.rows == 1:
            self.target = (labels == 1).to(dtype)[:, None]
        else:
            self.target = torch.nn.functional.one_hot(labels, n_classes).to(dtype)
        self.penalty = torch.ones(self.q, dtype=torch.float64, device=dev)
        if self.fit_intercept:
            self.penalty[-1] = 0.0
        self._probs_at: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    # -- parameters ---------------------------------------------------------------------
    def full(self, theta: torch.Tensor) -> torch.Tensor:
        """Free parameters (P,) -> the (rows, q) matrix, the pinned intercept 0."""
        out = torch.zeros(self.rows * self.q, dtype=theta.dtype, device=theta.device)
        out[: self.size] = theta
        return out.reshape(self.rows, self.q)

    def pack(self, coef: np.ndarray, intercept: np.ndarray) -> torch.Tensor:
        """A classifier's ``coef_`` (rows, d) and ``intercept_`` -> free parameters; a
        softmax's intercepts are shifted so that the last one is 0 (the same model)."""
        T = np.asarray(coef, dtype=np.float64)[:, self.columns]
        if self.fit_intercept:
            b = np.asarray(intercept, dtype=np.float64).reshape(-1)
            b = b - b[-1] if self.pinned else b
            T = np.hstack([T, b[:, None]])
        return torch.as_tensor(T.ravel()[: self.size].copy(), device=self.design.device)

    def unpack(self, theta: torch.Tensor, d: int) -> tuple[np.ndarray, np.ndarray]:
        """Free parameters -> ``(coef (rows, d), intercept (rows,))``, dropped columns 0."""
        T = self.full(theta).cpu().numpy()
        coef = np.zeros((self.rows, d))
        coef[:, self.columns] = T[:, : self.columns.sum()]
        intercept = T[:, -1].copy() if self.fit_intercept else np.zeros(self.rows)
        return coef, intercept

    # -- value and derivatives -------------------------------------------------------------
    def _forward(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z, p)``: logits and probabilities (cached per theta)."""
        if self._probs_at is not None and torch.equal(self._probs_at[0], theta):
            return self._probs_at[1], self._probs_at[2]
        z = self.design @ self.full(theta).to(self.dtype).T
        p = torch.sigmoid(z) if self.rows == 1 else torch.softmax(z, dim=1)
        self._probs_at = (theta.clone(), z, p)
        return z, p

    def probs(self, theta: torch.Tensor) -> torch.Tensor:
        """p_i (n, rows): sigmoid of the one row, or the softmax."""
        return self._forward(theta)[1]

    def residuals(self, theta: torch.Tensor) -> torch.Tensor:
        """``c_i (p_i - t_i)`` (n, rows): point i's gradient is this times x~_i.

        ``p_y - 1`` is computed as ``-(sum of the other classes' p)`` (sigmoid:
        ``-sigmoid(-z)``), not by subtracting from 1: for a point fitted to
        ``p_y = 1 - 1e-15`` the subtraction keeps no correct digit, and its gradient,
        and its influence (~1e-30), would be rounding noise."""
        z, p = self._forward(theta)
        if self.rows == 1:
            r = torch.where(self.target > 0, -torch.sigmoid(-z), p)
        else:
            others = (p * (1.0 - self.target)).sum(1, keepdim=True)
            r = torch.where(self.target > 0, -others, p)
        return self.c[:, None] * r

    def value_and_grad(self, theta: torch.Tensor) -> tuple[float, torch.Tensor]:
        T = self.full(theta)
        z = self.design @ T.to(self.dtype).T
        if self.rows == 1:
            loss = torch.nn.functional.softplus(z[:, 0]) - self.target[:, 0] * z[:, 0]
        else:
            loss = torch.logsumexp(z, dim=1) - (z * self.target).sum(1)
        value = (self.c * loss).double().sum() + 0.5 * (self.penalty * T * T).sum()
        grad = (self.residuals(theta).T @ self.design).double() + self.penalty * T
        return float(value), grad.reshape(-1)[: self.size]

    def curvature(self, theta: torch.Tensor, k: int, m: int, rows: slice) -> torch.Tensor:
        """Per-point weights ``a_km`` of Hessian block (k, m) for the points ``rows``."""
        p, c = self.probs(theta)[rows], self.c[rows]
        if self.rows == 1:
            return c * p[:, 0] * (1.0 - p[:, 0])
        return c * p[:, k] * (float(k == m) - p[:, m])

    def hessian(self, theta: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """H (P, P), float64; each chunk's block products computed in ``dtype``."""
        n, q = self.design.shape
        H = torch.zeros(self.rows * q, self.rows * q, dtype=torch.float64, device=theta.device)
        for start in range(0, n, CHUNK):
            rows = slice(start, start + CHUNK)
            xs = self.design[rows].to(dtype)
            for k in range(self.rows):
                for m in range(k, self.rows):
                    a = self.curvature(theta, k, m, rows).to(dtype)
                    H[k * q : (k + 1) * q, m * q : (m + 1) * q] += (
                        xs.T @ (a[:, None] * xs)
                    ).double()
        H = torch.triu(H) + torch.triu(H, 1).T
        H += torch.diag(self.penalty.repeat(self.rows))
        return H[: self.size, : self.size]

    def hessian_times(self, theta: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
        """``H V`` for columns V (P, m), float64, from the data (no H formed)."""
        n, q = self.design.shape
        m = V.shape[1]
        full = torch.zeros(self.rows * q, m, dtype=torch.float64, device=V.device)
        full[: self.size] = V
        Z = (self.design @ full.T.reshape(m * self.rows, q).T).reshape(n, m, self.rows)
        if self.rows == 1:
            AZ = self.curvature(theta, 0, 0, slice(None))[:, None, None] * Z
        else:
            p = self.probs(theta)[:, None, :]
            AZ = self.c[:, None, None] * p * (Z - (p * Z).sum(2, keepdim=True))
        out = (AZ.reshape(n, m * self.rows).T @ self.design).reshape(m, self.rows * q).T
        out += self.penalty.repeat(self.rows)[:, None] * full
        return out[: self.size]

    def gradients(self, theta: torch.Tensor, rows: slice, dtype: torch.dtype) -> torch.Tensor:
        """Per-point gradients ``g_i`` of the points ``rows`` as columns (P, m)."""
        x = self.design[rows].to(dtype)
        r = self.residuals(theta)[rows].to(dtype)
        g = (r[:, :, None] * x[:, None, :]).reshape(x.shape[0], -1)
        return g[:, : self.size].T


def pcg(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    B: torch.Tensor,
    L: torch.Tensor,
    rtol: float = 1e-10,
    max_iter: int = 200,
) -> tuple[torch.Tensor, int]:
    """Solve ``H X = B`` (columns solved together) by conjugate gradients preconditioned
    with ``L L^T`` (``L`` the Cholesky factor of an approximation of H), starting from
    ``(L L^T)^{-1} B``; stops when every residual is below ``rtol`` times its right-hand
    side, or after ``max_iter`` iterations. Returns ``(X, iterations)``.

    Hand-written: scipy's and torch's CG take one right-hand side and no factorised
    preconditioner, and without one CG needs hundreds of products at the condition
    numbers of 10-class logistic fits (cond(H) ~ 1e6 on MNIST features).

    Examples
    --------
    >>> H = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    >>> L = torch.linalg.cholesky(torch.diag(torch.diag(H)))  # a Jacobi preconditioner
    >>> X, _ = pcg(lambda V: H @ V, torch.eye(2, dtype=torch.float64), L)
    >>> bool(torch.allclose(X, torch.linalg.inv(H)))
    True
    """
    X = torch.cholesky_solve(B, L)
    R = B - matvec(X)
    S = torch.cholesky_solve(R, L)
    D = S.clone()
    rs = (R * S).sum(0)
    bound = rtol * B.norm(dim=0)
    for it in range(max_iter + 1):
        if it == max_iter or bool((R.norm(dim=0) <= bound).all()):
            return X, it
        HD = matvec(D)
        alpha = rs / (D * HD).sum(0).clamp_min(1e-300)
        X += alpha * D
        R -= alpha * HD
        S = torch.cholesky_solve(R, L)
        rs_new = (R * S).sum(0)
        D = S + (rs_new / rs.clamp_min(1e-300)) * D
        rs = rs_new
    raise AssertionError("unreachable")
