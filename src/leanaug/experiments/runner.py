"""The augmentation-subsampling experiment (Kuchnik & Smith, ICLR 2019).

:func:`run_experiment` does, for one :class:`~leanaug.experiments.config.SubsampleConfig`:

1. load the data set and the augmentation preset; featurize the clean training and
   test images and all their deterministic copies with one featurizer trained on the
   clean training points (``features.npz``, reused by re-runs and plots);
2. fit :class:`~leanaug.classifier.LogisticClassifier` on the clean training points:
   the **no-augmentation** baseline; fit it on every point plus all copies: the
   **full-augmentation** baseline (``baselines.json``, with the ``protocol``);
3. score every training point with each score (``scores.parquet``), from the
   no-augmentation fit on the features of step 1;
4. for each unit (score, policy, trial): draw the policy's selections for all budgets
   (the policies see the features of step 1), fit each augmented training set
   (:func:`~leanaug.policies.augmented_training_set`'s rows and weights), and measure
   accuracy on the clean test set and on the augmented test set (test images plus all
   their copies, the number the paper plots); one row per budget in ``results.parquet``.

How a fit is done is the *protocol* (:mod:`leanaug.experiments.refit`): by default the
featurizer of step 1 stays frozen and only the logistic regression is refit
(:class:`FrozenFitter`); with ``featurizer_refit`` (``--featurizer-refit``) every fit,
baselines included, trains a fresh featurizer on its own rows, the reference's MNIST
protocol (:class:`~leanaug.experiments.refit.RefitFitter`).

Accuracies are always on the test split; the augmented test set is what
``accuracy_augmented_test`` means everywhere in this package.

Trials. Each unit's randomness comes from
``derive_seed(seed, score, policy, trial)``, so results do not depend on ``n_jobs`` or
the order units finish. A unit is *deterministic* when its policy ignores the rng
(``topk``, ``sv``, ``coreset``, ``update`` with ``mode=greedy``) and its score is not
random: such a unit gives the same selection every trial, so only trial 0 is run. ``cluster`` is
randomised (its KMeans initialisation), ``dpp`` and the proportional policies too.
The ``random`` score draws fresh scores per trial (trial 0's draw is the one in
``scores.parquet``); other scores are computed once from the no-augmentation fit.

Resuming. Results are rewritten atomically after every unit. Re-running the same
command skips finished units (no refits) and reuses the features, baselines and
scores; a different configuration in the same folder is an error unless
``overwrite=True`` (``--overwrite``), which deletes the old result files first.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from threadpoolctl import threadpool_limits

from leanaug.classifier import LogisticClassifier
from leanaug.errors import LeanaugError
from leanaug.executors import Executor, make_executor
from leanaug.experiments.config import (
    ADDED_FIELDS,
    EXECUTION_FIELDS,
    SubsampleConfig,
    fit_to_data,
    instantiate,
    load_config_data,
    parse_spec,
)
from leanaug.experiments.refit import (
    PROTOCOL_FROZEN,
    FitScore,
    Fitter,
    RefitFitter,
    RefitImages,
    featurize_copies,
)
from leanaug.progress import Progress, note
from leanaug.results import (
    output_dir,
    read_json,
    read_parquet,
    reading,
    write_json,
    write_parquet,
    write_text,
    write_with,
)
from leanaug.seeding import derive_seed, numpy_rng

RESULT_COLUMNS = [
    "score",
    "policy",
    "budget",
    "trial",
    "accuracy",
    "accuracy_augmented_test",
    "n_augmented",
    "n_train_rows",
    "seconds",
    "seed",
]

#: Files a run writes (``--overwrite`` deletes exactly these, nothing else in the folder).
RUN_FILES = ("config.yaml", "results.parquet", "baselines.json", "scores.parquet", "features.npz")
PLOT_GLOBS = (
    "accuracy.png",
    "accuracy.pdf",
    "accuracy_clean.png",
    "accuracy_clean.pdf",
    "auc.csv",
    "auc.md",
    "auc-clean.csv",
    "auc-clean.md",
    "top_bottom_*.png",
)

#: Policies whose selection does not use the rng (given fixed scores).
_DETERMINISTIC_POLICIES = {"topk", "sv"}


def policy_is_deterministic(policy: Any) -> bool:
    """True when the policy's selection does not depend on the rng (given the scores)."""
    flag = getattr(policy, "deterministic", None)
    if flag is not None:
        return bool(flag)
    name = getattr(policy, "name", "")
    if name == "update":
        return getattr(policy, "mode", "proportional") == "greedy"
    return name in _DETERMINISTIC_POLICIES


def score_is_random(score: Any) -> bool:
    flag = getattr(score, "stochastic", None)
    if flag is not None:
        return bool(flag)
    return getattr(score, "name", "") == "random"


# -- features -----------------------------------------------------------------------------
@dataclass
class FeatureSet:
    """Features of the clean and augmented train/test images (float32)."""

    train: np.ndarray  # (n, d)
    train_labels: np.ndarray  # (n,)
    train_copies: np.ndarray  # (n, K, d)
    test: np.ndarray  # (m, d)
    test_labels: np.ndarray  # (m,)
    test_copies: np.ndarray  # (m, K, d)
    train_images: np.ndarray  # uint8 (n, C, H, W), for the top/bottom image grids
    class_names: np.ndarray  # (k,) str

    @property
    def test_augmented(self) -> tuple[np.ndarray, np.ndarray]:
        """The augmented test set: the test points followed by all their copies."""
        m, k, d = self.test_copies.shape
        x = np.concatenate([self.test, self.test_copies.reshape(m * k, d)])
        y = np.concatenate([self.test_labels, np.repeat(self.test_labels, k)])
        return x, y


def _features_key(config: SubsampleConfig) -> str:
    fields = (
        "dataset",
        "data_dir",
        "classes",
        "n_train",
        "subset",
        "augment",
        "featurizer",
        "featurizer_params",
        "seed",
    )
    text = json.dumps({k: getattr(config, k) for k in fields}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def make_featurizer(config: SubsampleConfig, **overrides: Any) -> Any:
    """The configured featurizer; ``seed``, ``device`` and ``data_dir`` default to the run's;
    ``overrides`` replace parameters (the refit protocol's ``cache=False``)."""
    from leanaug.features import FEATURIZERS

    context = {"seed": config.seed, "device": config.device, "data_dir": config.data_dir}
    params = {**config.featurizer_params, **overrides}
    return FEATURIZERS.create(config.featurizer, params, context=context)


def _featurize_copies(
    featurizer: Any, aug: Any, images: np.ndarray, bar: Progress, task: Any
) -> np.ndarray:
    return featurize_copies(featurizer, aug, images, advance=lambda b: bar.advance(task, b))


def compute_features(
    config: SubsampleConfig, ds: Any, aug: Any, progress: bool = True
) -> FeatureSet:
    featurizer = make_featurizer(config)
    featurizer.fit(ds.train_images, ds.train_labels)
    with _progress(progress) as bar:
        n, m = len(ds.train_labels), len(ds.test_labels)
        task = bar.add_task("featurizing images and copies", total=2 * (n + m))
        train = featurizer.transform(ds.train_images)
        bar.advance(task, n)
        test = featurizer.transform(ds.test_images)
        bar.advance(task, m)
        train_copies = _featurize_copies(featurizer, aug, ds.train_images, bar, task)
        test_copies = _featurize_copies(featurizer, aug, ds.test_images, bar, task)
    for name, arr in (
        ("training", train),
        ("training copies", train_copies),
        ("test", test),
        ("test copies", test_copies),
    ):
        if not np.all(np.isfinite(arr)):
            raise LeanaugError(
                f"featurizer {config.featurizer!r} produced NaN/infinite features for the {name} images"
            )
    return FeatureSet(
        train=train.astype(np.float32),
        train_labels=ds.train_labels.astype(np.int64),
        train_copies=train_copies.astype(np.float32),
        test=test.astype(np.float32),
        test_labels=ds.test_labels.astype(np.int64),
        test_copies=test_copies.astype(np.float32),
        train_images=ds.train_images,
        class_names=np.asarray([str(c) for c in ds.class_names]),
    )


#: What to do about a damaged file in a run folder being resumed.
RESUME_HINT = "delete it (what it held is recomputed) or rerun with --overwrite to start afresh"


def read_features(path: Path) -> tuple[str, FeatureSet]:
    """``(key, features)`` stored in a run folder's ``features.npz``; a torn or corrupt
    file raises :class:`~leanaug.errors.DamagedFileError` naming it."""
    with reading(path, "features file (.npz)", RESUME_HINT), np.load(path, allow_pickle=False) as f:
        return str(f["key"]), FeatureSet(
            **{name: f[name] for name in FeatureSet.__dataclass_fields__}
        )


def load_or_compute_features(
    config: SubsampleConfig, out: Path, progress: bool = True
) -> tuple[FeatureSet, bool]:
    """``(features, computed)``: read ``out/features.npz`` if it matches the config."""
    path = out / "features.npz"
    key = _features_key(config)
    if path.is_file():
        stored_key, fs = read_features(path)  # damaged: an error naming it, not a silent redo
        if stored_key == key:
            return fs, False  # another key (the data files changed): recompute and replace it
    from leanaug.augment import preset

    ds = load_config_data(config)
    if ds.num_classes < 2 or np.unique(ds.train_labels).size < 2:
        raise LeanaugError(
            f"{config.dataset} with classes={config.classes}: the training set needs at least two classes"
        )
    if max(config.budgets) > len(ds.train_labels):
        raise LeanaugError(
            f"budget {max(config.budgets)} is larger than the {len(ds.train_labels)} training points of "
            f"{config.dataset} (classes={config.classes}, n_train={config.n_train})"
        )
    aug = preset(config.dataset, config.augment)
    fs = compute_features(config, ds, aug, progress)
    arrays = {name: getattr(fs, name) for name in FeatureSet.__dataclass_fields__}
    write_with(path, lambda p: np.savez(p, key=np.asarray(key), **arrays))
    return fs, True


# -- fitting and evaluation ----------------------------------------------------------------
def _accuracies(
    clf: LogisticClassifier, fs: FeatureSet, test_aug: tuple[np.ndarray, np.ndarray]
) -> tuple[float, float]:
    return clf.score(fs.test, fs.test_labels), clf.score(*test_aug)


def classifier_factory(config: SubsampleConfig) -> Callable[[], LogisticClassifier]:
    """Unfitted logistic regressions as ``config`` asks for them: its ``C`` and
    ``classifier_params`` (``solver``, ``tol``, ``max_iter``), the ``torch`` solver on
    ``config.device``."""
    return partial(LogisticClassifier, C=config.C, device=config.device,
                   **config.classifier_params)  # fmt: skip


def _problem(
    fs: FeatureSet,
    scores: np.ndarray,
    make_classifier: Callable[[], LogisticClassifier] = LogisticClassifier,
    score_fn: Any = None,
    signed: bool = False,
) -> Any:
    """A signed score (``influence-test``) reaches the policies as its magnitude, with the
    signed values beside it for those that read the sign."""
    from leanaug.policies import SelectionProblem

    return SelectionProblem(
        features=fs.train,
        labels=fs.train_labels,
        scores=np.abs(scores) if signed else scores,
        augmented_features=fs.train_copies,
        make_classifier=make_classifier,
        score_fn=score_fn,
        signed_scores=scores if signed else None,
    )


def _fit_selection(
    problem: Any, selection: Any, init: LogisticClassifier | None = None
) -> tuple[LogisticClassifier, int]:
    """``problem.make_classifier()`` fitted on the selection's rows (from ``init``'s
    parameters when given: a warm start), and the number of rows."""
    from leanaug.policies import augmented_training_set

    # The fit depends on the set of augmented points, not on the order the policy
    # picked them in: sort, so that e.g. budget = n equals the full-augmentation fit.
    X, y, w = augmented_training_set(problem, selection.sorted())
    return problem.make_classifier().fit(X, y, sample_weight=w, init=init), X.shape[0]


class FrozenFitter:
    """The ``frozen-featurizer`` protocol: the logistic regression refit on the features
    of ``features.npz`` (:mod:`leanaug.experiments.refit` has the other one).

    Examples
    --------
    >>> from leanaug.policies import Selection
    >>> rng = np.random.default_rng(0)
    >>> fs = FeatureSet(rng.normal(size=(6, 2)), np.array([0, 1] * 3), rng.normal(size=(6, 2, 2)),
    ...                 rng.normal(size=(4, 2)), np.array([0, 1] * 2), rng.normal(size=(4, 2, 2)),
    ...                 np.zeros((6, 1, 2, 2), np.uint8), np.array(["a", "b"]))
    >>> FrozenFitter(fs).fit_and_score(Selection([3, 1])).n_rows  # 6 + 2 copies of 2
    10

    ``make_classifier`` returns unfitted classifiers (default: ``LogisticClassifier()``);
    ``start``, when set (the run's ``warm_start``: the no-augmentation fit), is where
    every fit starts from.
    """

    protocol = PROTOCOL_FROZEN
    trains_networks = False

    def __init__(
        self,
        features: FeatureSet,
        make_classifier: Callable[[], LogisticClassifier] = LogisticClassifier,
        start: LogisticClassifier | None = None,
    ) -> None:
        self.features = features
        self.make_classifier = make_classifier
        self.start = start
        self._problem: Any = None
        self._test_aug: tuple[np.ndarray, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Workers rebuild the float64 problem and the augmented test set from the
        # features they are sent anyway, rather than receive copies of them.
        return {**self.__dict__, "_problem": None, "_test_aug": None}

    def fit_and_score(self, selection: Any) -> FitScore:
        """Refit on the selection's feature rows (:func:`augmented_training_set`) and score."""
        fs = self.features
        if self._problem is None:
            self._problem = _problem(fs, np.zeros(fs.train.shape[0]), self.make_classifier)
            self._test_aug = fs.test_augmented
        clf, n_rows = _fit_selection(self._problem, selection, self.start)
        acc, acc_aug = _accuracies(clf, fs, self._test_aug)
        return FitScore(acc, acc_aug, n_rows, clf)


def make_fitter(config: SubsampleConfig, fs: FeatureSet) -> Fitter:
    """The fitter of ``config``'s protocol: :class:`FrozenFitter`, or with
    ``featurizer_refit`` a :class:`~leanaug.experiments.refit.RefitFitter` whose every
    featurizer is the configured one, uncached, with the run's seed."""
    if not config.featurizer_refit:
        return FrozenFitter(fs, classifier_factory(config))
    images = RefitImages.load(config, fs.train_images, fs.train_labels)
    factory = partial(make_featurizer, config, cache=False, progress=False)
    return RefitFitter(images, factory, classifier_factory(config))


def compute_baselines(
    fs: FeatureSet, fitter: Fitter | None = None, warm_start: bool = False
) -> tuple[dict[str, Any], LogisticClassifier | None]:
    """No augmentation and full augmentation: accuracies on the clean and augmented test
    sets, fitted by ``fitter`` (default: :class:`FrozenFitter`). Also returns the
    no-augmentation logistic regression on the frozen features, the one the scores come
    from, when the fitter's is that one (frozen protocol), else None."""
    from leanaug.policies import Selection

    fitter = FrozenFitter(fs) if fitter is None else fitter
    n = fs.train.shape[0]
    clean = fitter.fit_and_score(Selection(np.arange(0)))
    if warm_start:  # frozen protocol only (the config refuses it with featurizer_refit)
        fitter.start = clean.classifier
    full = fitter.fit_and_score(Selection(np.arange(n)))
    out = {"no_augmentation": clean.as_baseline(), "full_augmentation": full.as_baseline()}
    return out, clean.classifier if fitter.protocol == PROTOCOL_FROZEN else None


def compute_scores(
    fs: FeatureSet, clf: LogisticClassifier, specs: list[str], seed: int, trial: int = 0
) -> dict[str, np.ndarray]:
    from leanaug.scores import SCORES

    out = {}
    for spec in specs:
        score = instantiate("score", SCORES, spec)
        out[spec] = score.score(
            clf, fs.train, fs.train_labels, rng=numpy_rng(seed, "score", spec, trial)
        )
    return out


# -- units ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Unit:
    score: str
    policy: str
    trial: int


@dataclass
class _Shared:
    """What every unit needs; shipped once per worker task (joblib memmaps big arrays)."""

    features: FeatureSet
    scores: dict[str, np.ndarray]
    base_clf: LogisticClassifier
    budgets: list[int]
    make_classifier: Callable[[], LogisticClassifier]
    seed: int
    fitter: Fitter
    threads: int | None = 1


def thread_limit(config: SubsampleConfig) -> int | None:
    """BLAS / torch threads for the fits: one for scikit-learn's many small lbfgs fits
    (multi-threaded BLAS is slower at their sizes, and up to 50x slower on a busy machine:
    spinning threads) and for every fit in ``n_jobs`` worker processes (parallelism comes
    from the workers); no limit (None) for the torch solvers in this process, whose
    products on tens of thousands of rows use every core. The refit protocol keeps one
    thread, so its networks train the same whatever ``n_jobs``."""
    solver = config.classifier_params.get("solver", "lbfgs")
    if config.n_jobs == 1 and solver != "lbfgs" and not config.featurizer_refit:
        return None
    return 1


def run_unit(shared: _Shared, unit: Unit) -> list[dict[str, Any]]:
    """Selections for all budgets, one refit and evaluation per budget: one row each."""
    with threadpool_limits(limits=shared.threads):
        return _run_unit(shared, unit)


def _run_unit(shared: _Shared, unit: Unit) -> list[dict[str, Any]]:
    from leanaug.policies import POLICIES
    from leanaug.scores import SCORES, score_function

    fs = shared.features
    seed = derive_seed(shared.seed, unit.score, unit.policy, unit.trial)
    score = instantiate("score", SCORES, unit.score)
    policy = instantiate("policy", POLICIES, unit.policy)
    if score_is_random(score) and unit.trial > 0:
        scores = compute_scores(fs, shared.base_clf, [unit.score], shared.seed, unit.trial)[
            unit.score
        ]
    else:
        scores = shared.scores[unit.score]
    rescore = score_function(score, numpy_rng(seed, "rescore"))
    signed = bool(getattr(score, "signed", False))
    problem = _problem(fs, scores, shared.make_classifier, rescore, signed=signed)
    t0 = time.perf_counter()
    selections = policy.select(problem, shared.budgets, rng=np.random.default_rng(seed))
    select_share = (time.perf_counter() - t0) / len(shared.budgets)
    rows = []
    for budget in shared.budgets:
        t1 = time.perf_counter()
        selection = selections[budget]
        fit = shared.fitter.fit_and_score(selection)
        rows.append(
            {
                "score": unit.score,
                "policy": unit.policy,
                "budget": int(budget),
                "trial": int(unit.trial),
                "accuracy": fit.accuracy,
                "accuracy_augmented_test": fit.accuracy_augmented_test,
                "n_augmented": len(selection),
                "n_train_rows": int(fit.n_rows),
                "seconds": time.perf_counter() - t1 + select_share,
                "seed": seed,
            }
        )
    return rows


def plan_units(config: SubsampleConfig) -> list[Unit]:
    """Every (score, policy, trial) unit; deterministic ones get trial 0 only.

    A policy that reads a score's sign (``sign=helpful-first|skip-harmful``) is paired
    only with signed scores (``influence-test``); the pairs left out are named in one
    ``UserWarning``.
    """
    from leanaug.policies import POLICIES
    from leanaug.scores import SCORES

    units = []
    skipped = []
    for score_spec in config.scores:
        score = instantiate("score", SCORES, score_spec)
        score_random = score_is_random(score)
        for policy_spec in config.policies:
            policy = instantiate("policy", POLICIES, policy_spec)
            if getattr(policy, "sign", "magnitude") != "magnitude" and not getattr(
                score, "signed", False
            ):
                skipped.append(f"{score_spec} x {policy_spec}")
                continue
            deterministic = policy_is_deterministic(policy) and not score_random
            trials = 1 if deterministic else config.trials
            units.extend(Unit(score_spec, policy_spec, t) for t in range(trials))
    if skipped:
        warnings.warn(
            "policies that read the sign run only with signed scores (influence-test); "
            f"left out: {', '.join(skipped)}",
            UserWarning,
            stacklevel=2,
        )
    return units


# -- output folder -------------------------------------------------------------------------
def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [k for k in keys if old.get(k) != new.get(k)]


def clear_outputs(out: Path) -> None:
    """Delete the files a run writes (and nothing else) from ``out``."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for pattern in PLOT_GLOBS:
        for p in out.glob(pattern):
            p.unlink()


def prepare_out_dir(config: SubsampleConfig, overwrite: bool = False) -> Path:
    """Create ``out``, check it belongs to this config (else error), write ``config.yaml``."""
    out = output_dir(config.out)  # a file, a file above it, not writable: one line each
    cfg_path = out / "config.yaml"
    if overwrite:
        clear_outputs(out)
    elif cfg_path.is_file():
        try:
            old = {**ADDED_FIELDS, **(yaml.safe_load(cfg_path.read_text()) or {})}
        except yaml.YAMLError:
            old = {"unreadable": True}
        old_identity = {k: v for k, v in old.items() if k not in EXECUTION_FIELDS}
        diff = _differences(old_identity, config.identity())
        if diff:
            raise LeanaugError(
                f"{out} holds results of a different configuration (differs in: {', '.join(diff)}); "
                "pass --overwrite to delete them, or choose another --out"
            )
    elif any((out / name).exists() for name in RUN_FILES):
        raise LeanaugError(
            f"{out} holds result files but no config.yaml; pass --overwrite to delete them, or choose another --out"
        )
    write_text(cfg_path, config.to_yaml())
    return out


def _progress(enabled: bool) -> Progress:
    return Progress(transient=True, disable=not enabled)


def _order_results(frame: pd.DataFrame, config: SubsampleConfig) -> pd.DataFrame:
    s_rank = {s: i for i, s in enumerate(config.scores)}
    p_rank = {p: i for i, p in enumerate(config.policies)}
    key = frame.assign(_s=frame["score"].map(s_rank), _p=frame["policy"].map(p_rank))
    key = key.sort_values(["_s", "_p", "trial", "budget"], kind="stable")
    return key.drop(columns=["_s", "_p"]).reset_index(drop=True)[RESULT_COLUMNS]


# -- the run -------------------------------------------------------------------------------
@dataclass
class RunSummary:
    """What :func:`run_experiment` did. ``refits`` counts the classifier fits of this call
    for the baselines and one per result row (unit x budget), plus the scores'
    no-augmentation fit where it was not a baseline's; the ``update`` policy's re-scoring
    fits inside a unit are not counted (``benchmarks/bench_ray_sweep.py`` counts them).
    ``protocol``: how each fit was done (:data:`~leanaug.experiments.refit.PROTOCOL_TEXT`);
    ``featurizer_trainings``: the featurizers the ``featurizer-refit`` protocol trained
    (one per baseline and result row; 0 when frozen)."""

    out: Path
    config: SubsampleConfig
    results: pd.DataFrame
    baselines: dict[str, Any]
    scores: pd.DataFrame
    units_total: int
    units_run: int
    units_skipped: int
    refits: int
    features_computed: bool
    seconds: float
    files: list[Path] = field(default_factory=list)
    protocol: str = PROTOCOL_FROZEN
    featurizer_trainings: int = 0


def run_experiment(
    config: SubsampleConfig,
    overwrite: bool = False,
    progress: bool = True,
    plots: bool = True,
    executor: Executor | None = None,
) -> RunSummary:
    """Run (or resume) the experiment described by ``config``; see the module doc.

    The units run on ``executor`` when given (left open), else on the one named by
    ``config.executor`` (:mod:`leanaug.executors`; ``local`` with ``n_jobs`` workers, or
    ``ray``: one Ray task per unit, on ``config.ray_address`` or a local instance).
    """
    start = time.perf_counter()
    config.validate()
    config = fit_to_data(config)  # n_train / budgets "auto": values that fit the data
    from leanaug.augment import preset_names

    if config.augment not in preset_names(config.dataset):
        raise LeanaugError(
            f"unknown augmentation preset {config.augment!r} for {config.dataset}; valid presets: "
            f"{', '.join(preset_names(config.dataset))}"
        )
    out = prepare_out_dir(config, overwrite)
    fs, features_computed = load_or_compute_features(config, out, progress)
    n = fs.train.shape[0]
    if max(config.budgets) > n:
        raise LeanaugError(f"budget {max(config.budgets)} is larger than the {n} training points")
    fresh = features_computed  # new features invalidate everything computed from old ones
    with threadpool_limits(limits=thread_limit(config)):
        return _run_fitted_part(config, out, fs, fresh, progress, plots, start, executor)


class _Fits:
    """The run's fitter and the scores' no-augmentation classifier, each made when first
    needed (a finished run makes neither), and how many fits this call did."""

    def __init__(self, config: SubsampleConfig, fs: FeatureSet) -> None:
        self.config, self.fs = config, fs
        self.refits = 0
        self.trainings = 0
        self._fitter: Fitter | None = None
        self._base: LogisticClassifier | None = None

    def fitter(self) -> Fitter:
        if self._fitter is None:
            self._fitter = make_fitter(self.config, self.fs)
        return self._fitter

    def base(self) -> LogisticClassifier:
        if self._base is None:
            self._base = classifier_factory(self.config)().fit(self.fs.train, self.fs.train_labels)
            self.refits += 1
            if self.config.warm_start and self._fitter is not None:
                self._fitter.start = self._base
        return self._base

    def count(self, fits: int, base: LogisticClassifier | None = None) -> None:
        """``fits`` fits by the fitter; ``base``: one of them was the scores' classifier."""
        self.refits += fits
        self.trainings += fits if self.config.featurizer_refit else 0
        if base is not None:
            self._base = base


def _load_or_compute_baselines(
    config: SubsampleConfig, out: Path, fs: FeatureSet, fresh: bool, fits: _Fits
) -> dict[str, Any]:
    path = out / "baselines.json"
    if path.is_file() and not fresh:
        baselines = read_json(path, RESUME_HINT)
        # Folders written before the protocol was recorded are all frozen-featurizer runs.
        baselines.setdefault("protocol", PROTOCOL_FROZEN)
        return baselines
    computed, clean = compute_baselines(fs, fits.fitter(), config.warm_start)
    fits.count(2, base=clean)
    baselines = {"protocol": fits.fitter().protocol, **computed}
    write_json(path, baselines)
    return baselines


def _load_or_compute_scores(
    config: SubsampleConfig, out: Path, fs: FeatureSet, fresh: bool, fits: _Fits
) -> pd.DataFrame:
    path = out / "scores.parquet"
    frame = read_parquet(path, RESUME_HINT) if path.is_file() and not fresh else None
    if frame is None or any(s not in frame.columns for s in config.scores):
        scores = compute_scores(fs, fits.base(), config.scores, config.seed)
        n = fs.train.shape[0]
        frame = pd.DataFrame({"index": np.arange(n), "label": fs.train_labels, **scores})
        write_parquet(path, frame)
    return frame


def _finished_units(
    config: SubsampleConfig, out: Path, fresh: bool, units: list[Unit]
) -> tuple[pd.DataFrame, set[Unit]]:
    """The rows of ``results.parquet`` that belong to complete planned units, and those units."""
    path = out / "results.parquet"
    if not path.is_file() or fresh:
        return pd.DataFrame(columns=RESULT_COLUMNS), set()
    old = read_parquet(path, RESUME_HINT).drop_duplicates(["score", "policy", "trial", "budget"])
    if not len(old):
        return pd.DataFrame(columns=RESULT_COLUMNS), set()
    counts = old.groupby(["score", "policy", "trial"])["budget"].nunique()
    complete = {Unit(s, p, int(t)) for (s, p, t), c in counts.items() if c == len(config.budgets)}
    done = complete & set(units)
    keep = [
        Unit(s, p, int(t)) in done
        for s, p, t in zip(old["score"], old["policy"], old["trial"], strict=True)
    ]
    return old[np.asarray(keep, dtype=bool)], done


def _run_units(
    config: SubsampleConfig,
    out: Path,
    shared: _Shared,
    todo: list[Unit],
    results: pd.DataFrame,
    fits: _Fits,
    advance: Any,
    executor: Executor | None,
) -> pd.DataFrame:
    """Run ``todo``, rewriting ``results.parquet`` after every unit; the merged results."""
    frames = [results] if len(results) else []
    owned = executor is None
    ex = (
        make_executor(config.executor, n_jobs=config.n_jobs, address=config.ray_address)
        if owned
        else executor
    )
    try:
        for rows in ex.map(run_unit, todo, shared=shared, use_gpu=shared.fitter.trains_networks):
            frames.append(pd.DataFrame(rows, columns=RESULT_COLUMNS))
            fits.count(len(rows))
            # Rows are keyed by unit identity: a unit delivered twice (a retried
            # task) replaces its rows instead of duplicating them.
            merged = pd.concat(frames, ignore_index=True).drop_duplicates(
                ["score", "policy", "trial", "budget"], keep="last"
            )
            results = _order_results(merged, config)
            write_parquet(out / "results.parquet", results)
            advance()
    finally:
        if owned:
            ex.close()
    return results


def _run_fitted_part(
    config: SubsampleConfig,
    out: Path,
    fs: FeatureSet,
    fresh: bool,
    progress: bool,
    plots: bool,
    start: float,
    executor: Executor | None = None,
) -> RunSummary:
    fits = _Fits(config, fs)
    baselines = _load_or_compute_baselines(config, out, fs, fresh, fits)
    score_frame = _load_or_compute_scores(config, out, fs, fresh, fits)
    scores = {s: score_frame[s].to_numpy(dtype=np.float64) for s in config.scores}
    units = plan_units(config)
    results, done = _finished_units(config, out, fresh, units)
    todo = [u for u in units if u not in done]
    if done:
        note(f"{out}: resuming, {len(done)} of {len(units)} units already done", enabled=progress)
    with _progress(progress) as bar:
        task = bar.add_task(
            "subsampling units (score, policy, trial)", total=len(units), completed=len(done)
        )
        if todo:
            shared = _Shared(
                fs,
                scores,
                fits.base(),
                list(config.budgets),
                classifier_factory(config),
                config.seed,
                fits.fitter(),
                thread_limit(config),
            )
            results = _run_units(
                config, out, shared, todo, results, fits, lambda: bar.advance(task), executor
            )
    results_path = out / "results.parquet"
    if len(results):
        results = _order_results(results, config)
    if not todo and not results_path.is_file():
        write_parquet(results_path, results)
    summary = RunSummary(
        out=out,
        config=config,
        results=results.reset_index(drop=True),
        baselines=baselines,
        scores=score_frame,
        units_total=len(units),
        units_run=len(todo),
        units_skipped=len(done),
        refits=fits.refits,
        features_computed=fresh,
        seconds=time.perf_counter() - start,
        protocol=str(baselines["protocol"]),
        featurizer_trainings=fits.trainings,
    )
    if plots and len(results):
        from leanaug.experiments.plots import make_plots

        summary.files = make_plots(out)["paths"]
    return summary


def spec_name(spec: str) -> str:
    return parse_spec(spec)[0]
