"""One configuration schema for augmentation-subsampling runs.

:class:`SubsampleConfig` is read from a YAML file (``--config FILE``) and from the CLI
flags of ``leanaug subsample run``; flags override file values, file values override
the defaults below. The resolved configuration is written to ``<out>/config.yaml``.

Scores, policies and the featurizer are *specs*: a registry name with optional
parameters, ``name:key=value,key=value`` (values parsed as YAML scalars, so ``k=5`` is
an int). In a comma-separated flag, ``--policies random,update:k=5,refit=false,topk``
a ``key=value`` item without a ``:`` belongs to the spec before it. In YAML a spec may
also be a mapping ``{name: update, k: 5}``.

Defaults that depend on the data (:func:`fit_to_data`, applied by the runner once the
training set's size is known): ``n_train: auto`` keeps the paper's first 1000 points,
or every point of the chosen classes when there are fewer; ``budgets: auto`` is the
paper's 1, 10, 50, 100, 250, 500, 750, 1000 out of 1000 as fractions of n_train
(:data:`BUDGET_FRACTIONS`). An n_train given explicitly that exceeds the data stays an
error.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from leanaug.errors import LeanaugError

#: Fields that say where or how fast a run is computed, not what it computes; changing
#: them does not invalidate an output folder's finished results.
EXECUTION_FIELDS = ("out", "n_jobs", "device", "executor", "ray_address")

#: Fields added after output folders were first written, with the value a folder's
#: ``config.yaml`` without them meant (so those folders still resume).
ADDED_FIELDS: dict[str, Any] = {
    "featurizer_refit": False,
    "classifier_params": {},
    "warm_start": False,
}
#: The logistic regression's options a config may set (besides ``C``); see
#: :class:`~leanaug.classifier.LogisticClassifier`.
CLASSIFIER_PARAMS = ("solver", "tol", "max_iter", "precision")

PAPER_BUDGETS = [1, 10, 50, 100, 250, 500, 750, 1000]
#: ``n_train: auto``: the paper's 1000 points, or all of them when there are fewer.
DEFAULT_N_TRAIN = 1000
#: ``budgets: auto``: the paper's budgets (out of its 1000 points) as fractions of n_train.
BUDGET_FRACTIONS = tuple(b / DEFAULT_N_TRAIN for b in PAPER_BUDGETS)
AUTO = "auto"


@dataclass
class SubsampleConfig:
    """Everything that defines one augmentation-subsampling experiment.

    ``trials`` applies to randomised (score, policy) pairs; a deterministic policy with a
    deterministic score (``topk``, ``sv``, ...) gives the same selection every time and
    is run once (trial 0).
    """

    dataset: str = "mnist"
    data_dir: str | None = None
    classes: list[str | int] | None = field(default_factory=lambda: [3, 8])
    #: an int, None (every point) or "auto" (see the module doc)
    n_train: int | str | None = AUTO
    subset: str = "first"
    augment: str = "translate"
    featurizer: str = "pixels"
    featurizer_params: dict[str, Any] = field(default_factory=dict)
    #: False: the featurizer is trained once on the clean points and frozen, and every
    #: fit refits only the logistic regression. True: the reference's MNIST protocol,
    #: a fresh featurizer trained on every fit's rows (:mod:`leanaug.experiments.refit`).
    featurizer_refit: bool = False
    C: float = 1.0
    #: options of the logistic regression: ``solver`` (``lbfgs``: scikit-learn; ``torch``:
    #: the same problem, objective in torch on ``device``), ``tol``, ``max_iter``
    classifier_params: dict[str, Any] = field(default_factory=dict)
    #: start every augmented fit from the no-augmentation fit's parameters (the same
    #: optimum, fewer iterations); frozen-featurizer protocol only
    warm_start: bool = False
    scores: list[str] = field(default_factory=lambda: ["influence", "loss", "random"])
    policies: list[str] = field(default_factory=lambda: ["random", "proportional", "topk"])
    #: a list of ints or "auto" (fractions of n_train, see the module doc)
    budgets: list[int] | str = AUTO
    trials: int = 5
    seed: int = 0
    out: str = "runs/subsample"
    n_jobs: int = 1
    device: str = "auto"
    #: ``local`` (joblib with ``n_jobs``) or ``ray`` (one Ray task per unit; see
    #: :mod:`leanaug.executors`); ``ray_address``: the Ray cluster to join (``auto``,
    #: ``HOST:6379``, ``ray://HOST:10001``), none for a local instance with ``n_jobs`` CPUs.
    executor: str = "local"
    ray_address: str | None = None

    # -- conversions --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """The fields that determine the results (everything but :data:`EXECUTION_FIELDS`)."""
        return {k: v for k, v in self.to_dict().items() if k not in EXECUTION_FIELDS}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    @property
    def featurizer_spec(self) -> str:
        return format_spec(self.featurizer, self.featurizer_params)

    # -- checks -------------------------------------------------------------------------
    def validate(self) -> SubsampleConfig:
        """Check names and numbers before any data is loaded; returns ``self``.

        Raises :class:`LeanaugError` with a one-line message on the first problem.
        """
        from leanaug.features import FEATURIZERS
        from leanaug.policies import POLICIES
        from leanaug.scores import SCORES

        if self.subset not in ("first", "random"):
            raise LeanaugError(f"subset must be 'first' or 'random', got {self.subset!r}")
        if self.classes is not None and len(self.classes) == 0:
            raise LeanaugError(
                "classes is empty: give at least two classes (e.g. --classes 3,8) or leave it out for all"
            )
        if self.classes is not None and len(set(map(str, self.classes))) != len(self.classes):
            raise LeanaugError(f"classes has duplicates: {self.classes}")
        if isinstance(self.n_train, str) and self.n_train != AUTO:
            raise LeanaugError(f"n_train must be an integer, 'all' or 'auto', got {self.n_train!r}")
        if isinstance(self.n_train, int) and self.n_train < 2:
            raise LeanaugError(
                f"n_train must be >= 2 (or left out for the whole training set), got {self.n_train}"
            )
        if not (isinstance(self.C, int | float) and self.C > 0 and self.C != float("inf")):
            raise LeanaugError(f"C must be a positive number, got {self.C!r}")
        if self.trials < 1:
            raise LeanaugError(f"trials must be >= 1, got {self.trials}")
        if self.n_jobs == 0:
            raise LeanaugError(
                "n_jobs must be a positive number of workers or -1 for all cores, got 0"
            )
        self._validate_executor()
        if self.budgets != AUTO:  # "auto" is checked once fitted to the data (fit_to_data)
            self._validate_budgets()
        if not self.scores:
            raise LeanaugError("scores is empty: give at least one score (e.g. --scores loss)")
        if not self.policies:
            raise LeanaugError(
                "policies is empty: give at least one policy (e.g. --policies random)"
            )
        for spec in self.scores:
            instantiate("score", SCORES, spec)
        for spec in self.policies:
            instantiate("policy", POLICIES, spec)
        FEATURIZERS.check_params(self.featurizer, self.featurizer_params)
        if self.featurizer_refit:
            from leanaug.experiments.refit import check_refit_featurizer

            check_refit_featurizer(self.featurizer, self.featurizer_params)
            if self.warm_start:
                raise LeanaugError(
                    "warm_start needs the frozen featurizer: with featurizer_refit every fit "
                    "has features of its own, so no fit can start from another's parameters"
                )
        self._validate_classifier()
        for kind, specs in (("scores", self.scores), ("policies", self.policies)):
            dup = {s for s in specs if specs.count(s) > 1}
            if dup:
                raise LeanaugError(f"{kind} lists {sorted(dup)} more than once")
        return self

    def _validate_classifier(self) -> None:
        from leanaug.classifier import LogisticClassifier

        unknown = sorted(set(self.classifier_params) - set(CLASSIFIER_PARAMS))
        if unknown:
            raise LeanaugError(
                f"classifier_params: unknown key(s) {unknown}; valid keys: "
                f"{', '.join(CLASSIFIER_PARAMS)}"
            )
        params = self.classifier_params
        if "tol" in params and not (isinstance(params["tol"], int | float) and params["tol"] > 0):
            raise LeanaugError(
                f"classifier_params: tol must be a number > 0, got {params['tol']!r}"
            )
        if "max_iter" in params and not (
            isinstance(params["max_iter"], int) and params["max_iter"] >= 1
        ):
            raise LeanaugError(
                f"classifier_params: max_iter must be an integer >= 1, got {params['max_iter']!r}"
            )
        LogisticClassifier(C=self.C, **params)  # an unknown solver: one line listing them

    def _validate_budgets(self) -> None:
        if not self.budgets:
            raise LeanaugError(
                "budgets is empty: give at least one budget (e.g. --budgets 1,10,50)"
            )
        bad = [b for b in self.budgets if b < 1]
        if bad:
            raise LeanaugError(f"budgets must be >= 1 (the number of augmented points), got {bad}")
        if isinstance(self.n_train, int) and max(self.budgets) > self.n_train:
            raise LeanaugError(
                f"budget {max(self.budgets)} is larger than n_train={self.n_train} "
                "(a budget counts training points to augment)"
            )

    def _validate_executor(self) -> None:
        from leanaug.executors import EXECUTORS, RAY_INSTALL_HINT, ray_available

        EXECUTORS.get(self.executor)
        if self.ray_address and self.executor != "ray":
            raise LeanaugError(
                f"ray_address {self.ray_address!r} needs executor 'ray' (got {self.executor!r})"
            )
        if self.executor == "ray" and not ray_available():
            raise LeanaugError(
                f"--executor ray needs Ray, which is not installed: {RAY_INSTALL_HINT}"
            )


# -- defaults that fit the data ---------------------------------------------------------
def budgets_for(n_train: int) -> list[int]:
    """The paper's budgets as fractions of ``n_train`` (:data:`BUDGET_FRACTIONS`, each
    rounded, at least 1): ``budgets_for(1000) == PAPER_BUDGETS``; 268 points give
    1, 3, 13, 27, 67, 134, 201, 268."""
    return sorted({max(1, round(f * n_train)) for f in BUDGET_FRACTIONS})


def load_config_data(config: Any) -> Any:
    """The :class:`~leanaug.data.ImageDataset` a config names: its ``dataset``,
    ``data_dir``, ``classes``, ``n_train`` points (``subset``, ``seed``). Any config with
    those fields (:class:`SubsampleConfig`, the end-to-end config)."""
    from leanaug.data import load_dataset

    return load_dataset(
        config.dataset,
        data_dir=config.data_dir,
        classes=config.classes,
        n_train=config.n_train,
        subset=config.subset,
        seed=config.seed,
    )


def count_training_points(config: SubsampleConfig) -> int:
    """Training points of ``config``'s data set and classes (after an explicit n_train,
    which the loader rejects when it exceeds the data)."""
    n_train = config.n_train if isinstance(config.n_train, int) else None
    return len(load_config_data(dataclasses.replace(config, n_train=n_train)).train_labels)


def fit_to_data(config: SubsampleConfig, n_available: int | None = None) -> SubsampleConfig:
    """``config`` with ``n_train: auto`` and ``budgets: auto`` made concrete for its data.

    ``n_train: auto`` -> :data:`DEFAULT_N_TRAIN`, or None (every point) when the chosen
    classes have no more than that; ``budgets: auto`` -> :func:`budgets_for` n_train.
    ``n_available`` (the training points of the chosen classes) is counted by loading
    the data set when not given. A config without "auto" comes back unchanged.
    """
    if config.n_train != AUTO and config.budgets != AUTO:
        return config
    if n_available is None:
        n_available = count_training_points(config)
    n_train = config.n_train
    if n_train == AUTO:
        n_train = DEFAULT_N_TRAIN if n_available > DEFAULT_N_TRAIN else None
    n = n_available if n_train is None else int(n_train)  # type: ignore[arg-type]
    budgets = budgets_for(n) if config.budgets == AUTO else config.budgets
    return dataclasses.replace(config, n_train=n_train, budgets=budgets).validate()


# -- specs ------------------------------------------------------------------------------
def parse_value(text: str) -> Any:
    """``"5"`` -> 5, ``"0.5"`` -> 0.5, ``"true"`` -> True, ``"none"`` -> None, else the text."""
    if text.strip().lower() in ("none", "null"):
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_spec(spec: str | dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``"update:k=5,refit=false"`` -> ``("update", {"k": 5, "refit": False})``."""
    if isinstance(spec, dict):
        if "name" not in spec:
            raise LeanaugError(f"a spec given as a mapping needs a 'name' key, got {spec}")
        params = {k: v for k, v in spec.items() if k != "name"}
        if isinstance(params.get("params"), dict) and len(params) == 1:
            params = params["params"]
        return str(spec["name"]), params
    if not isinstance(spec, str) or not spec.strip():
        raise LeanaugError(f"expected a name like 'update' or 'update:k=5', got {spec!r}")
    name, _, rest = spec.strip().partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise LeanaugError(f"bad parameter {item!r} in {spec!r}: expected key=value")
        params[key.strip()] = parse_value(value.strip())
    return name.strip(), params


def format_spec(name: str, params: dict[str, Any]) -> str:
    """The inverse of :func:`parse_spec` (parameters in sorted order)."""
    if not params:
        return name
    items = ",".join(f"{k}={_format_value(v)}" for k, v in sorted(params.items()))
    return f"{name}:{items}"


def _format_value(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def normalize_spec(spec: str | dict[str, Any]) -> str:
    return format_spec(*parse_spec(spec))


def split_specs(text: str) -> list[str]:
    """Split a comma-separated flag value into specs (see module doc)."""
    specs: list[str] = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        if "=" in item and ":" not in item:
            if not specs:
                raise LeanaugError(f"parameter {item!r} in {text!r} comes before any name")
            sep = "," if ":" in specs[-1] else ":"
            specs[-1] = f"{specs[-1]}{sep}{item}"
        else:
            specs.append(item)
    return specs


def instantiate(kind: str, registry: Any, spec: str) -> Any:
    """Build ``registry.get(name)(**params)``; unknown parameters and bad values raise
    :class:`~leanaug.errors.ParameterError` listing the valid ones
    (:meth:`leanaug.registry.Registry.create`). ``kind`` is kept for callers; the
    registry's own kind names the component in messages."""
    name, params = parse_spec(spec)
    return registry.create(name, params)


# -- resolution -------------------------------------------------------------------------
FIELD_NAMES = tuple(f.name for f in dataclasses.fields(SubsampleConfig))


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict of known fields (unknown keys are an error)."""
    path = Path(path)
    if not path.is_file():
        raise LeanaugError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise LeanaugError(
            f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LeanaugError(f"config file {path} must be a YAML mapping of field: value")
    unknown = sorted(set(data) - set(FIELD_NAMES))
    if unknown:
        raise LeanaugError(
            f"config file {path}: unknown field(s) {unknown}; valid fields: {', '.join(FIELD_NAMES)}"
        )
    return data


def _as_list(value: Any, what: str) -> list[Any]:
    if isinstance(value, str):
        return (
            split_specs(value)
            if what in ("scores", "policies")
            else [v.strip() for v in value.split(",") if v.strip()]
        )
    if isinstance(value, list | tuple):
        return list(value)
    raise LeanaugError(f"{what} must be a list or a comma-separated string, got {value!r}")


def _as_int(value: Any, what: str) -> int:
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise LeanaugError(f"{what} must be an integer, got {value!r}") from None


def _class_value(value: Any) -> str | int:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


def _normalize(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    if out.get("classes") is not None:
        out["classes"] = [_class_value(c) for c in _as_list(out["classes"], "classes")]
    for key in ("scores", "policies"):
        out[key] = [normalize_spec(s) for s in _as_list(out[key], key)]
    if out.get("budgets") is None or (
        isinstance(out["budgets"], str) and out["budgets"].strip().lower() == AUTO
    ):
        out["budgets"] = AUTO  # fractions of n_train (fit_to_data)
    else:
        out["budgets"] = sorted(
            {_as_int(b, "budgets") for b in _as_list(out["budgets"], "budgets")}
        )
    for key in ("trials", "seed", "n_jobs"):
        out[key] = _as_int(out[key], key)
    if isinstance(out.get("n_train"), str) and out["n_train"].strip().lower() in (
        "all",
        "none",
        "",
    ):
        out["n_train"] = None  # the whole training split
    if isinstance(out.get("n_train"), str) and out["n_train"].strip().lower() == AUTO:
        out["n_train"] = AUTO  # at most DEFAULT_N_TRAIN (fit_to_data)
    elif out.get("n_train") is not None:
        out["n_train"] = _as_int(out["n_train"], "n_train")
    try:
        out["C"] = float(out["C"])
    except (TypeError, ValueError):
        raise LeanaugError(f"C must be a number, got {out['C']!r}") from None
    fname, fparams = parse_spec(out["featurizer"])
    params = dict(out.get("featurizer_params") or {})
    params.update(fparams)  # parameters in the spec win over featurizer_params
    out["featurizer"], out["featurizer_params"] = fname, params
    for key in ("data_dir", "out", "executor", "ray_address"):
        if out.get(key) is not None:
            out[key] = str(out[key])
    for key in ("featurizer_refit", "warm_start"):
        if not isinstance(out.get(key), bool):
            raise LeanaugError(f"{key} must be true or false, got {out.get(key)!r}")
    params = out.get("classifier_params") or {}
    if isinstance(params, str):  # the CLI's "solver=torch,tol=1e-5"
        params = parse_spec(f"classifier:{params}")[1] if params.strip() else {}
    if not isinstance(params, dict):
        raise LeanaugError(f"classifier_params must be a mapping, got {params!r}")
    out["classifier_params"] = dict(params)
    return out


def resolve_config(
    path: str | Path | None = None, defaults: dict[str, Any] | None = None, **overrides: Any
) -> SubsampleConfig:
    """Defaults (:class:`SubsampleConfig`'s, updated by ``defaults``) <- config file <-
    overrides (``None`` overrides are ignored; ``n_train="all"`` means the whole split),
    normalised and validated."""
    values = SubsampleConfig().to_dict()
    if defaults:
        values.update(defaults)
    if path is not None:
        values.update(load_config_file(path))
    unknown = sorted(set(overrides) - set(FIELD_NAMES))
    if unknown:
        raise LeanaugError(
            f"unknown config field(s) {unknown}; valid fields: {', '.join(FIELD_NAMES)}"
        )
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "featurizer" in overrides and "featurizer_params" not in overrides:
        values[
            "featurizer_params"
        ] = {}  # a featurizer spec on the command line replaces the file's
    values.update(overrides)
    return SubsampleConfig(**_normalize(values)).validate()


#: ``leanaug demo``: digits 3 vs 8 on raw pixels, small enough for under a minute on 2 CPU
#: cores. ``configs/demo.yaml`` holds the same values (a test keeps the two in sync).
DEMO = dict(
    dataset="digits",
    classes=[3, 8],
    n_train=None,
    subset="first",
    augment="translate",
    featurizer="pixels",
    featurizer_params={},
    C=1.0,
    scores=["influence", "loss", "random"],
    policies=["random", "proportional", "topk", "update", "downweight"],
    budgets=[1, 5, 10, 20, 40, 80, 160, 240],
    trials=5,
    seed=0,
)
