"""The ``coreset`` policy: greedy facility location, class split, gammas, weights,
augmented gradients (against autograd), the runner and the CLI."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from sklearn.metrics.pairwise import euclidean_distances

from leanaug.classifier import LogisticClassifier
from leanaug.errors import LeanaugError
from leanaug.experiments import plan_units, resolve_config
from leanaug.experiments.runner import _fit_selection, policy_is_deterministic
from leanaug.policies import (
    POLICIES,
    CoresetPolicy,
    Selection,
    SelectionProblem,
    augmented_gradients,
    augmented_training_set,
    class_interleaving,
    coreset_gammas,
    facility_location_order,
)


def problem_with_classes(sizes, d=3, K=2, seed=0):
    """Labels in blocks of the given sizes, features shifted by class, K noisy copies."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(sizes)), sizes)
    X = rng.normal(size=(y.size, d)) + 1.5 * np.eye(len(sizes), d)[y]
    A = X[:, None, :] + 0.3 * rng.normal(size=(y.size, K, d))
    return SelectionProblem(X, y, np.ones(y.size), A)


def plain_greedy(D, size):
    """Facility location by the textbook greedy: every gain recomputed at every step."""
    best = np.full(D.shape[0], D.max())
    order = []
    for _ in range(size):
        gains = np.maximum(best[None, :] - D, 0).sum(axis=1)
        gains[order] = -1.0
        j = int(np.argmax(gains))  # first maximum: ties to the lower index
        order.append(j)
        best = np.minimum(best, D[j])
    return order


def hamilton(sizes, b):
    """Largest-remainder counts of budget b over classes of the given sizes (ties to the
    lower class)."""
    sizes = np.asarray(sizes)
    n = sizes.sum()
    counts, rem = np.divmod(b * sizes, n)
    counts[np.lexsort((np.arange(sizes.size), -rem))[: b - counts.sum()]] += 1
    return counts


# -- facility location -----------------------------------------------------------------
def test_greedy_order_and_gammas_hand_computed():
    # 1-d points 0, 1, 2, 10, 11; c = 11 (largest distance).
    # step 1: F({j}) = 5c - sum_i |x_i - x_j|; the sums are 24, 21, 20, 28, 31 -> j = 2.
    # step 2: nearest distances (2, 1, 0, 8, 9); gain(3) = 8 + 8 = 16, gain(4) = 7 + 9 = 16,
    #         gain(0) = 2, gain(1) = 1 + 1 = 2 -> tie 3/4, lower index: j = 3.
    # step 3: nearest (2, 1, 0, 0, 1); gain(0) = 2 + 0 = 2, gain(1) = 1 + 1 = 2,
    #         gain(4) = 1 -> tie 0/1: j = 0.
    x = np.array([0.0, 1, 2, 10, 11])
    D = np.abs(x[:, None] - x[None, :])
    assert facility_location_order(D, 5).tolist()[:3] == [2, 3, 0]
    assert facility_location_order(D, 3).tolist() == [2, 3, 0]
    # gammas: {2} covers all 5; {2, 3}: 0, 1, 2 -> 2 and 10, 11 -> 3; {2, 3, 0}: point 1
    # is 1 from both 2 and 0 and stays with 2 (chosen first)
    g = coreset_gammas(D, np.array([2, 3, 0]), [0, 1, 2, 3])
    assert [g[k].tolist() for k in (0, 1, 2, 3)] == [[], [5], [3, 2], [2, 2, 1]]


@pytest.mark.parametrize("seed", range(4))
def test_lazy_greedy_equals_plain_greedy_ties_included(seed):
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(40, 3))
    D = cdist(Z, Z)
    assert facility_location_order(D, 40).tolist() == plain_greedy(D, 40)
    # integer 1-d points with duplicates: many exact ties in the gains
    x = rng.integers(0, 8, size=30).astype(float)
    D = np.abs(x[:, None] - x[None, :])
    assert facility_location_order(D, 30).tolist() == plain_greedy(D, 30)


def test_gammas_count_nearest_selected_point():
    rng = np.random.default_rng(3)
    Z = rng.normal(size=(25, 2))
    D = cdist(Z, Z)
    order = facility_location_order(D, 25)
    g = coreset_gammas(D, order, range(1, 26))
    for k in (1, 4, 9, 25):
        nearest = np.argmin(D[:, order[:k]], axis=1)  # distinct distances: no ties
        assert g[k].tolist() == np.bincount(nearest, minlength=k).tolist()
        assert g[k].sum() == 25
    assert np.all(g[25] == 1)


# -- class split -----------------------------------------------------------------------
def test_class_split_is_largest_remainder_and_nested():
    sizes = (12, 5, 3)
    slots = class_interleaving(sizes, 20)
    for b in range(21):
        counts = np.bincount(slots[:b], minlength=3)
        assert counts.sum() == b
        assert counts.tolist() == hamilton(sizes, b).tolist(), b
    # two classes: largest remainder (rounding, ties to the lower class) at every budget
    slots = class_interleaving((7, 3), 10)
    assert slots.tolist() == [0, 1, 0, 0, 0, 1, 0, 0, 1, 0]
    assert all(
        np.bincount(slots[:b], minlength=2).tolist() == hamilton((7, 3), b).tolist()
        for b in range(11)
    )


def test_class_split_keeps_quota_where_largest_remainder_is_not_nested():
    # sizes 3, 3, 1: largest remainder gives (1, 1, 1) at b = 3 but (2, 2, 0) at b = 4
    # (the Alabama paradox); a nested order keeps (2, 1, 1), within floor/ceil of
    # the shares (12/7, 12/7, 4/7), and is largest remainder at every other budget.
    sizes = np.array([3, 3, 1])
    slots = class_interleaving(sizes, 7)
    assert slots.tolist() == [0, 1, 2, 0, 1, 0, 1]
    for b in range(8):
        counts = np.bincount(slots[:b], minlength=3)
        share = b * sizes / sizes.sum()
        assert np.all(np.floor(share) <= counts) and np.all(counts <= np.ceil(share))
        if b != 4:
            assert counts.tolist() == hamilton(sizes, b).tolist()
    # random class sizes: every prefix within quota
    rng = np.random.default_rng(0)
    for _ in range(30):
        sizes = rng.integers(1, 30, size=rng.integers(2, 7))
        sizes[0] *= 8
        slots = class_interleaving(sizes, int(sizes.sum()))
        counts = np.cumsum(np.eye(sizes.size, dtype=int)[slots], axis=0)
        share = np.arange(1, sizes.sum() + 1)[:, None] * sizes / sizes.sum()
        assert np.all(np.floor(share + 1e-9) <= counts) and np.all(counts <= np.ceil(share - 1e-9))


def test_policy_splits_budgets_across_classes():
    problem = problem_with_classes((30, 12, 8))
    budgets = [0, 1, 5, 17, 33, 50]
    sel = CoresetPolicy().select(problem, budgets)
    for b in budgets:
        counts = np.bincount(problem.labels[sel[b].indices], minlength=3)
        assert counts.tolist() == hamilton((30, 12, 8), b).tolist()
    for small, big in itertools.pairwise(budgets):  # nested
        np.testing.assert_array_equal(sel[big].indices[:small], sel[small].indices)
    assert np.unique(sel[50].indices).size == 50


def test_each_class_is_its_own_greedy_order():
    problem = problem_with_classes((20, 10), K=3)
    sel = CoresetPolicy(space="features", source="clean").select(problem, [30])[30].indices
    for c in (0, 1):
        members = np.flatnonzero(problem.labels == c)
        Z = problem.features[members]
        expected = members[facility_location_order(euclidean_distances(Z), members.size)]
        np.testing.assert_array_equal(sel[problem.labels[sel] == c], expected)
    # source="augmented": the mean of the copies' features
    sel = CoresetPolicy(space="features").select(problem, [30])[30].indices
    members = np.flatnonzero(problem.labels == 1)
    Z = problem.augmented_features[members].mean(axis=1)
    expected = members[facility_location_order(euclidean_distances(Z), members.size)]
    np.testing.assert_array_equal(sel[problem.labels[sel] == 1], expected)


# -- weights ---------------------------------------------------------------------------
def test_coreset_weights_in_the_augmented_training_set():
    problem = problem_with_classes((14, 6), K=3)
    policy = CoresetPolicy()
    coresets = policy.weighted_coresets(problem, [4, 10, 20])
    sel = policy.select(problem, [4, 10, 20])
    for b, (idx, gamma) in coresets.items():
        np.testing.assert_array_equal(sel[b].indices, idx)
        for c, size in ((0, 14), (1, 6)):  # every point counted once, by its own class
            assert gamma[problem.labels[idx] == c].sum() == size
        assert np.all(gamma >= 1)
        X, y, w = augmented_training_set(problem, sel[b])
        assert X.shape[0] == 20 + 3 * b
        assert np.all(w[:20] == 1)  # originals
        np.testing.assert_allclose(w[20:], np.repeat(gamma * b / 20, 3))  # each copy of j
        assert w[20:].sum() == pytest.approx(3 * b)  # as much as uniform copies
        np.testing.assert_array_equal(X[20:23], problem.augmented_features[idx[0]])
    # budget 4 by hand from its gammas; at budget n every gamma is 1: full augmentation
    np.testing.assert_allclose(sel[4].copy_weights, coresets[4][1] * 4 / 20)
    np.testing.assert_allclose(sel[20].copy_weights, 1.0)
    uniform = CoresetPolicy(weighting="uniform").select(problem, [10])[10]
    assert uniform.weighting == "uniform" and uniform.copy_weights is None
    np.testing.assert_array_equal(uniform.indices, sel[10].indices)


def test_runner_fit_keeps_weights_with_their_points():
    problem = problem_with_classes((25, 15), K=2)
    sel = CoresetPolicy().select(problem, [12])[12]
    assert not np.all(np.diff(sel.indices) > 0)  # not in index order: sorting matters
    fitted, rows = _fit_selection(problem, sel)
    direct = LogisticClassifier(C=1.0).fit(*augmented_training_set(problem, sel))
    assert rows == 40 + 2 * 12
    np.testing.assert_allclose(fitted.coef_, direct.coef_, rtol=1e-4, atol=1e-6)
    uniform = LogisticClassifier(C=1.0).fit(
        *augmented_training_set(problem, Selection(sel.indices))
    )
    assert np.abs(uniform.coef_ - direct.coef_).max() > 1e-3  # the weights do something


def test_selection_copy_weights_checked():
    with pytest.raises(LeanaugError, match="needs copy_weights"):
        Selection([1, 2], "coreset")
    with pytest.raises(LeanaugError, match="only used with weighting='coreset'"):
        Selection([1, 2], "uniform", copy_weights=[1.0, 1.0])
    with pytest.raises(LeanaugError, match="one entry per selected point"):
        Selection([1, 2], "coreset", copy_weights=[1.0])
    with pytest.raises(LeanaugError, match="finite and >= 0"):
        Selection([1, 2], "coreset", copy_weights=[1.0, -1.0])
    s = Selection([5, 1, 3], "coreset", copy_weights=[0.5, 1.0, 2.0]).sorted()
    assert s.indices.tolist() == [1, 3, 5] and s.copy_weights.tolist() == [1.0, 2.0, 0.5]


# -- augmented gradients -----------------------------------------------------------------
@pytest.mark.parametrize(("n_classes", "fit_intercept"), [(2, True), (3, True), (3, False)])
def test_augmented_gradients_match_autograd(n_classes, fit_intercept):
    rng = np.random.default_rng(1)
    n, K, d = 30, 3, 4
    y = np.arange(n) % n_classes
    X = rng.normal(size=(n, d)) + np.eye(n_classes, d)[y]
    clf = LogisticClassifier(C=0.5, fit_intercept=fit_intercept).fit(X, y)
    copies = X[:5, None, :] + 0.5 * rng.normal(size=(5, K, d))
    got = augmented_gradients(clf, copies, y[:5])
    rows = clf.coef_.shape[0]
    for i in range(5):
        W = torch.tensor(clf.coef_, requires_grad=True)
        b = torch.tensor(clf.intercept_, requires_grad=True)
        x = torch.tensor(copies[i])
        z = x @ W.T + (b if fit_intercept else 0.0)
        if n_classes == 2:
            t = torch.full((K,), float(y[i] == 1), dtype=torch.float64)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(z[:, 0], t)
        else:
            loss = torch.nn.functional.cross_entropy(z, torch.full((K,), int(y[i])))
        loss.backward()  # both losses are means over the K copies
        grad = W.grad
        if fit_intercept:
            grad = torch.cat([grad, b.grad[:, None]], dim=1)
        assert got[i].shape == (rows * (d + fit_intercept),)
        np.testing.assert_allclose(got[i], grad.numpy().ravel(), rtol=1e-10, atol=1e-12)


def test_policy_uses_the_gradients_of_the_clean_fit():
    # the policy's own distances (sklearn's): gains tie exactly in exact arithmetic (two
    # points that only cover each other: best_i + best_j - d_ij for either), and the
    # rounding of the distances then decides
    problem = problem_with_classes((16, 9), K=3)
    sel = CoresetPolicy().select(problem, [25])[25].indices
    clf = problem.make_classifier().fit(problem.features, problem.labels)
    members = np.flatnonzero(problem.labels == 0)
    G = augmented_gradients(clf, problem.augmented_features[members], problem.labels[members])
    expected = members[facility_location_order(euclidean_distances(G), members.size)]
    np.testing.assert_array_equal(sel[problem.labels[sel] == 0], expected)
    clean = CoresetPolicy(source="clean").select(problem, [25])[25].indices
    G = augmented_gradients(clf, problem.features[members][:, None, :], problem.labels[members])
    expected = members[facility_location_order(euclidean_distances(G), members.size)]
    np.testing.assert_array_equal(clean[problem.labels[clean] == 0], expected)


# -- parameters, registry, runner ----------------------------------------------------------
def test_bad_parameters_name_the_valid_values():
    with pytest.raises(LeanaugError, match=r"space 'pixels'; valid: gradient, features$"):
        CoresetPolicy(space="pixels")
    with pytest.raises(LeanaugError, match=r"source 'noisy'; valid: augmented, clean$"):
        POLICIES.create("coreset", {"source": "noisy"})
    with pytest.raises(LeanaugError, match=r"weighting 'downweight'; valid: coreset, uniform$"):
        CoresetPolicy(weighting="downweight")
    with pytest.raises(LeanaugError, match="weighting 'coreset'; valid: uniform, downweight"):
        POLICIES.get("topk")(weighting="coreset")  # only coreset computes copy weights
    problem = problem_with_classes((5, 5))
    with pytest.raises(LeanaugError, match="larger than"):
        CoresetPolicy().select(problem, [11])


def test_deterministic_one_trial_and_registered():
    policy = POLICIES.create("coreset", {"space": "features"})
    assert isinstance(policy, CoresetPolicy) and policy_is_deterministic(policy)
    problem = problem_with_classes((10, 7))
    a = policy.select(problem, [3, 17], rng=np.random.default_rng(1))
    b = policy.select(problem, [3, 17])
    assert all(np.array_equal(a[k].indices, b[k].indices) for k in (3, 17))
    units = plan_units(
        resolve_config(
            None,
            {"dataset": "digits", "classes": [3, 8], "scores": ["loss"], "trials": 3,
             "policies": ["coreset", "random"], "budgets": [1, 10]},
        )
    )  # fmt: skip
    assert sum(u.policy == "coreset" for u in units) == 1
    assert sum(u.policy == "random" for u in units) == 3
