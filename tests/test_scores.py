"""Scores: influence against finite differences, dense solves and actual leave-one-out refits."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp
from scipy.stats import spearmanr
from sklearn.svm import LinearSVC

from leanaug.classifier import LogisticClassifier
from leanaug.errors import LeanaugError, UnknownNameError
from leanaug.scores import (
    SCORES,
    Score,
    check_scores,
    influence_parameter_changes,
    logistic_curvature,
    loo_loss_changes,
    loo_parameter_changes,
    parameter_vector,
    score_function,
    self_influence,
)
from leanaug.scores.influence import LogisticCurvature


def make_data(n=200, d=3, k=2, seed=0, labels=None):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    W = rng.normal(size=(k, d))
    y = np.argmax(X @ W.T + rng.gumbel(size=(n, k)), axis=1)
    if labels is not None:
        y = np.asarray(labels)[y]
    return X, y


def fit(X, y, w=None, C=1.0):
    return LogisticClassifier(C=C, tol=1e-10, max_iter=10_000).fit(X, y, sample_weight=w)


def point_losses(theta, X, y_idx, k):
    """Per-point log loss at flattened [W | b] (independent reference)."""
    d = X.shape[1]
    Wb = theta.reshape(1 if k == 2 else k, d + 1)
    z = X @ Wb[:, :d].T + Wb[:, d]
    if k == 2:
        s = np.where(y_idx == 1, 1.0, -1.0)
        return np.logaddexp(0.0, -s * z[:, 0])
    return logsumexp(z, axis=1) - z[np.arange(len(y_idx)), y_idx]


def dense_hessian(theta, X, y_idx, w, C, k):
    """H of C sum w_i loss_i + 0.5||W||^2 built point by point (no vectorisation, no pinning)."""
    d = X.shape[1]
    Xt = np.hstack([X, np.ones((len(X), 1))])
    rows = 1 if k == 2 else k
    Wb = theta.reshape(rows, d + 1)
    P = Xt @ Wb.T
    H = np.zeros((rows * (d + 1), rows * (d + 1)))
    for i in range(len(X)):
        if k == 2:
            p = 1 / (1 + np.exp(-P[i, 0]))
            A = np.array([[p * (1 - p)]])
        else:
            p = np.exp(P[i] - logsumexp(P[i]))
            A = np.diag(p) - np.outer(p, p)
        H += C * w[i] * np.kron(A, np.outer(Xt[i], Xt[i]))
    pen = np.tile(np.r_[np.ones(d), 0.0], rows)
    return H + np.diag(pen)


def set_params(clf, theta):
    """A copy of clf with parameters theta (for finite differences)."""
    c = clf.clone()
    for attr in ("classes_", "n_features_in_", "n_iter_"):
        setattr(c, attr, getattr(clf, attr))
    d = clf.coef_.shape[1]
    Wb = theta.reshape(clf.coef_.shape[0], d + 1)
    c.coef_, c.intercept_ = Wb[:, :d].copy(), Wb[:, d].copy()
    return c


@pytest.mark.parametrize("k", [2, 3])
def test_gradients_and_hessian_match_finite_differences(k):
    X, y = make_data(n=40, d=3, k=k, seed=10 + k)
    w = np.random.default_rng(0).uniform(0.5, 1.5, size=len(y))
    C = 2.0
    clf = fit(X, y, w, C=C)
    theta = parameter_vector(clf)
    y_idx = np.searchsorted(clf.classes_, y)
    cur = logistic_curvature(clf, X, y, w)
    pinned = k > 2
    h = 1e-6
    E = np.eye(theta.size)
    # per-point gradients g_i = C w_i d loss_i / d theta
    fd = np.stack(
        [
            C
            * w
            * (point_losses(theta + h * e, X, y_idx, k) - point_losses(theta - h * e, X, y_idx, k))
            / (2 * h)
            for e in E
        ],
        axis=1,
    )
    if pinned:
        fd = fd[:, :-1]
    np.testing.assert_allclose(cur.grads, fd, atol=1e-6)

    # Hessian = d/dtheta of the objective's gradient sum_i g_i + (W, 0)
    def total_grad(t):
        g = logistic_curvature(set_params(clf, t), X, y, w).grads.sum(axis=0)
        pen = t.reshape(-1, X.shape[1] + 1).copy()
        pen[:, -1] = 0
        return g + (pen.ravel()[:-1] if pinned else pen.ravel())

    h = 1e-5
    H_fd = np.stack(
        [(total_grad(theta + h * e) - total_grad(theta - h * e)) / (2 * h) for e in E], axis=1
    )
    if pinned:
        H_fd = H_fd[:, :-1]
    c, lower = cur.chol
    L = np.tril(c) if lower else np.triu(c).T
    np.testing.assert_allclose(L @ L.T, H_fd, atol=1e-5 * np.abs(H_fd).max())


@pytest.mark.parametrize("k", [2, 4])
def test_cholesky_equals_dense_solve(k):
    X, y = make_data(n=120, d=5, k=k, seed=20 + k)
    w = np.random.default_rng(1).uniform(0.2, 2.0, size=len(y))
    clf = fit(X, y, w, C=0.7)
    theta = parameter_vector(clf)
    y_idx = np.searchsorted(clf.classes_, y)
    H = dense_hessian(theta, X, y_idx, w, 0.7, k)
    grads = np.stack([0.7 * w[i] * _point_grad(theta, X[i], y_idx[i], k) for i in range(len(y))])
    if k == 2:
        ref = np.einsum("ij,ji->i", grads, np.linalg.solve(H, grads.T))
        ref_delta = np.linalg.solve(H, grads.T).T
    else:
        # H is singular along the common-intercept direction: the pseudo-inverse answer
        assert np.linalg.matrix_rank(H) == H.shape[0] - 1
        Hp = np.linalg.pinv(H, rcond=1e-12, hermitian=True)
        ref = np.einsum("ij,jk,ik->i", grads, Hp, grads)
        ref_delta = grads @ Hp
        # pinning the FIRST class's intercept instead gives the same scores
        q = X.shape[1] + 1
        keep = np.ones(H.shape[0], dtype=bool)
        keep[q - 1] = False
        G = grads[:, keep]
        alt = np.einsum("ij,ji->i", G, np.linalg.solve(H[np.ix_(keep, keep)], G.T))
        np.testing.assert_allclose(alt, ref, rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(self_influence(clf, X, y, w), ref, rtol=1e-8, atol=1e-14)
    delta = influence_parameter_changes(clf, X, y, w)
    np.testing.assert_allclose(delta, ref_delta, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("k", [2, 3])
def test_float32_solve_matches_float64(k):
    X, y = make_data(n=500, d=30, k=k, seed=80 + k)
    w = np.random.default_rng(4).uniform(0.5, 1.5, size=len(y))
    clf = fit(X, y, w)
    exact = self_influence(clf, X, y, w)
    fast = self_influence(clf, X, y, w, solve_precision="float32")
    assert fast.dtype == np.float64
    assert not np.array_equal(fast, exact)  # it really ran in single precision
    np.testing.assert_allclose(fast, exact, rtol=1e-5)
    # the registered score uses the checked float32 solve by default
    np.testing.assert_allclose(SCORES.get("influence")().score(clf, X, y, w), exact, rtol=1e-5)


def test_float32_solve_is_redone_in_float64_when_off():
    # cond(H) = 1e12 and every gradient along the stiffest direction: the float32 solve
    # is off by ~1e-3, which the check on sampled points must catch
    rng = np.random.default_rng(0)
    P = 60
    Q, _ = np.linalg.qr(rng.normal(size=(P, P)))
    H = (Q * np.logspace(0, 12, P)) @ Q.T
    grads = rng.normal(size=(300, 1)) * Q[:, -1][None, :]
    cur = LogisticCurvature(grads, scipy.linalg.cho_factor(H, lower=True), 2, P, pinned=False)
    exact = self_influence(None, None, None, curvature=cur)
    np.testing.assert_allclose(
        exact, np.einsum("ij,ji->i", grads, np.linalg.solve(H, grads.T)), rtol=1e-6
    )
    with pytest.warns(UserWarning, match="solving in float64"):
        checked = self_influence(None, None, None, curvature=cur, solve_precision="float32")
    np.testing.assert_array_equal(checked, exact)


def test_unknown_solve_precision_lists_the_valid_ones():
    X, y = make_data(n=40, d=2, seed=90)
    with pytest.raises(LeanaugError, match="float64, float32"):
        self_influence(fit(X, y), X, y, solve_precision="float16")
    with pytest.raises(LeanaugError, match="float64, float32"):
        SCORES.get("influence")(solve_precision="half")


def _point_grad(theta, x, yi, k):
    d = x.size
    xt = np.r_[x, 1.0]
    Wb = theta.reshape(1 if k == 2 else k, d + 1)
    z = Wb @ xt
    if k == 2:
        return (1 / (1 + np.exp(-z[0])) - (yi == 1)) * xt
    p = np.exp(z - logsumexp(z))
    return np.kron(p - np.eye(k)[yi], xt)


@pytest.mark.parametrize("k", [2, 3])
def test_influence_predicts_leave_one_out_refits(k):
    # well-conditioned: n = 600 points, 3 features; weights and arbitrary labels
    X, y = make_data(n=600, d=3, k=k, seed=30 + k, labels=[-5, 3, 11][:k])
    w = np.random.default_rng(2).uniform(0.5, 1.5, size=len(y))
    clf = fit(X, y, w)
    idx = np.random.default_rng(3).choice(len(y), size=30, replace=False)
    est = influence_parameter_changes(clf, X, y, w, idx)
    true = loo_parameter_changes(clf, X, y, w, idx)
    rel = np.linalg.norm(est - true, axis=1) / np.linalg.norm(true, axis=1)
    assert rel.max() < 0.05, rel
    s_inf = self_influence(clf, X, y, w)[idx]
    s_loo = loo_loss_changes(clf, X, y, w, idx)
    assert np.all(s_loo > 0)
    assert spearmanr(s_inf, s_loo)[0] >= 0.9
    # same quantity to first order, not just the same ranking
    np.testing.assert_allclose(s_inf, s_loo, rtol=0.1)


@pytest.mark.parametrize("k", [2, 3])
def test_influence_test_predicts_leave_one_out_validation_loss(k):
    """influence-test's core, grad L_val^T H^-1 g_i, against exact refits without point i
    (tight solver tol): signed values, both signs present, same ranking and magnitude."""
    from leanaug.scores import loo_validation_loss_changes, validation_influence

    X, y = make_data(n=500, d=3, k=k, seed=130 + k, labels=[4, -1, 7][:k])
    Xv, yv = X[400:], y[400:]
    X, y = X[:400], y[:400]
    w = np.random.default_rng(5).uniform(0.5, 1.5, size=len(y))
    clf = fit(X, y, w)
    idx = np.random.default_rng(6).choice(len(y), size=30, replace=False)
    est = validation_influence(clf, X, y, w, Xv, yv)[idx]
    true = loo_validation_loss_changes(clf, X, y, w, Xv, yv, idx)
    assert (true > 0).any() and (true < 0).any()
    assert spearmanr(est, true)[0] >= 0.95
    assert np.mean(np.sign(est) == np.sign(true)) >= 0.9
    # first order: most points within a few %, the rest off by second-order terms
    assert np.median(np.abs(est - true) / np.abs(true)) < 0.05
    assert np.abs(est - true).max() <= 0.1 * np.abs(true).max()


def test_mean_loss_gradient_matches_finite_differences():
    from leanaug.scores import mean_loss_gradient

    for k in (2, 3):
        X, y = make_data(n=50, d=2, k=k, seed=140 + k)
        clf = fit(X, y)
        theta = parameter_vector(clf)
        y_idx = clf.label_indices(y)
        num = np.array(
            [
                (
                    point_losses(theta + 1e-6 * e, X, y_idx, k).mean()
                    - point_losses(theta - 1e-6 * e, X, y_idx, k).mean()
                )
                / 2e-6
                for e in np.eye(theta.size)
            ]
        )
        np.testing.assert_allclose(mean_loss_gradient(clf, X, y), num, rtol=1e-6, atol=1e-9)


def test_influence_test_score_cross_fits_on_training_folds():
    from leanaug.scores import validation_influence

    X, y = make_data(n=120, d=3, seed=150)
    clf = fit(X, y)
    score = SCORES.get("influence-test")(n_folds=2, seed=3)
    s = score.score(clf, X, y)
    ref = np.empty(len(y))
    for train, val in score.folds(y):  # each point scored by the fit on its own fold
        f = clf.clone().fit(X[train], y[train])
        ref[train] = validation_influence(f, X[train], y[train], None, X[val], y[val])
    np.testing.assert_allclose(s, ref, rtol=1e-12)
    assert s.min() < 0 < s.max() and score.signed
    with pytest.raises(LeanaugError, match="n_folds"):
        SCORES.get("influence-test")(n_folds=1)


@pytest.mark.parametrize("k", [2, 3])
def test_leverage_corrected_self_influence(k):
    """g^T (H - H_i)^-1 g (= g^T H^-1 g / (1 - h_ii) for two classes) against a dense
    solve with H_i built point by point, and closer to exact leave-one-out refits than
    the plain self-influence."""
    from leanaug.scores import leverage_self_influence

    X, y = make_data(n=80, d=3, k=k, seed=160 + k)
    w = np.random.default_rng(7).uniform(0.5, 1.5, size=len(y))
    clf = fit(X, y, w)
    cur = logistic_curvature(clf, X, y, w)
    lev = leverage_self_influence(clf, X, y, w)
    theta = parameter_vector(clf)
    y_idx = clf.label_indices(y)
    H = dense_hessian(theta, X, y_idx, w, 1.0, k)
    for i in range(0, 80, 9):
        Hi = dense_hessian(theta, X[i : i + 1], y_idx[i : i + 1], w[i : i + 1], 1.0, k)
        Hi -= np.diag(np.diag(dense_hessian(theta, X[:0], y_idx[:0], w[:0], 1.0, k)))
        Hm = H - Hi
        g = cur.grads[i]
        if cur.pinned:
            Hm = Hm[:-1, :-1]
        assert lev[i] == pytest.approx(g @ np.linalg.solve(Hm, g), rel=1e-8)
    if k == 2:
        Xt = np.hstack([X, np.ones((80, 1))])
        p = 1 / (1 + np.exp(-(Xt @ theta)))
        h = w * p * (1 - p) * np.einsum("ij,ji->i", Xt, np.linalg.solve(H, Xt.T))
        np.testing.assert_allclose(lev, self_influence(clf, X, y, w) / (1 - h), rtol=1e-9)
    idx = np.arange(0, 80, 4)
    true = loo_loss_changes(clf, X, y, w, idx)
    plain = SCORES.get("influence")().score(clf, X, y, w)[idx]
    corrected = SCORES.get("influence")(leverage=True).score(clf, X, y, w)[idx]
    err = lambda s: np.abs(s - true).sum()  # noqa: E731
    assert err(corrected) < 0.8 * err(plain)


def test_loo_score_is_abs_loss_change():
    X, y = make_data(n=30, d=2, seed=40)
    clf = fit(X, y)
    s = SCORES.get("loo")().score(clf, X, y)
    np.testing.assert_allclose(s, np.abs(loo_loss_changes(clf, X, y)))
    assert spearmanr(s, SCORES.get("influence")().score(clf, X, y))[0] > 0.9


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.sampled_from([2, 3]))
def test_influence_invariant_to_permutation(seed, k):
    X, y = make_data(n=60, d=3, k=k, seed=50)
    w = np.linspace(0.5, 1.5, len(y))
    perm = np.random.default_rng(seed).permutation(len(y))
    s = SCORES.get("influence")().score(fit(X, y, w), X, y, w)
    sp = SCORES.get("influence")().score(fit(X[perm], y[perm], w[perm]), X[perm], y[perm], w[perm])
    np.testing.assert_allclose(sp, s[perm], rtol=1e-5, atol=1e-12)


def test_influence_without_intercept_matches_autograd():
    """Without an intercept, against a reference built by torch autograd from the
    documented objective ``C sum_i w_i logloss_i(W) + 0.5 ||W||^2`` alone (not from the
    code's own gradients or Hessian factor), with C != 1 and non-uniform weights.

    Planted bug it catches: a factor 2 on C (or on the weights) in ``logistic_curvature``
    (``c = 2 * C * w``), and sample weights ignored there (``c = C * ones``)."""
    import torch

    X, y = make_data(n=80, d=4, k=3, seed=60)
    w = np.random.default_rng(61).uniform(0.3, 2.0, size=len(y))
    C = 2.5
    clf = LogisticClassifier(C=C, fit_intercept=False, tol=1e-10, max_iter=10_000)
    clf.fit(X, y, sample_weight=w)
    cur = logistic_curvature(clf, X, y, w)
    assert not cur.pinned and cur.grads.shape[1] == 3 * 4
    Xt, wt = torch.from_numpy(X), torch.from_numpy(w)
    yt = torch.from_numpy(np.searchsorted(clf.classes_, y))
    W = torch.from_numpy(clf.coef_.copy())  # (K, d), flattened row-major = parameter_vector

    def weighted_losses(flat):  # C w_i logloss_i, (n,)
        z = Xt @ flat.reshape(3, 4).T
        return C * wt * (torch.logsumexp(z, dim=1) - z[torch.arange(len(yt)), yt])

    def objective(flat):
        return weighted_losses(flat).sum() + 0.5 * (flat**2).sum()

    G = torch.autograd.functional.jacobian(weighted_losses, W.flatten()).numpy()  # (n, P)
    H = torch.autograd.functional.hessian(objective, W.flatten()).numpy()  # (P, P)
    np.testing.assert_allclose(cur.grads, G, rtol=1e-10, atol=1e-12)
    ref = np.einsum("ij,ji->i", G, np.linalg.solve(H, G.T))
    np.testing.assert_allclose(self_influence(clf, X, y, w), ref, rtol=1e-9)
    np.testing.assert_allclose(
        influence_parameter_changes(clf, X, y, w), np.linalg.solve(H, G.T).T, rtol=1e-8
    )


def test_loss_score_is_log_loss():
    X, y = make_data(n=100, k=3, seed=70, labels=[2, 9, 4])
    clf = fit(X, y)
    s = SCORES.get("loss")().score(clf, X, y)
    p = clf._model.predict_proba(X)[np.arange(len(y)), np.searchsorted(clf.classes_, y)]
    np.testing.assert_allclose(s, -np.log(p), rtol=1e-6)


@pytest.mark.parametrize("k", [2, 3])
def test_margin_exp_score(k):
    X, y = make_data(n=150, k=k, seed=80 + k)
    s = SCORES.get("margin-exp")(C=0.5).score(fit(X, y), X, y)
    assert np.all((s > 0) & (s <= 1))
    svm = LinearSVC(C=0.5, max_iter=10_000).fit(X, y)
    z = svm.decision_function(X)
    if k == 2:
        m = z
    else:  # own class's value minus the best other class's value
        own = np.searchsorted(svm.classes_, y)
        other = z.copy()
        other[np.arange(len(y)), own] = -np.inf
        m = z[np.arange(len(y)), own] - other.max(axis=1)
    np.testing.assert_allclose(s, np.exp(-np.abs(m)), rtol=1e-3, atol=1e-4)
    # the point nearest the boundary gets the largest score
    assert np.argmax(s) == np.argmin(np.abs(m))


def test_margin_score_is_the_absolute_svc_margin():
    """The reference's margin: |decision value| of a linear SVC. By hand on a 1-d,
    separable case (hard margin, f(x) = x): |m| = |x|; a point on the wrong side of the
    boundary scores its distance, like its mirror image on the right side."""
    X = np.array([[-3.0], [-2.0], [-1.0], [1.0], [2.0], [3.0]])
    y = np.array([0, 0, 0, 1, 1, 1])
    s = SCORES.get("margin")(C=100.0).score(None, X, y)
    np.testing.assert_allclose(s, [3, 2, 1, 1, 2, 3], rtol=1e-6)
    from sklearn.svm import SVC

    X, y = make_data(n=120, k=2, seed=81)
    s = SCORES.get("margin")().score(fit(X, y), X, y)
    z = SVC(kernel="linear", C=1.0).fit(X, y).decision_function(X)
    assert np.any(z[y == 0] > 0)  # some points lie on the wrong side
    np.testing.assert_allclose(s, np.abs(z), rtol=1e-9)
    # proportional favours far points, inverse near ones
    from leanaug.policies import POLICIES, SelectionProblem

    problem = SelectionProblem(X, y, s, X[:, None, :])
    rng = np.random.default_rng(0)
    prop = [
        s[POLICIES.get("proportional")().select(problem, [1], rng)[1].indices[0]]
        for _ in range(400)
    ]
    inv = [s[POLICIES.get("inverse")().select(problem, [1], rng)[1].indices[0]] for _ in range(400)]
    assert np.mean(prop) > np.mean(s) > np.mean(inv)


def test_random_score_needs_rng_and_is_uniform():
    X, y = make_data(n=5000, seed=90)
    clf = fit(X, y)
    s = SCORES.get("random")().score(clf, X, y, rng=np.random.default_rng(0))
    assert 0 <= s.min() and s.max() < 1 and abs(s.mean() - 0.5) < 0.02
    with pytest.raises(LeanaugError, match="rng"):
        SCORES.get("random")().score(clf, X, y)
    fn = score_function(SCORES.get("random")(), rng=np.random.default_rng(1))
    assert fn(clf, X, y, None).shape == (5000,)


def test_bad_input_raises():
    with pytest.raises(
        UnknownNameError,
        match="valid names: influence, influence-test, loo, loss, margin, margin-exp, random",
    ):
        SCORES.get("nope")
    with pytest.raises(LeanaugError, match="NaN"):
        check_scores(np.array([1.0, np.nan]), 2)
    with pytest.raises(LeanaugError, match=">= 0"):
        check_scores(np.array([1.0, -1.0]), 2)

    class Broken(Score):
        name = "broken"

        def _score(self, clf, X, y, sample_weight, rng):
            return np.full(len(y), np.inf)

    X, y = make_data(n=20, seed=91)
    clf = fit(X, y)
    with pytest.raises(LeanaugError, match="broken score has 20 NaN/infinite"):
        Broken().score(clf, X, y)
    with pytest.raises(LeanaugError, match="not fitted"):
        SCORES.get("influence")().score(LogisticClassifier(), X, y)
    with pytest.raises(LeanaugError, match="columns"):
        SCORES.get("influence")().score(clf, X[:, :1], y)
    with pytest.raises(LeanaugError, match="not seen"):
        SCORES.get("influence")().score(clf, X, y + 5)


# -- batched self-influence (large fits) ----------------------------------------------------
@pytest.mark.parametrize("k,intercept", [(2, True), (3, True), (3, False), (2, False)])
def test_batched_self_influence_equals_the_dense_one(k, intercept, monkeypatch):
    from leanaug import logistic
    from leanaug.scores import influence_batched as ib

    monkeypatch.setattr(ib, "CHUNK", 128)  # several chunks on a small problem
    monkeypatch.setattr(logistic, "CHUNK", 128)
    X, y = make_data(n=500, d=12, k=k, seed=200 + k)
    X[:, [3, 8]] = 0.0  # features that are zero everywhere are left out, exactly
    w = np.random.default_rng(5).uniform(0.5, 1.5, size=len(y))
    clf = LogisticClassifier(C=2.0, fit_intercept=intercept).fit(X, y, w)
    exact = self_influence(clf, X, y, w)
    double = ib.batched_self_influence(clf, X, y, w, precision="float64", device="cpu")
    np.testing.assert_allclose(double, exact, rtol=1e-10)
    single = ib.batched_self_influence(clf, X, y, w, precision="float32", device="cpu")
    assert not np.array_equal(single, exact)  # it really ran in single precision
    np.testing.assert_allclose(single, exact, rtol=1e-5)
    # the check's float64 reference: Hessian-vector products from the data and
    # preconditioned CG from the float32-accumulated factor reproduce the dense scores
    f, theta = ib._problem(clf, X, y, w, torch.device("cpu"))
    assert f.design.shape[1] == 12 - 2 + intercept
    H = f.hessian(theta, torch.float64)
    V = torch.randn(H.shape[0], 3, dtype=torch.float64)
    torch.testing.assert_close(f.hessian_times(theta, V), H @ V, rtol=1e-10, atol=1e-10)
    L = ib._cholesky(f.hessian(theta, torch.float32))
    points = torch.tensor([0, 7, 499])
    np.testing.assert_allclose(ib._exact_norms(f, theta, L, points).numpy(),
                               exact[[0, 7, 499]], rtol=1e-10)  # fmt: skip


def test_batched_self_influence_redone_in_float64_when_the_check_fails(monkeypatch):
    from leanaug.scores import influence as inf
    from leanaug.scores import influence_batched as ib

    X, y = make_data(n=300, d=6, k=3, seed=210)
    clf = LogisticClassifier().fit(X, y)
    exact = ib.batched_self_influence(clf, X, y, precision="float64", device="cpu")
    monkeypatch.setattr(inf, "CHECK_RTOL", 1e-14)  # no float32 result can pass this
    with pytest.warns(UserWarning, match="solving in float64"):
        checked = ib.batched_self_influence(clf, X, y, precision="float32", device="cpu")
    np.testing.assert_array_equal(checked, exact)
    with pytest.raises(LeanaugError, match="float32, float64"):
        ib.batched_self_influence(clf, X, y, precision="half")


def test_influence_score_batched_method():
    X, y = make_data(n=300, d=5, k=3, seed=220)
    clf = LogisticClassifier().fit(X, y)
    dense = SCORES.get("influence")().score(clf, X, y)
    batched = SCORES.get("influence")(method="batched", device="cpu").score(clf, X, y)
    np.testing.assert_allclose(batched, dense, rtol=1e-5)
    with pytest.raises(LeanaugError, match="dense, batched"):
        SCORES.get("influence")(method="sparse")
    with pytest.raises(LeanaugError, match="leverage=true needs method=dense"):
        SCORES.get("influence")(method="batched", leverage=True)


@pytest.mark.parametrize("k", [2, 3])
def test_well_fitted_points_keep_their_tiny_influence(k):
    """A point fitted to p_y = 1 - 1e-20 has a residual of 1e-20, which 1 - p_y rounds to
    0 (or to noise); both influence paths compute it as the other classes' probability."""
    rng = np.random.default_rng(300 + k)
    X = rng.normal(size=(200, 2))
    y = np.argmax(X @ rng.normal(size=(2, k)) + rng.gumbel(size=(200, k)), axis=1)
    clf = LogisticClassifier(C=1.0).fit(X, y)
    far = np.argmax(np.abs(clf.decision_function(X)).reshape(200, -1).max(1))
    X = X.copy()
    X[far] *= 40.0  # the same point, now far on its predicted side
    y = y.copy()
    y[far] = clf.predict(X[far : far + 1])[0]
    clf = LogisticClassifier(C=1.0).fit(X, y)
    p = clf.predict_proba(X[far : far + 1])[0]
    others = np.delete(p, clf.label_indices(y[far : far + 1])[0]).sum()
    assert 0.0 < others < 1e-15  # 1 - p_y cannot hold it
    dense = self_influence(clf, X, y)
    from leanaug.scores.influence_batched import batched_self_influence

    batched = batched_self_influence(clf, X, y, precision="float64", device="cpu")
    assert dense[far] > 0.0
    np.testing.assert_allclose(batched, dense, rtol=1e-9)
    # and it is the quadratic form of the exact residual: c * (p - t) = -c * others (x) x~
    cur = logistic_curvature(clf, X, y)
    g = cur.grads[far]
    xt = np.append(X[far], 1.0)
    if k == 2:
        np.testing.assert_allclose(g, -others * xt, rtol=1e-9)
