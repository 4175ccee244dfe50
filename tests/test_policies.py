"""Policies: frequencies vs scores, nestedness, weights, k-DPP distribution, refit counts."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare
from sklearn.svm import SVC

from leanaug.classifier import LogisticClassifier
from leanaug.errors import LeanaugError, UnknownNameError
from leanaug.policies import (
    POLICIES,
    DPPPolicy,
    Selection,
    SelectionProblem,
    augmented_training_set,
    dpp_kernel,
)
from leanaug.policies import dpp as dpp_module
from leanaug.scores import SCORES, score_function

NESTED = [
    "random",
    "proportional",
    "inverse",
    "topk",
    "bottomk",
    "downweight",
    "cluster",
    "cluster-topk",
    "sv",
    "update",
    "coreset",
]


def make_problem(
    n=40, d=4, K=3, seed=0, scores=None, score_fn=None, make_classifier=LogisticClassifier
):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = (X[:, 0] + 0.7 * rng.normal(size=n) > 0).astype(int)
    A = X[:, None, :] + 0.1 * rng.normal(size=(n, K, d))
    if scores is None:
        scores = rng.uniform(0.05, 1.0, size=n)
    return SelectionProblem(X, y, scores, A, make_classifier=make_classifier, score_fn=score_fn)


def loss_fn():
    return score_function(SCORES.get("loss")())


def test_proportional_first_pick_frequencies_match_scores():
    s = np.arange(1.0, 11.0)  # n = 10, P(first = i) = s_i / 55
    problem = make_problem(n=10, scores=s)
    policy = POLICIES.get("proportional")()
    rng = np.random.default_rng(123)
    draws = 20_000
    first = np.array([policy.select(problem, [1], rng)[1].indices[0] for _ in range(draws)])
    counts = np.bincount(first, minlength=10)
    assert chisquare(counts, draws * s / s.sum()).pvalue > 1e-3


def test_proportional_is_sequential_without_replacement():
    # P(first = i, second = j) = p_i p_j / (1 - p_i) for sequential draws
    s = np.array([1.0, 2.0, 3.0, 4.0])
    p = s / s.sum()
    problem = make_problem(n=4, scores=s)
    policy = POLICIES.get("proportional")()
    rng = np.random.default_rng(7)
    draws = 12_000
    pairs = [tuple(policy.select(problem, [2], rng)[2].indices) for _ in range(draws)]
    cells = [(i, j) for i in range(4) for j in range(4) if i != j]
    observed = np.array([sum(1 for q in pairs if q == c) for c in cells])
    expected = np.array([p[i] * p[j] / (1 - p[i]) for i, j in cells]) * draws
    assert chisquare(observed, expected).pvalue > 1e-3


def test_inverse_first_pick_frequencies():
    s = np.array([1.0, 2.0, 4.0, 8.0])
    problem = make_problem(n=4, scores=s)
    policy = POLICIES.get("inverse")()
    rng = np.random.default_rng(5)
    first = np.array([policy.select(problem, [1], rng)[1].indices[0] for _ in range(8000)])
    inv = 1 / s
    assert chisquare(np.bincount(first, minlength=4), 8000 * inv / inv.sum()).pvalue > 1e-3


def test_zero_scores():
    s = np.array([0.0, 1.0, 0.0, 2.0, 3.0])
    problem = make_problem(n=5, scores=s)
    rng = np.random.default_rng(0)
    for _ in range(20):
        order = POLICIES.get("proportional")().select(problem, [5], rng)[5].indices
        assert set(order[:3]) == {1, 3, 4} and set(order[3:]) == {0, 2}
        inv = POLICIES.get("inverse")().select(problem, [5], rng)[5].indices
        assert set(inv[:2]) == {0, 2}
    with pytest.raises(LeanaugError, match="zero everywhere"):
        POLICIES.get("proportional")().select(make_problem(n=5, scores=np.zeros(5)), [2], rng)


def test_topk_is_deterministic_descending():
    s = np.array([0.3, 0.9, 0.1, 0.9, 0.5])
    sel = POLICIES.get("topk")().select(make_problem(n=5, scores=s), [5])
    assert sel[5].indices.tolist() == [1, 3, 4, 0, 2]


@settings(max_examples=15, deadline=None)
@given(
    name=st.sampled_from(NESTED),
    seed=st.integers(0, 2**31),
    budgets=st.lists(st.integers(0, 30), min_size=1, max_size=5),
)
def test_selections_are_nested(name, seed, budgets):
    params = {"update": {"k": 7}, "cluster": {"n_clusters": 4}, "cluster-topk": {"n_clusters": 4}}
    params = params.get(name, {})
    problem = make_problem(n=30, seed=seed % 1000, score_fn=loss_fn())
    sel = POLICIES.get(name)(**params).select(problem, budgets, np.random.default_rng(seed))
    assert sorted(sel) == sorted(set(budgets))
    bs = sorted(sel)
    for b in bs:
        idx = sel[b].indices
        assert idx.size == b and np.unique(idx).size == b and (b == 0 or idx.max() < 30)
    for small, big in itertools.pairwise(bs):
        assert np.array_equal(sel[big].indices[:small], sel[small].indices)


@pytest.mark.parametrize("weighting", ["uniform", "downweight"])
def test_augmented_training_set(weighting):
    problem = make_problem(n=20, K=3)
    idx = np.array([5, 2, 11])
    X, y, w = augmented_training_set(problem, Selection(idx, weighting))
    assert X.shape == (20 + 9, 4) and y.shape == w.shape == (29,)
    np.testing.assert_array_equal(X[:20], problem.features)
    np.testing.assert_array_equal(X[20:23], problem.augmented_features[5])
    np.testing.assert_array_equal(X[23:26], problem.augmented_features[2])
    np.testing.assert_array_equal(y[20:], np.repeat(problem.labels[idx], 3))
    if weighting == "uniform":
        assert np.all(w == 1)
    else:
        assert w.sum() == pytest.approx(20)  # weights sum to the number of originals
        np.testing.assert_allclose(w[idx], 0.25)
        np.testing.assert_allclose(w[20:], 0.25)
        assert np.all(np.delete(w[:20], idx) == 1)


def test_downweight_policy_weights_sum_to_n():
    problem = make_problem(n=25, K=4)
    sel = POLICIES.get("downweight")().select(problem, [0, 5, 25], np.random.default_rng(0))
    for b, s in sel.items():
        assert s.weighting == "downweight"
        _, _, w = augmented_training_set(problem, s)
        assert w.sum() == pytest.approx(25) and w.size == 25 + 4 * b


def _reference_kernel(features, scores, feature_scale, eps):
    """The paper's k-DPP kernel written out entry by entry (independent of ``dpp_kernel``):
    ``L_ij = s_i s_j <phi_i, phi_j> + eps [i == j]``, ``phi_i = feature_scale x_i / ||x_i||``."""
    n = len(scores)
    L = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            phi_i = feature_scale * features[i] / np.sqrt(np.sum(features[i] ** 2))
            phi_j = feature_scale * features[j] / np.sqrt(np.sum(features[j] ** 2))
            L[i, j] = scores[i] * scores[j] * np.dot(phi_i, phi_j) + (eps if i == j else 0.0)
    return L


def test_dpp_kernel_is_the_papers_formula_on_a_tiny_case():
    """L = diag(s) Phi Phi^T diag(s) + eps I, Phi = feature_scale * L2-normalised features,
    on 3 points whose entries are worked out by hand.

    Planted bugs it catches: scores entering once instead of squared
    (``q = sqrt(s) * phi``), a missing or rescaled ridge (``eps * feature_scale``), features
    not normalised, and policy defaults other than the paper's 1e3 / 1e-3."""
    X = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])  # unit vectors (.6,.8), (1,0), (0,1)
    s = np.array([2.0, 1.0, 0.5])
    # feature_scale 1, eps 0.5: every term visible at the same magnitude
    expected = np.array(
        [
            [4.0 + 0.5, 2 * 0.6, 1 * 0.8],
            [2 * 0.6, 1.0 + 0.5, 0.0],
            [1 * 0.8, 0.0, 0.25 + 0.5],
        ]
    )
    np.testing.assert_allclose(dpp_kernel(X, s, 1.0, 0.5), expected, rtol=1e-12, atol=1e-15)
    # feature_scale 3 multiplies the feature part by 9, not the ridge
    np.testing.assert_allclose(
        dpp_kernel(X, s, 3.0, 0.5), 9 * (expected - 0.5 * np.eye(3)) + 0.5 * np.eye(3), rtol=1e-12
    )
    # the policy's defaults are the paper's (Phi = 1e3 * normalised, eps = 1e-3)
    problem = make_problem(n=5, d=3, seed=7)
    np.testing.assert_allclose(
        DPPPolicy().kernel(problem),
        _reference_kernel(problem.features, problem.scores, 1e3, 1e-3),
        rtol=1e-12,
        atol=1e-6,
    )
    no_ridge = _reference_kernel(problem.features, problem.scores, 1e3, 0.0)
    np.testing.assert_allclose(np.diag(DPPPolicy().kernel(problem) - no_ridge), 1e-3, rtol=1e-3)


def _exact_kdpp_probs(L, k):
    subsets = list(itertools.combinations(range(L.shape[0]), k))
    dets = np.array([np.linalg.det(L[np.ix_(S, S)]) for S in subsets])
    return subsets, dets / dets.sum()


@pytest.mark.parametrize(("force_log_space", "k"), [(False, 2), (True, 4)])
def test_kdpp_samples_follow_det_L(force_log_space, k, monkeypatch):
    """n = 6: 15 subsets of size 2 or 4 (4 > rank(Phi) = 3: the ridge matters); sample
    frequencies against det(L_S) / sum det with L written out by ``_reference_kernel``
    (not the code's kernel). Planted bugs it catches: a wrong kernel weight (scores not
    squared) and a sampler that ignores the ridge."""
    rng = np.random.default_rng(1)
    problem = make_problem(n=6, d=3, scores=rng.uniform(0.3, 1.5, size=6), seed=2)
    policy = DPPPolicy(feature_scale=1.0, eps=0.05)
    if force_log_space:
        monkeypatch.setattr(DPPPolicy, "_rescale", staticmethod(lambda logE: None))
    L = _reference_kernel(problem.features, problem.scores, 1.0, 0.05)
    subsets, probs = _exact_kdpp_probs(L, k)
    draws = 3000
    counts = dict.fromkeys(subsets, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # k = 4 > rank 3: the rank warning
        for _ in range(draws):
            counts[tuple(sorted(policy.select(problem, [k], rng)[k].indices.tolist()))] += 1
    assert set(policy.samplers_.values()) == {"log-space" if force_log_space else "dppy"}
    assert chisquare(np.array([counts[S] for S in subsets]), draws * probs).pvalue > 1e-3


def test_kdpp_log_det_beats_random_subsets():
    problem = make_problem(n=80, d=6, seed=3)
    L = DPPPolicy().kernel(problem)
    rng = np.random.default_rng(4)
    policy = DPPPolicy()
    k, reps = 5, 60

    def logdet(S):
        return np.linalg.slogdet(L[np.ix_(S, S)])[1]

    dpp = np.mean([logdet(policy.select(problem, [k], rng)[k].indices) for _ in range(reps)])
    rand = np.mean([logdet(rng.choice(80, size=k, replace=False)) for _ in range(reps)])
    assert dpp > rand + 1.0


def test_kdpp_beyond_feature_rank_uses_log_space_and_is_valid():
    # paper scaling (Phi * 1e3, eps 1e-3): k far above rank(Phi) = 60 spans more than
    # float64 can hold in DPPy's polynomial table, whatever constant L is scaled by
    problem = make_problem(n=200, d=60, seed=5)
    policy = DPPPolicy()
    with pytest.warns(UserWarning, match="budget 200 exceeds the rank 60"):
        sel = policy.select(problem, [0, 2, 190, 200], np.random.default_rng(0))
    assert policy.samplers_[2] == "dppy" and policy.samplers_[190] == "log-space"
    for b, s in sel.items():
        assert len(s) == b and np.unique(s.indices).size == b
    with np.errstate(divide="ignore"):
        logE = dpp_module.log_elementary_symmetric(np.log([4.0, 2.0, 1.0]), 2)
    np.testing.assert_allclose(np.exp(logE[:, 3]), [1.0, 7.0, 14.0])  # e_j(4, 2, 1)
    L = dpp_kernel(problem.features, problem.scores, 1e3, 1e-3)
    ref = _reference_kernel(problem.features[:8], problem.scores[:8], 1e3, 1e-3)
    np.testing.assert_allclose(L[:8, :8], ref, rtol=1e-12, atol=1e-6)


def test_update_k1_refits_after_every_addition():
    calls = {"fit": 0, "score": 0}

    def make_classifier():
        calls["fit"] += 1
        return LogisticClassifier()

    inner = loss_fn()

    def score_fn(clf, X, y, w):
        calls["score"] += 1
        assert X.shape[0] == 30 + 3 * calls["score"]  # one more augmented point each time
        return inner(clf, X, y, w)

    problem = make_problem(n=30, K=3, score_fn=score_fn, make_classifier=make_classifier)
    sel = POLICIES.get("update")(k=1, mode="greedy").select(
        problem, [2, 6], np.random.default_rng(0)
    )
    assert calls == {"fit": 5, "score": 5}  # ceil(6 / 1) - 1 refits
    assert sel[6].indices[0] == np.argmax(problem.scores)
    # greedy: each later pick is the top re-scored remaining point
    X, y, w = augmented_training_set(problem, Selection(sel[6].indices[:3]))
    s = inner(LogisticClassifier().fit(X, y, w), X, y, w)[:30]
    s[sel[6].indices[:3]] = -1
    assert sel[6].indices[3] == np.argmax(s)


def test_update_default_rescoring_at_budgets():
    calls = {"fit": 0}

    def make_classifier():
        calls["fit"] += 1
        return LogisticClassifier()

    problem = make_problem(n=30, score_fn=loss_fn(), make_classifier=make_classifier)
    POLICIES.get("update")().select(problem, [0, 3, 10, 20], np.random.default_rng(0))
    assert calls["fit"] == 2
    with pytest.raises(LeanaugError, match="score_fn"):
        POLICIES.get("update")().select(make_problem(n=30), [3, 10], np.random.default_rng(0))
    with pytest.raises(LeanaugError, match="mode"):
        POLICIES.get("update")(mode="best")


def test_cluster_topk_round_robin_covers_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [20, 0], [0, 20], [20, 20]], dtype=float)
    blob = np.repeat(np.arange(4), 15)
    X = centres[blob] + rng.normal(size=(60, 2))
    s = rng.uniform(0.1, 1, size=60)
    problem = SelectionProblem(X, (blob % 2), s, X[:, None, :])
    order = POLICIES.get("cluster-topk")(n_clusters=4).select(problem, [60], rng)[60].indices
    for r in range(15):  # every round takes one point of each blob, best score first
        assert sorted(blob[order[4 * r : 4 * r + 4]].tolist()) == [0, 1, 2, 3]
        for c in range(4):
            members = np.flatnonzero(blob == c)
            assert (
                order[4 * r : 4 * r + 4][blob[order[4 * r : 4 * r + 4]] == c][0]
                == members[np.argsort(-s[members])][r]
            )
    assert s[order[0]] == s.max()
    with pytest.raises(LeanaugError, match="exceeds"):
        POLICIES.get("cluster-topk")(n_clusters=61).select(problem, [1], rng)


def test_sv_returns_support_vectors_first():
    problem = make_problem(n=60, seed=9)
    sv = set(SVC(kernel="linear", C=1.0).fit(problem.features, problem.labels).support_.tolist())
    assert 0 < len(sv) < 60
    order = POLICIES.get("sv")().select(problem, [60])[60].indices
    head, tail = order[: len(sv)], order[len(sv) :]
    assert set(head.tolist()) == sv
    assert np.all(np.diff(problem.scores[head]) <= 0) and np.all(np.diff(problem.scores[tail]) <= 0)


def test_bad_input():
    problem = make_problem(n=10)
    rng = np.random.default_rng(0)
    with pytest.raises(
        UnknownNameError,
        match="valid names: bottomk, cluster, cluster-topk, coreset, downweight, dpp, inverse",
    ):
        POLICIES.get("bogus")
    for budgets, msg in [
        ([11], "larger than"),
        ([-1], "negative"),
        ([], "no budgets"),
        ([1.5], "integer"),
    ]:
        with pytest.raises(LeanaugError, match=msg):
            POLICIES.get("random")().select(problem, budgets, rng)
    with pytest.raises(LeanaugError, match="NaN"):
        make_problem(n=10, scores=np.r_[np.nan, np.ones(9)])
    with pytest.raises(LeanaugError, match="rng"):
        POLICIES.get("proportional")().select(problem, [3])
    with pytest.raises(LeanaugError, match="weighting"):
        Selection(np.array([1]), "heavy")
    with pytest.raises(LeanaugError, match="augmented_features"):
        SelectionProblem(problem.features, problem.labels, problem.scores, problem.features)
    with pytest.raises(LeanaugError, match="duplicates"):
        augmented_training_set(problem, Selection(np.array([1, 1])))

    def nan_score(clf, X, y, w):
        return np.full(X.shape[0], np.nan)

    bad = make_problem(n=10, score_fn=nan_score)
    with pytest.raises(LeanaugError, match="NaN"):
        POLICIES.get("update")(k=1).select(bad, [3], rng)


# -- the reference code's policies (issue 20), each against a hand-computed selection ---
def test_round_robin_order_hand_computed():
    # clusters 0: {1, 4}, 1: {0, 2, 5}, 2: {3}; inner order 5, 4, 3, 2, 1, 0
    # round 0: c0 -> 4, c1 -> 5, c2 -> 3; round 1: c0 -> 1, c1 -> 2; round 2: c1 -> 0
    from leanaug.policies import round_robin_order

    order = round_robin_order(np.array([1, 0, 1, 2, 0, 1]), np.array([5, 4, 3, 2, 1, 0]))
    assert order.tolist() == [4, 5, 3, 1, 2, 0]


@pytest.mark.parametrize("inner", ["random", "proportional"])
def test_cluster_visits_clusters_by_id_with_inner_draws(inner, monkeypatch):
    """The reference's cluster policy: clusters by id, round-robin; inside a cluster a
    random or score-proportional order (first-pick frequencies inside cluster 0 against
    the scores). Labels are fixed, so the visiting order is known by hand."""
    from leanaug.policies import ClusterPolicy

    labels = np.array([2, 0, 1, 0, 2, 0, 1])  # sizes 3, 2, 2
    monkeypatch.setattr(ClusterPolicy, "cluster_labels", lambda self, problem, rng: labels)
    s = np.array([1.0, 1.0, 1.0, 6.0, 1.0, 3.0, 1.0])
    problem = make_problem(n=7, scores=s)
    policy = POLICIES.get("cluster")(n_clusters=3, inner=inner)
    rng = np.random.default_rng(0)
    first = {1: 0, 3: 0, 5: 0}
    for _ in range(2000):
        order = policy.select(problem, [7], rng)[7].indices
        # rounds of 3, 3, 1: cluster ids 0, 1, 2, 0, 1, 2, 0
        assert labels[order].tolist() == [0, 1, 2, 0, 1, 2, 0]
        first[int(order[0])] += 1
    p = np.array([1, 6, 3]) / 10 if inner == "proportional" else np.ones(3) / 3
    assert chisquare([first[1], first[3], first[5]], 2000 * p).pvalue > 1e-3


def test_cluster_parameters_sweep_through_specs():
    from leanaug.experiments.config import instantiate

    for k in (1, 10, 100):
        policy = instantiate("policy", POLICIES, f"cluster:n_clusters={k},inner=proportional")
        assert (policy.n_clusters, policy.inner) == (k, "proportional")
    with pytest.raises(LeanaugError, match="inner"):
        POLICIES.get("cluster")(inner="best")


def test_vsv_augments_exactly_the_support_vectors():
    # 1-d, separable with a wide margin: with C = 100 (hard margin) f(x) = x, the
    # support vectors are the two points at -1 and +1 (indices 2 and 3), by hand
    X = np.array([[-3.0], [-2.0], [-1.0], [1.0], [2.0], [3.0]])
    y = np.array([0, 0, 0, 1, 1, 1])
    problem = SelectionProblem(X, y, np.ones(6), X[:, None, :] + 0.1)
    sel = POLICIES.get("vsv")(C=100.0).select(problem, [0, 1, 2, 6])
    assert [sel[b].indices.tolist() for b in (0, 1, 2, 6)] == [[], [2, 3], [2, 3], [2, 3]]
    # C by 4-fold CV: the C and support vectors scikit-learn's GridSearchCV / SVC give
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    problem = make_problem(n=80, seed=12)
    policy = POLICIES.get("vsv")(weighting="downweight")
    sel = policy.select(problem, [10, 80])
    search = GridSearchCV(
        SVC(kernel="linear"), {"C": [0.01, 0.1, 1, 10, 100]}, cv=StratifiedKFold(4)
    ).fit(problem.features, problem.labels)
    assert policy.C_ == search.best_params_["C"]
    sv = SVC(kernel="linear", C=policy.C_).fit(problem.features, problem.labels).support_
    assert sel[10].indices.tolist() == sel[80].indices.tolist() == sorted(sv.tolist())
    assert sel[10].weighting == "downweight" and 10 < len(sv) < 80


def test_bottomk_and_topk_downweight():
    s = np.array([0.3, 0.9, 0.1, 0.9, 0.5])
    problem = make_problem(n=5, scores=s)
    assert POLICIES.get("bottomk")().select(problem, [5])[5].indices.tolist() == [2, 0, 4, 1, 3]
    sel = POLICIES.get("topk")(weighting="downweight").select(problem, [2])[2]
    assert sel.indices.tolist() == [1, 3] and sel.weighting == "downweight"
    _, _, w = augmented_training_set(problem, sel)
    np.testing.assert_allclose(w[[1, 3]], 0.25)  # K = 3 copies: 1 / (K + 1)
    with pytest.raises(LeanaugError, match="weighting"):
        POLICIES.get("topk")(weighting="half")


def test_update_downweight_refits_with_downweighted_rows():
    seen = []
    inner = loss_fn()

    def score_fn(clf, X, y, w):
        seen.append(w.copy())
        return inner(clf, X, y, w)

    problem = make_problem(n=30, K=3, score_fn=score_fn)
    sel = POLICIES.get("update")(k=2, mode="greedy", weighting="downweight").select(problem, [4])
    assert sel[4].weighting == "downweight" and len(sel[4]) == 4
    assert len(seen) == 1 and seen[0].sum() == pytest.approx(30)  # 2 points, 1/4 each
    np.testing.assert_allclose(seen[0][30:], 0.25)


def test_sign_aware_topk_and_proportional():
    signed = np.array([0.5, -2.0, 0.1, -0.3, 1.5])
    problem = SelectionProblem(
        np.eye(5),
        np.array([0, 1, 0, 1, 0]),
        np.abs(signed),
        np.eye(5)[:, None, :],
        signed_scores=signed,
    )
    topk = POLICIES.get("topk")
    assert topk().select(problem, [5])[5].indices.tolist() == [1, 4, 0, 3, 2]  # |s|
    assert topk(sign="helpful-first").select(problem, [5])[5].indices.tolist() == [4, 0, 2, 3, 1]
    sel = topk(sign="skip-harmful").select(problem, [2, 5])
    assert sel[2].indices.tolist() == [4, 0] and sel[5].indices.tolist() == [4, 0, 2]
    rng = np.random.default_rng(0)
    prop = POLICIES.get("proportional")
    firsts = np.zeros(5)
    for _ in range(3000):
        order = prop(sign="helpful-first").select(problem, [5], rng)[5].indices
        assert set(order[:3].tolist()) == {0, 2, 4} and set(order[3:].tolist()) == {1, 3}
        firsts[order[0]] += 1
    assert chisquare(firsts[[0, 2, 4]], 3000 * np.array([0.5, 0.1, 1.5]) / 2.1).pvalue > 1e-3
    sel = prop(sign="skip-harmful").select(problem, [1, 4], rng)
    assert len(sel[1]) == 1 and sorted(sel[4].indices.tolist()) == [0, 2, 4]
    with pytest.raises(LeanaugError, match="needs a signed score"):
        topk(sign="helpful-first").select(make_problem(n=5), [2])
    with pytest.raises(LeanaugError, match="sign"):
        topk(sign="up")


def test_dpp_unweighted_kernel_written_out():
    # Phi rows: (3, 4) / 5 = (0.6, 0.8) and (0, 1); feature_scale 2: (1.2, 1.6), (0, 2)
    # L = Phi Phi^T + eps I = [[4 + 0.1, 3.2], [3.2, 4 + 0.1]], whatever the scores
    X = np.array([[3.0, 4.0], [0.0, 2.0]])
    problem = SelectionProblem(X, np.array([0, 1]), np.array([0.3, 7.0]), X[:, None, :])
    L = DPPPolicy(feature_scale=2.0, eps=0.1, weighted=False).kernel(problem)
    np.testing.assert_allclose(L, [[4.1, 3.2], [3.2, 4.1]], rtol=1e-12)
    Lw = DPPPolicy(feature_scale=2.0, eps=0.1).kernel(problem)  # weighted: s_i s_j <.,.>
    np.testing.assert_allclose(Lw, [[0.09 * 4 + 0.1, 0.3 * 7 * 3.2], [0.3 * 7 * 3.2, 196.1]])
    # 2-DPP over 3 points, unweighted: frequencies follow det(L_S) of the written-out L
    X = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    problem = SelectionProblem(X, np.array([0, 1, 0]), np.array([1.0, 0.01, 1.0]), X[:, None, :])
    phi = X / np.linalg.norm(X, axis=1, keepdims=True)
    L = phi @ phi.T + 0.05 * np.eye(3)
    subsets, probs = _exact_kdpp_probs(L, 2)
    policy = DPPPolicy(feature_scale=1.0, eps=0.05, weighted=False)
    rng = np.random.default_rng(3)
    counts = dict.fromkeys(subsets, 0)
    for _ in range(3000):
        counts[tuple(sorted(policy.select(problem, [2], rng)[2].indices.tolist()))] += 1
    assert chisquare([counts[S] for S in subsets], 3000 * probs).pvalue > 1e-3


def test_dpp_warns_when_a_budget_exceeds_the_feature_rank():
    problem = make_problem(n=12, d=3)
    policy = DPPPolicy(weighted=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        policy.select(problem, [3], np.random.default_rng(0))  # 3 = rank: no warning
    with pytest.warns(UserWarning, match="budget 5 exceeds the rank 3"):
        policy.select(problem, [2, 5], np.random.default_rng(0))
    assert policy.feature_rank_ == 3
