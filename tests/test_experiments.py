"""The subsampling runner: outputs, resuming, worker independence, baselines, configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from leanaug.classifier import LogisticClassifier
from leanaug.errors import LeanaugError
from leanaug.experiments import (
    DEMO,
    RESULT_COLUMNS,
    auc_table,
    parse_spec,
    plan_units,
    resolve_config,
    run_experiment,
    split_specs,
    summarize,
)
from leanaug.results import read_json, read_parquet
from leanaug.scores import SCORES, Score

ROOT = Path(__file__).resolve().parents[1]
N_DIGITS_38 = 268  # training images of digits 3 and 8 (fixed split of the loader)

SMALL = dict(
    dataset="digits",
    classes=[3, 8],
    n_train="all",
    augment="translate",
    featurizer="pixels",
    scores=["loss", "random"],
    policies=["random", "topk"],
    budgets=[1, 20, N_DIGITS_38],
    trials=2,
    seed=0,
)


def small_config(out: Path, **kw):
    return resolve_config(None, {**SMALL, **kw}, out=str(out))


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("small_run")
    return run_experiment(small_config(out), progress=False)


def _key_cols(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["seconds"]).reset_index(drop=True)


# -- configuration -------------------------------------------------------------------------
def test_specs():
    assert split_specs("random,update:k=5,mode=greedy,topk") == [
        "random",
        "update:k=5,mode=greedy",
        "topk",
    ]
    assert parse_spec("update:k=5,mode=greedy") == ("update", {"k": 5, "mode": "greedy"})
    assert parse_spec({"name": "cluster", "n_clusters": 10}) == ("cluster", {"n_clusters": 10})
    with pytest.raises(LeanaugError, match="key=value"):
        parse_spec("update:k")


def test_file_then_flags_override(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "dataset: digits\nclasses: [3, 8]\nn_train: 200\ntrials: 3\nbudgets: [1, 10]\n"
        "featurizer: smallcnn\nfeaturizer_params: {epochs: 2}\npolicies: [random, {name: update, k: 5}]\n"
    )
    c = resolve_config(cfg)
    assert (c.dataset, c.n_train, c.trials, c.budgets) == ("digits", 200, 3, [1, 10])
    assert c.policies == ["random", "update:k=5"] and c.featurizer_params == {"epochs": 2}
    c = resolve_config(
        cfg, trials=1, budgets="50,5", policies="topk,update:k=2,mode=greedy", featurizer="pixels"
    )
    assert (c.trials, c.budgets, c.n_train) == (1, [5, 50], 200)  # flags win, file fills the rest
    assert c.policies == ["topk", "update:k=2,mode=greedy"]
    assert (c.featurizer, c.featurizer_params) == (
        "pixels",
        {},
    )  # a new featurizer drops the file's params
    assert resolve_config(cfg, featurizer="smallcnn:epochs=7").featurizer_params == {"epochs": 7}
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: digits\nbudget: [1]\n")
    with pytest.raises(LeanaugError, match="unknown field.*budget"):
        resolve_config(bad)


def test_demo_yaml_matches_builtin_demo():
    assert (
        resolve_config(ROOT / "configs" / "demo.yaml").identity()
        == resolve_config(None, DEMO).identity()
    )
    for name in ("mnist_translate.yaml", "cifar10_translate.yaml"):
        resolve_config(ROOT / "configs" / name)  # valid


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"scores": "loss,bogus"}, "unknown score 'bogus'; valid names: .*influence"),
        ({"policies": "nope"}, "unknown policy 'nope'; valid names: .*proportional"),
        ({"n_train": 100, "budgets": "1,500"}, "budget 500 is larger than n_train=100"),
        ({"classes": []}, "classes is empty"),
        ({"policies": "update:k=0"}, "k must be a positive integer"),
        ({"policies": "random:foo=1"}, "unknown parameter .foo.; valid parameters: \\(none\\)"),
        ({"budgets": "0,5"}, "budgets must be >= 1"),
    ],
)
def test_bad_config_is_a_one_line_error(overrides, message):
    with pytest.raises(LeanaugError, match=message) as err:
        resolve_config(None, {**SMALL, **overrides})
    assert "\n" not in str(err.value)


def test_trials_only_for_randomised_pairs():
    units = plan_units(
        resolve_config(
            None,
            {
                **SMALL,
                "scores": ["loss", "random"],
                "policies": ["random", "topk", "sv"],
                "trials": 3,
            },
        )
    )
    count = pd.Series([(u.score, u.policy) for u in units]).value_counts()
    assert count[("loss", "random")] == 3
    assert count[("loss", "topk")] == 1 and count[("loss", "sv")] == 1  # deterministic: one trial
    assert count[("random", "topk")] == 3  # a random score makes topk random


def test_sign_reading_policies_pair_only_with_signed_scores():
    config = resolve_config(
        None,
        {
            **SMALL,
            "scores": ["influence", "influence-test"],
            "policies": ["topk", "topk:sign=helpful-first", "vsv"],
        },
    )
    with pytest.warns(UserWarning, match="left out: influence x topk:sign=helpful-first$"):
        units = plan_units(config)
    pairs = {(u.score, u.policy) for u in units}
    assert ("influence-test", "topk:sign=helpful-first") in pairs
    assert ("influence", "topk:sign=helpful-first") not in pairs
    assert {("influence", "topk"), ("influence", "vsv"), ("influence-test", "vsv")} <= pairs


# -- running -------------------------------------------------------------------------------
def test_outputs_and_full_augmentation_equals_baseline(small_run):
    out = small_run.out
    for name in (
        "results.parquet",
        "baselines.json",
        "scores.parquet",
        "config.yaml",
        "features.npz",
        "accuracy.png",
        "accuracy.pdf",
        "auc.csv",
        "auc.md",
        "top_bottom_loss.png",
        "top_bottom_random.png",
    ):
        assert (out / name).is_file(), name
    res = read_parquet(out / "results.parquet")
    assert list(res.columns) == RESULT_COLUMNS
    # units: loss x random (2 trials), loss x topk (1), random x random (2), random x topk (2)
    assert len(res) == 7 * 3 and not res.duplicated(["score", "policy", "trial", "budget"]).any()
    assert (res["n_augmented"] == res["budget"]).all()
    assert (
        res["n_train_rows"] == N_DIGITS_38 * 5 - (N_DIGITS_38 - res["budget"]) * 4
    ).all()  # 4 copies
    base = read_json(out / "baselines.json")
    assert set(base) == {"protocol", "no_augmentation", "full_augmentation"}
    assert base["protocol"] == "frozen-featurizer"
    full = res[res["budget"] == N_DIGITS_38]
    for key in ("accuracy", "accuracy_augmented_test"):
        assert (full[key] == base["full_augmentation"][key]).all(), key
    # augmentation helps on the augmented test set (what the paper plots)
    assert (
        base["full_augmentation"]["accuracy_augmented_test"]
        > base["no_augmentation"]["accuracy_augmented_test"] + 0.1
    )
    scores = read_parquet(out / "scores.parquet")
    assert (
        list(scores.columns) == ["index", "label", "loss", "random"] and len(scores) == N_DIGITS_38
    )
    # the loss column is the no-augmentation fit's per-point log loss
    with np.load(out / "features.npz") as f:
        X, y = f["train"], f["train_labels"]
    clf = LogisticClassifier(C=1.0).fit(X, y)
    np.testing.assert_allclose(scores["loss"], clf.log_loss_per_point(X, y), rtol=1e-6)
    assert yaml.safe_load((out / "config.yaml").read_text())["budgets"] == [1, 20, N_DIGITS_38]


def test_rerun_resumes_without_refits(small_run, monkeypatch):
    before = read_parquet(small_run.out / "results.parquet")

    def no_fit(*args, **kwargs):
        raise AssertionError("a finished run refitted a classifier")

    monkeypatch.setattr(LogisticClassifier, "fit", no_fit)
    again = run_experiment(small_config(small_run.out), progress=False, plots=False)
    assert (again.units_run, again.units_skipped, again.refits) == (0, 7, 0)
    after = read_parquet(small_run.out / "results.parquet")
    assert (
        len(after) == len(before)
        and not after.duplicated(["score", "policy", "trial", "budget"]).any()
    )
    pd.testing.assert_frame_equal(after, before)


def test_interrupted_run_finishes_only_missing_units(small_run, tmp_path):
    import shutil

    out = tmp_path / "resume"
    shutil.copytree(small_run.out, out)
    res = read_parquet(out / "results.parquet")
    # as if killed after the loss units: drop the random-score units, and half a unit
    partial = res[
        (res["score"] == "loss")
        & ~((res["policy"] == "random") & (res["trial"] == 1) & (res["budget"] > 1))
    ]
    from leanaug.results import write_parquet

    write_parquet(out / "results.parquet", partial)
    again = run_experiment(small_config(out), progress=False, plots=False)
    assert (again.units_run, again.units_skipped) == (5, 2)
    assert (
        again.refits == 5 * 3 + 1
    )  # one fit per budget, plus the clean (no-augmentation) fit the units share
    pd.testing.assert_frame_equal(_key_cols(read_parquet(out / "results.parquet")), _key_cols(res))


def test_n_jobs_does_not_change_results(small_run, tmp_path):
    two = run_experiment(small_config(tmp_path / "two", n_jobs=2), progress=False, plots=False)
    pd.testing.assert_frame_equal(_key_cols(two.results), _key_cols(small_run.results))
    assert (two.results["seed"] == small_run.results["seed"]).all()


def test_changed_config_needs_overwrite(small_run, tmp_path):
    import shutil

    out = tmp_path / "changed"
    shutil.copytree(small_run.out, out)
    with pytest.raises(LeanaugError, match="different configuration.*budgets.*--overwrite"):
        run_experiment(small_config(out, budgets=[1, 10]), progress=False)
    # execution-only fields (n_jobs, out, device) are not a different configuration
    run_experiment(small_config(out, n_jobs=1, device="cpu"), progress=False, plots=False)
    fresh = run_experiment(
        small_config(out, budgets=[1, 10], trials=1), overwrite=True, progress=False, plots=False
    )
    assert fresh.units_skipped == 0 and set(fresh.results["budget"]) == {1, 10}
    assert not (out / "accuracy.png").exists()  # the old plots went with the old results


def test_budget_larger_than_training_set(tmp_path):
    with pytest.raises(
        LeanaugError, match=f"budget 300 is larger than the {N_DIGITS_38} training points"
    ):
        run_experiment(small_config(tmp_path / "x", budgets=[1, 300]), progress=False)


class _NaNScore(Score):
    name = "nan-for-tests"

    def _score(self, clf, X, y, sample_weight, rng):  # noqa: ANN001
        s = np.ones(X.shape[0])
        s[3] = np.nan
        return s


def test_nan_score_is_a_clear_error(tmp_path):
    SCORES.register(_NaNScore.name)(_NaNScore)
    try:  # registered for this test only: other tests check the list of valid names
        with pytest.raises(LeanaugError, match="nan-for-tests score has 1 NaN"):
            run_experiment(small_config(tmp_path / "nan", scores=[_NaNScore.name]), progress=False)
    finally:
        SCORES.unregister(_NaNScore.name)


# -- tables --------------------------------------------------------------------------------
def test_auc_and_interval_numbers():
    rows = []
    for trial, accs in enumerate([[0.5, 0.7, 0.9], [0.6, 0.8, 0.8]]):
        for b, a in zip([0, 10, 30], accs, strict=True):
            rows.append(
                {
                    "score": "s",
                    "policy": "p",
                    "trial": trial,
                    "budget": b,
                    "accuracy_augmented_test": a,
                }
            )
    frame = pd.DataFrame(rows)
    table = auc_table(frame)
    # trapezoid / range: trial 0: (10*0.6 + 20*0.8)/30, trial 1: (10*0.7 + 20*0.8)/30
    expected = np.array([22 / 30, 23 / 30])
    assert table.loc[0, "auc_mean"] == pytest.approx(expected.mean())
    assert table.loc[0, "auc_std"] == pytest.approx(expected.std(ddof=1))
    s = summarize(frame).set_index("budget")
    half = stats.t.ppf(0.975, 1) * np.std([0.5, 0.6], ddof=1) / np.sqrt(2)
    assert s.loc[0, "lo"] == pytest.approx(0.55 - half) and s.loc[0, "hi"] == pytest.approx(
        0.55 + half
    )


def test_torch_solvers_and_warm_start_give_the_same_fits(small_run, tmp_path, monkeypatch):
    """The classifier options reach every fit: the torch solvers (warm-started from the
    clean fit) land on scikit-learn's optima, so the accuracies are the same; the options
    are part of the configuration."""
    started = []
    fit = LogisticClassifier.fit

    def recording_fit(self, X, y, sample_weight=None, init=None):
        started.append((self.solver, init is not None))
        return fit(self, X, y, sample_weight=sample_weight, init=init)

    monkeypatch.setattr(LogisticClassifier, "fit", recording_fit)
    ref = small_run.results
    for solver in ("torch", "newton"):
        params = {"solver": solver, "tol": 1e-9}
        run = run_experiment(
            small_config(tmp_path / solver, classifier_params=params, warm_start=True),
            progress=False,
            plots=False,
        )
        pd.testing.assert_frame_equal(
            run.results.drop(columns=["seconds"]), ref.drop(columns=["seconds"]), atol=2e-3
        )
        assert started and all(s == solver for s, _ in started)
        # every fit but the clean one starts from the clean fit's parameters
        assert sum(warm for _, warm in started) == len(started) - 1
        started.clear()
    with pytest.raises(LeanaugError, match="differs in: classifier_params, warm_start"):
        run_experiment(small_config(small_run.out, classifier_params={"solver": "torch"},
                                    warm_start=True), progress=False)  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"classifier_params": {"solvr": "torch"}}, "unknown key.*'solvr'.*valid keys: solver"),
        ({"classifier_params": {"solver": "irls"}}, "unknown solver 'irls'; valid: lbfgs"),
        ({"classifier_params": {"tol": -1}}, "tol must be a number > 0"),
        ({"classifier_params": "solver=newton,precision=float32"}, "float32 needs solver=torch"),
        ({"warm_start": "yes"}, "warm_start must be true or false"),
        (
            {"warm_start": True, "featurizer_refit": True, "featurizer": "smallcnn"},
            "warm_start needs the frozen featurizer",
        ),
    ],
)
def test_bad_classifier_options(overrides, message):
    with pytest.raises(LeanaugError, match=message):
        resolve_config(None, {**SMALL, **overrides})
