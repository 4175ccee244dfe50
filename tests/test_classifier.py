"""LogisticClassifier: honours C, minimises the documented objective, arbitrary labels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp
from sklearn.linear_model import LogisticRegression

from leanaug.classifier import LogisticClassifier
from leanaug.errors import LeanaugError


def make_data(n=200, d=4, k=2, seed=0, labels=None):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    W = rng.normal(size=(k, d))
    y = np.argmax(X @ W.T + rng.gumbel(size=(n, k)), axis=1)
    if labels is not None:
        y = np.asarray(labels)[y]
    return X, y


def objective(theta, X, y_idx, w, C, k):
    """C * sum_i w_i * logloss_i + 0.5 ||W||^2, intercept unpenalised (independent reference)."""
    d = X.shape[1]
    rows = 1 if k == 2 else k
    Wb = theta.reshape(rows, d + 1)
    W, b = Wb[:, :d], Wb[:, d]
    z = X @ W.T + b
    if k == 2:
        s = np.where(y_idx == 1, 1.0, -1.0)
        loss = np.logaddexp(0.0, -s * z[:, 0])
    else:
        loss = logsumexp(z, axis=1) - z[np.arange(len(y_idx)), y_idx]
    return C * np.sum(w * loss) + 0.5 * np.sum(W**2)


@pytest.mark.parametrize("k", [2, 3])
def test_fit_minimises_documented_objective(k):
    X, y = make_data(k=k, seed=k)
    w = np.random.default_rng(1).uniform(0.5, 2.0, size=len(y))
    C = 3.0
    clf = LogisticClassifier(C=C, tol=1e-10, max_iter=5000).fit(X, y, sample_weight=w)
    theta = np.hstack([clf.coef_, clf.intercept_[:, None]]).ravel()
    y_idx = np.searchsorted(clf.classes_, y)
    f0 = objective(theta, X, y_idx, w, C, k)
    # central finite-difference gradient of the documented objective vanishes at the fit
    h = 1e-5
    grad = np.array(
        [
            (
                objective(theta + h * e, X, y_idx, w, C, k)
                - objective(theta - h * e, X, y_idx, w, C, k)
            )
            / (2 * h)
            for e in np.eye(theta.size)
        ]
    )
    assert np.max(np.abs(grad)) < 1e-4 * max(1.0, f0 / len(y))
    # and random perturbations only increase it
    rng = np.random.default_rng(2)
    for _ in range(5):
        assert objective(theta + 1e-2 * rng.normal(size=theta.size), X, y_idx, w, C, k) > f0


def test_C_is_honoured():
    X, y = make_data(seed=3)
    a = LogisticClassifier(C=0.01).fit(X, y)
    b = LogisticClassifier(C=10.0).fit(X, y)
    assert np.linalg.norm(a.coef_) < 0.5 * np.linalg.norm(b.coef_)
    ref = LogisticRegression(C=10.0, tol=1e-7, max_iter=1000).fit(X, y)
    np.testing.assert_allclose(b.coef_, ref.coef_, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("labels", [[-3, 42], [7, -1, 100]])
def test_arbitrary_int_labels(labels):
    X, y = make_data(k=len(labels), labels=labels, seed=5)
    clf = LogisticClassifier().fit(X, y)
    assert clf.classes_.tolist() == sorted(labels)
    pred = clf.predict(X)
    assert set(pred.tolist()) <= set(labels)
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    ref = LogisticRegression(C=1.0, tol=1e-7, max_iter=1000).fit(X, y)
    np.testing.assert_allclose(proba, ref.predict_proba(X), atol=1e-6)
    assert np.array_equal(pred, ref.predict(X))
    assert clf.score(X, y) == pytest.approx(np.mean(pred == y))
    z = clf.decision_function(X)
    assert z.shape == ((len(y),) if len(labels) == 2 else (len(y), len(labels)))
    if len(labels) > 2:
        assert abs(clf.intercept_.sum()) < 1e-10  # centred softmax intercepts


def test_integer_weights_equal_duplication():
    X, y = make_data(n=80, seed=7)
    w = np.random.default_rng(0).integers(1, 4, size=len(y))
    a = LogisticClassifier(tol=1e-10).fit(X, y, sample_weight=w)
    b = LogisticClassifier(tol=1e-10).fit(np.repeat(X, w, axis=0), np.repeat(y, w))
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-5, atol=1e-7)


def test_clone_is_unfitted_copy():
    clf = LogisticClassifier(C=2.5, tol=1e-5, max_iter=50, fit_intercept=False)
    X, y = make_data(seed=8)
    clf.fit(X, y)
    c = clf.clone()
    assert c.get_params() == clf.get_params() and not hasattr(c, "coef_")
    assert np.all(clf.intercept_ == 0)


def test_bad_input():
    X, y = make_data(n=20)
    with pytest.raises(LeanaugError, match="two classes"):
        LogisticClassifier().fit(X, np.zeros(20, dtype=int))
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(LeanaugError, match="NaN"):
        LogisticClassifier().fit(bad, y)
    with pytest.raises(LeanaugError, match="not fitted"):
        LogisticClassifier().predict(X)
    with pytest.raises(LeanaugError, match="C must be"):
        LogisticClassifier(C=-1).fit(X, y)
    with pytest.raises(LeanaugError, match="shape"):
        LogisticClassifier().fit(X, y[:-1])


# -- the torch solver and warm starts -------------------------------------------------------
@pytest.mark.parametrize("solver", ["torch", "newton"])
@pytest.mark.parametrize("k", [2, 4])
def test_torch_solvers_equal_scikit_learn(k, solver):
    rng = np.random.default_rng(30 + k)
    X = rng.normal(size=(400, 6))
    y = np.argmax(X[:, :k] + rng.normal(size=(400, k)), axis=1)
    w = rng.uniform(0.2, 2.0, size=400)
    ref = LogisticClassifier(C=2.0, tol=1e-10).fit(X, y, sample_weight=w)
    fast = LogisticClassifier(C=2.0, tol=1e-10, solver=solver, device="cpu").fit(
        X, y, sample_weight=w
    )
    assert fast.coef_.shape == ref.coef_.shape == ((1 if k == 2 else k), 6)
    np.testing.assert_allclose(fast.coef_, ref.coef_, atol=1e-6)
    np.testing.assert_allclose(fast.intercept_, ref.intercept_, atol=1e-6)
    np.testing.assert_array_equal(fast.classes_, ref.classes_)
    np.testing.assert_allclose(fast.predict_log_proba(X), ref.predict_log_proba(X), atol=1e-6)


@pytest.mark.parametrize("solver", ["lbfgs", "torch", "newton"])
def test_warm_start_reaches_the_same_optimum(solver):
    rng = np.random.default_rng(40)
    X = rng.normal(size=(600, 5))
    y = np.argmax(X[:, :3] + 0.5 * rng.normal(size=(600, 3)), axis=1)
    clean = LogisticClassifier(tol=1e-10, solver=solver).fit(X[:300], y[:300])
    cold = LogisticClassifier(tol=1e-10, solver=solver).fit(X, y)
    warm = LogisticClassifier(tol=1e-10, solver=solver).fit(X, y, init=clean)
    np.testing.assert_allclose(warm.coef_, cold.coef_, atol=1e-6)
    np.testing.assert_allclose(warm.intercept_, cold.intercept_, atol=1e-6)
    # the start is used: from the optimum itself, L-BFGS stops almost at once
    again = LogisticClassifier(tol=1e-6, solver=solver).fit(X, y, init=cold)
    assert int(np.max(again.n_iter_)) <= 2 < int(np.max(cold.n_iter_))
    with pytest.raises(LeanaugError, match="classes"):
        LogisticClassifier(solver=solver).fit(X, (y > 0).astype(int), init=clean)
    with pytest.raises(LeanaugError, match="fitted LogisticClassifier"):
        LogisticClassifier(solver=solver).fit(X, y, init=LogisticClassifier())


def test_unknown_solver_lists_the_valid_ones():
    with pytest.raises(LeanaugError, match="lbfgs, torch, newton"):
        LogisticClassifier(solver="irls")
    with pytest.raises(LeanaugError, match="float32 needs solver=torch"):
        LogisticClassifier(solver="newton", precision="float32")


def test_newton_takes_over_the_preconditioner_and_float32_products():
    rng = np.random.default_rng(50)
    X = np.maximum(rng.normal(size=(800, 8)), 0)  # ReLU-like features
    X[:, 2] = 0.0  # a dead feature: exactly zero weight
    y = np.argmax(X[:, :4] + 0.3 * rng.normal(size=(800, 4)), axis=1)
    ref = LogisticClassifier(tol=1e-10).fit(X, y)
    clean = LogisticClassifier(tol=1e-10, solver="newton").fit(X[:400], y[:400])
    assert clean.hessian_factor_.shape == (4 * 9 - 1,) * 2  # the pinned intercept left out
    warm = LogisticClassifier(tol=1e-10, solver="newton").fit(X, y, init=clean)
    np.testing.assert_allclose(warm.coef_, ref.coef_, atol=1e-6)
    assert np.all(warm.coef_[:, 2] == 0.0)
    # not pickled (large, and only a speed-up)
    import pickle

    assert not hasattr(pickle.loads(pickle.dumps(warm)), "hessian_factor_")
    # float32 products: at the same tol, as close to the optimum as float64 products
    f32 = LogisticClassifier(tol=1e-5, solver="torch", precision="float32").fit(X, y)
    f64 = LogisticClassifier(tol=1e-5, solver="torch").fit(X, y)
    err32, err64 = (np.abs(c.coef_ - ref.coef_).max() for c in (f32, f64))
    assert err32 < 1.5 * err64 < 5e-3, (err32, err64)
