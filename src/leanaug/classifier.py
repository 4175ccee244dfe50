"""L2-regularised logistic regression on features (Kuchnik & Smith's classifier).

:class:`LogisticClassifier` wraps scikit-learn's ``LogisticRegression`` with the lbfgs
solver and passes ``C`` through (the reference code meant ``C=10`` but passed nothing,
so sklearn's default ``C=1`` was used; here ``C`` is always honoured).

Objective (scikit-learn's, which :mod:`leanaug.scores.influence` differentiates)::

    minimise  C * sum_i w_i * logloss_i(W, b)  +  0.5 * ||W||_F^2

with ``w_i`` the sample weights (1 when not given), ``logloss_i = -log p(y_i | x_i)``
and the intercepts ``b`` *not* penalised. Two classes use one sigmoid row
(``coef_`` is 1 x d, ``p(classes_[1] | x) = sigmoid(x . w + b)``); more classes use a
softmax over K rows (``coef_`` is K x d). The softmax intercepts are only defined up to
a common constant (adding ``c`` to every ``b_k`` changes neither predictions nor the
objective); :meth:`LogisticClassifier.fit` centres them to sum to zero so the fitted
parameters are unique (scikit-learn already does so; centring again is a no-op then).
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.optimize
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from leanaug.errors import LeanaugError

__all__ = ["SOLVERS", "LogisticClassifier", "check_xy"]

#: ``lbfgs``: scikit-learn's ``LogisticRegression(solver="lbfgs")``. ``torch``: the same
#: L-BFGS-B iteration (scipy's, with scikit-learn's options and loss scaling) on an
#: objective and gradient computed by torch in float64 on ``device`` (a GPU when given).
#: ``newton``: Newton's method on the same objective, each step solved by conjugate
#: gradients with exact Hessian-vector products (float64) preconditioned by a Cholesky
#: factor of the Hessian (float32 blocks, :class:`~leanaug.logistic.LogisticObjective`),
#: rebuilt only when the solves slow down, and taken over from ``init`` on a warm start
#: (``hessian_factor_``): 10-class fits of tens of thousands of rows, where L-BFGS needs
#: a thousand iterations (cond(H) ~ 1e6 on MNIST features), converge in a few steps.
#: All three stop on scikit-learn's criterion, max |gradient of the scaled objective|
#: <= tol, so they reach the same optimum.
SOLVERS = ("lbfgs", "torch", "newton")
#: Conjugate-gradient iterations above which ``newton`` rebuilds its preconditioner.
NEWTON_REFRESH = 30


def check_xy(
    X: np.ndarray, y: np.ndarray | None = None, sample_weight: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Validate and convert features (n, d), labels (n,) and weights (n,)."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise LeanaugError(f"features must be a 2-d array (n, d), got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise LeanaugError("features contain NaN or infinite values")
    n = X.shape[0]
    if y is not None:
        y = np.asarray(y)
        if y.shape != (n,):
            raise LeanaugError(
                f"labels must have shape ({n},) to match the features, got {y.shape}"
            )
        if not np.issubdtype(y.dtype, np.integer):
            if (
                np.issubdtype(y.dtype, np.floating)
                and np.all(np.isfinite(y))
                and np.all(y == np.round(y))
            ):
                y = y.astype(np.int64)
            else:
                raise LeanaugError(f"labels must be integers, got dtype {y.dtype}")
    if sample_weight is not None:
        sample_weight = np.asarray(sample_weight, dtype=np.float64)
        if sample_weight.shape != (n,):
            raise LeanaugError(
                f"sample_weight must have shape ({n},) to match the features, got {sample_weight.shape}"
            )
        if not np.all(np.isfinite(sample_weight)) or np.any(sample_weight < 0):
            raise LeanaugError("sample_weight must be finite and >= 0")
    return X, y, sample_weight


class LogisticClassifier:
    """L2 logistic regression (binary sigmoid or multiclass softmax) with sample weights.

    Parameters
    ----------
    C:
        Inverse regularisation strength in ``C * sum_i w_i logloss_i + 0.5 ||W||^2``
        (intercepts unpenalised). Honoured, unlike the reference code.
    tol, max_iter:
        lbfgs stopping tolerance and iteration cap (passed to scikit-learn).
    fit_intercept:
        Whether to fit the (unpenalised) intercepts.
    solver:
        ``"lbfgs"`` (scikit-learn), ``"torch"`` or ``"newton"`` (see :data:`SOLVERS`).
    device:
        Where the ``torch`` and ``newton`` solvers compute (``"cpu"``, ``"cuda"``, ``"auto"``).
    precision:
        ``"float64"``, or ``"float32"`` for the ``torch`` solver's products (about twice
        as fast on a CPU; the gradient is then accurate to about 1e-6 relative, enough
        for tol down to about 1e-5, not for the default 1e-7).

    :meth:`fit` takes ``init``, a fitted classifier on the same classes and features,
    to start from its parameters (a warm start: e.g. each augmented fit of a
    subsampling run from the clean fit); the optimum is the same, the iterations fewer.

    Attributes after :meth:`fit`: ``coef_`` (1 x d for two classes, K x d otherwise),
    ``intercept_`` (1 or K), ``classes_`` (sorted original labels), ``n_iter_``.
    """

    def __init__(
        self,
        C: float = 1.0,
        tol: float = 1e-7,
        max_iter: int = 1000,
        fit_intercept: bool = True,
        solver: str = "lbfgs",
        device: str = "cpu",
        precision: str = "float64",
    ) -> None:
        self.C = C
        self.tol = tol
        self.max_iter = max_iter
        self.fit_intercept = fit_intercept
        self.solver = solver
        self.device = device
        self.precision = precision
        if solver not in SOLVERS:
            raise LeanaugError(f"unknown solver {solver!r}; valid: {', '.join(SOLVERS)}")
        if precision not in ("float64", "float32"):
            raise LeanaugError(f"precision must be float64 or float32, got {precision!r}")
        if precision == "float32" and solver != "torch":
            raise LeanaugError("precision=float32 needs solver=torch")

    # -- sklearn-style plumbing -------------------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, object]:
        return {
            "C": self.C,
            "tol": self.tol,
            "max_iter": self.max_iter,
            "fit_intercept": self.fit_intercept,
            "solver": self.solver,
            "device": self.device,
            "precision": self.precision,
        }

    def clone(self) -> LogisticClassifier:
        """A new, unfitted classifier with the same parameters."""
        return LogisticClassifier(**self.get_params())  # type: ignore[arg-type]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"LogisticClassifier({args})"

    # -- fitting ----------------------------------------------------------------------
    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        sample_weight: np.ndarray | None = None,
        init: LogisticClassifier | None = None,
    ) -> LogisticClassifier:
        if not (np.isfinite(self.C) and self.C > 0):
            raise LeanaugError(f"C must be a positive finite number, got {self.C!r}")
        X, y, sample_weight = check_xy(X, y, sample_weight)
        assert y is not None
        classes = np.unique(y)
        if classes.size < 2:
            raise LeanaugError(
                f"logistic regression needs at least two classes in the labels, got {classes.tolist()}"
            )
        if sample_weight is not None and not np.any(sample_weight > 0):
            raise LeanaugError("sample_weight is zero everywhere")
        start = self._start(init, classes, X.shape[1])
        if self.solver == "torch":
            coef, intercept, n_iter = self._fit_torch(
                X, np.searchsorted(classes, y), sample_weight, start
            )
            self.classes_ = classes
        elif self.solver == "newton":
            coef, intercept, n_iter = self._fit_newton(
                X, np.searchsorted(classes, y), sample_weight, start, init
            )
            self.classes_ = classes
        else:
            coef, intercept, n_iter = self._fit_sklearn(X, y, sample_weight, start)
        self.coef_ = coef
        if self.fit_intercept and self.coef_.shape[0] > 1:
            intercept = intercept - intercept.mean()  # unique representative, see module doc
        self.intercept_ = intercept if self.fit_intercept else np.zeros(self.coef_.shape[0])
        self.n_iter_ = np.asarray(n_iter)
        self.n_features_in_ = X.shape[1]
        return self

    def _start(
        self, init: LogisticClassifier | None, classes: np.ndarray, d: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """``init``'s parameters, checked against this fit's classes and features."""
        if init is None:
            return None
        if not isinstance(init, LogisticClassifier) or not hasattr(init, "coef_"):
            raise LeanaugError("init must be a fitted LogisticClassifier")
        if not np.array_equal(init.classes_, classes) or init.coef_.shape[1] != d:
            raise LeanaugError(
                f"init was fitted on classes {init.classes_.tolist()} and {init.coef_.shape[1]} "
                f"features; this fit has classes {classes.tolist()} and {d} features"
            )
        return init.coef_.copy(), init.intercept_.copy()

    def _fit_sklearn(self, X, y, sample_weight, start):  # noqa: ANN001, ANN202
        model = LogisticRegression(
            C=float(self.C),
            tol=float(self.tol),
            max_iter=int(self.max_iter),
            fit_intercept=bool(self.fit_intercept),
            solver="lbfgs",
            warm_start=start is not None,
        )
        if start is not None:  # scikit-learn's warm start reads these attributes
            model.coef_, model.intercept_ = start
        model.fit(X, y, sample_weight=sample_weight)
        self._model = model
        self.classes_ = model.classes_
        coef = np.array(model.coef_, dtype=np.float64)
        return coef, np.array(model.intercept_, dtype=np.float64).reshape(-1), model.n_iter_

    def _objective(self, X, label_idx, sample_weight):  # noqa: ANN001, ANN202
        """The torch objective of this fit and the factor ``C sum(w)`` that turns it into
        scikit-learn's scaled one (mean loss + penalty / (C sum(w)))."""
        import torch

        from leanaug.device import resolve_device
        from leanaug.logistic import LogisticObjective

        dev = resolve_device(self.device)
        K = int(label_idx.max()) + 1
        dtype = torch.float32 if self.precision == "float32" else torch.float64
        f = LogisticObjective(
            X, label_idx, K, self.C, sample_weight, self.fit_intercept, dev, dtype=dtype
        )
        w_sum = X.shape[0] if sample_weight is None else float(np.sum(sample_weight))
        return f, float(self.C) * w_sum, torch

    def _fit_torch(self, X, label_idx, sample_weight, start):  # noqa: ANN001, ANN202
        """scikit-learn's lbfgs problem, solved by scipy's L-BFGS-B with its options, on
        the objective and gradient of :class:`~leanaug.logistic.LogisticObjective`
        (float64, on ``device``), scaled as scikit-learn scales them."""
        f, scale, torch = self._objective(X, label_idx, sample_weight)
        theta0 = f.pack(*start) if start is not None else torch.zeros(f.size, dtype=torch.float64)

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            value, grad = f.value_and_grad(torch.as_tensor(theta, device=f.design.device))
            return value / scale, grad.cpu().numpy() / scale

        res = scipy.optimize.minimize(
            objective,
            theta0.cpu().numpy(),
            jac=True,
            method="L-BFGS-B",
            options={
                "maxiter": int(self.max_iter),
                "maxls": 50,
                "gtol": float(self.tol),
                "ftol": 64 * np.finfo(float).eps,
            },
        )
        if res.nit >= self.max_iter:
            self._warn_max_iter("L-BFGS-B")
        coef, intercept = f.unpack(torch.as_tensor(res.x), X.shape[1])
        return coef, intercept, [res.nit]

    def _fit_newton(self, X, label_idx, sample_weight, start, init):  # noqa: ANN001, ANN202
        """Newton's method with preconditioned conjugate gradients (see :data:`SOLVERS`):
        stops when scikit-learn's criterion holds (max |gradient| of the scaled
        objective <= tol)."""
        from leanaug.logistic import pcg

        f, scale, torch = self._objective(X, label_idx, sample_weight)
        theta = f.pack(*start) if start is not None else torch.zeros(f.size, dtype=torch.float64)
        theta = theta.to(f.design.device)
        L = getattr(init, "hessian_factor_", None)
        if L is not None and (L.shape[0] != f.size or L.device != theta.device):
            L = None
        value, g = f.value_and_grad(theta)
        it = 0
        for it in range(1, int(self.max_iter) + 1):  # noqa: B007 - the count is reported
            gmax = float(g.abs().max()) / scale
            if gmax <= self.tol:
                it -= 1
                break
            if L is None:  # the preconditioner: the Hessian here, float32 blocks
                L = torch.linalg.cholesky(f.hessian(theta, torch.float32))
            eta = min(0.1, gmax**0.5)  # inexact Newton: looser solves far from the optimum
            at = theta
            step, inner = pcg(lambda V, at=at: f.hessian_times(at, V), -g[:, None], L, rtol=eta)
            step = step[:, 0]
            if inner > NEWTON_REFRESH:  # the factor has drifted from H: rebuild it
                L = None
            slope, t = float(g @ step), 1.0
            for _ in range(40):  # backtracking (Armijo) line search
                new_value, new_g = f.value_and_grad(theta + t * step)
                # the slack: near the optimum L changes by less than its rounding error
                if new_value <= value + 1e-4 * t * slope + 1e-13 * abs(value):
                    break
                t *= 0.5
            theta, value, g = theta + t * step, new_value, new_g
        else:
            if float(g.abs().max()) / scale > self.tol:
                self._warn_max_iter("Newton")
        self.hessian_factor_ = L
        coef, intercept = f.unpack(theta, X.shape[1])
        return coef, intercept, [it]

    def _warn_max_iter(self, method: str) -> None:
        warnings.warn(
            f"{self.solver} solver: {method} stopped at max_iter={self.max_iter} before "
            f"reaching tol={self.tol}",
            ConvergenceWarning,
            stacklevel=4,
        )

    def __getstate__(self) -> dict[str, object]:
        # The Newton preconditioner is large (P^2 floats) and only a speed-up: not shipped.
        return {k: v for k, v in self.__dict__.items() if k != "hessian_factor_"}

    def _check_fitted(self, X: np.ndarray) -> np.ndarray:
        if not hasattr(self, "coef_"):
            raise LeanaugError("LogisticClassifier is not fitted yet; call fit(X, y) first")
        X, _, _ = check_xy(X)
        if X.shape[1] != self.n_features_in_:
            raise LeanaugError(
                f"features have {X.shape[1]} columns but the classifier was fitted on {self.n_features_in_}"
            )
        return X

    # -- prediction -------------------------------------------------------------------
    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Logits: (n,) for two classes (log-odds of ``classes_[1]``), (n, K) otherwise."""
        X = self._check_fitted(X)
        z = X @ self.coef_.T + self.intercept_
        return z[:, 0] if z.shape[1] == 1 else z

    def predict_log_proba(self, X: np.ndarray) -> np.ndarray:
        """log p(class | x), (n, K) with columns in ``classes_`` order; numerically stable."""
        z = self.decision_function(X)
        if z.ndim == 1:
            # log sigmoid(z) = -logaddexp(0, -z), log(1 - sigmoid(z)) = -logaddexp(0, z)
            return np.stack([-np.logaddexp(0.0, z), -np.logaddexp(0.0, -z)], axis=1)
        zmax = z.max(axis=1, keepdims=True)
        return z - (zmax + np.log(np.exp(z - zmax).sum(axis=1, keepdims=True)))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.exp(self.predict_log_proba(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        z = self.decision_function(X)
        idx = (z > 0).astype(np.intp) if z.ndim == 1 else np.argmax(z, axis=1)
        return self.classes_[idx]

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        """Accuracy on (X, y)."""
        X, y, _ = check_xy(X, y)
        return float(np.mean(self.predict(X) == y))

    def label_indices(self, y: np.ndarray) -> np.ndarray:
        """Column of each label in ``classes_``; unknown labels are an error."""
        if not hasattr(self, "classes_"):
            raise LeanaugError("LogisticClassifier is not fitted yet; call fit(X, y) first")
        y = np.asarray(y)
        idx = np.searchsorted(self.classes_, y)
        idx = np.clip(idx, 0, self.classes_.size - 1)
        bad = self.classes_[idx] != y
        if np.any(bad):
            raise LeanaugError(
                f"labels {np.unique(y[bad]).tolist()} were not seen when fitting "
                f"(classes: {self.classes_.tolist()})"
            )
        return idx

    def log_loss_per_point(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """-log p(y_i | x_i) for each point, unweighted and not scaled by C."""
        X, y, _ = check_xy(X, y)
        logp = self.predict_log_proba(X)
        return -logp[np.arange(X.shape[0]), self.label_indices(y)]
