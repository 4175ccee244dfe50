"""Augmentation subsampling with the network retrained end to end (no frozen featurizer).

Kuchnik & Smith evaluate a selection by refitting a logistic regression on frozen
features. Here the *same* selections (same scores, policies and seeds as
:func:`leanaug.experiments.runner.run_experiment`) are evaluated by training a network
from scratch on the n clean training images plus the deterministic copies of the selected
points, and measuring it on the clean and the augmented test sets. The question: does
the ranking of policies survive end-to-end training?

Pipeline, for one :class:`EndToEndConfig`:

1. scores, as in the frozen pipeline: featurize with ``score_featurizer`` (trained once
   on the clean points and cached), fit the L2 logistic regression on the clean
   features, score every training point (``features.npz``, ``scores.parquet`` as the
   runner writes them);
2. per trial: train the network on the originals only and on originals plus every copy:
   the **no-augmentation** and **full-augmentation** baselines of that trial;
3. per (score, policy) pair, trial and budget: the policy's selection (seed
   ``derive_seed(seed, score, policy, trial)``, the runner's, so the selections are the
   frozen pipeline's), one network trained from scratch on originals + copies of the
   selected points, its accuracies, and, for comparison, the frozen-feature logistic
   regression's accuracies on the same selection (``frozen_*`` columns).

Training uses a fixed number of optimizer ``steps`` (Adam, minibatches drawn by
reshuffling the training set each pass) for every training set, so a larger augmented
set gets the same compute, not more: differences come from the data. Within a trial
every network starts from the same initialisation and uses the same batch-order seed
(common random numbers), so budget = n reproduces that trial's full-augmentation
network exactly. Sample weights (``downweight``) weight the cross-entropy.

Outputs (``out``): ``results.parquet`` (the runner's columns plus ``frozen_accuracy``,
``frozen_accuracy_augmented_test``, ``train_accuracy``), ``baselines.json`` (means over
trials of both baselines and each trial's values under ``trials``), ``config.yaml``
(with ``kind: end_to_end``), ``features.npz``, ``scores.parquet`` and the runner's plots.
Rows are written atomically after every training; re-running resumes.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from rich.console import Console
from torch.nn import functional as F

from leanaug.classifier import LogisticClassifier
from leanaug.device import resolve_device
from leanaug.errors import LeanaugError
from leanaug.experiments.config import (
    SubsampleConfig,
    instantiate,
    load_config_data,
    normalize_spec,
)
from leanaug.results import (
    output_dir,
    read_json,
    read_parquet,
    write_json,
    write_parquet,
    write_text,
)
from leanaug.seeding import derive_seed, numpy_rng

NETWORKS = ("smallcnn", "resnet")
E2E_COLUMNS = [
    "score",
    "policy",
    "budget",
    "trial",
    "accuracy",
    "accuracy_augmented_test",
    "frozen_accuracy",
    "frozen_accuracy_augmented_test",
    "train_accuracy",
    "n_augmented",
    "n_train_rows",
    "seconds",
    "seed",
]
_STDERR = Console(stderr=True)


@dataclass
class EndToEndConfig:
    """One end-to-end subsampling experiment (see the module doc).

    ``pairs``: ``"score/policy"`` specs, e.g. ``"influence/proportional"``,
    ``"loss/topk"``, ``"influence/update:k=50"``. ``network``: ``smallcnn`` or
    ``resnet`` (``network_params`` go to the module, e.g. ``{depth: 8}`` for resnet).
    """

    dataset: str = "mnist"
    data_dir: str | None = None
    classes: list[str | int] | None = field(default_factory=lambda: [3, 8])
    n_train: int | None = 1000
    subset: str = "first"
    augment: str = "translate"
    score_featurizer: str = "smallcnn"
    score_featurizer_params: dict[str, Any] = field(
        default_factory=lambda: {"epochs": 40, "batch_size": 512, "lr": 0.001}
    )
    C: float = 1.0
    pairs: list[str] = field(
        default_factory=lambda: ["influence/random", "influence/proportional", "loss/topk"]
    )
    budgets: list[int] = field(default_factory=lambda: [50, 100, 250])
    trials: int = 3
    network: str = "smallcnn"
    network_params: dict[str, Any] = field(default_factory=dict)
    steps: int = 300
    batch_size: int = 64
    lr: float = 0.001
    seed: int = 0
    out: str = "runs/end_to_end"
    device: str = "auto"

    def validate(self) -> EndToEndConfig:
        from leanaug.policies import POLICIES
        from leanaug.scores import SCORES

        if self.network not in NETWORKS:
            raise LeanaugError(
                f"end-to-end network must be one of {', '.join(NETWORKS)}, got {self.network!r}"
            )
        for name in ("trials", "steps", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise LeanaugError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise LeanaugError(f"lr must be > 0, got {self.lr}")
        if not self.budgets or min(self.budgets) < 1:
            raise LeanaugError(
                f"budgets must be a non-empty list of integers >= 1, got {self.budgets}"
            )
        if self.n_train is not None and max(self.budgets) > self.n_train:
            raise LeanaugError(f"budget {max(self.budgets)} is larger than n_train={self.n_train}")
        if not self.pairs:
            raise LeanaugError("pairs is empty: give at least one 'score/policy' pair")
        for pair in self.pairs:
            score, policy = split_pair(pair)
            instantiate("score", SCORES, score)
            instantiate("policy", POLICIES, policy)
        if len(set(self.pairs)) != len(self.pairs):
            raise LeanaugError(f"pairs lists a pair twice: {self.pairs}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "end_to_end", **dataclasses.asdict(self)}

    def identity(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_dict().items() if k not in ("out", "device")}

    def scoring_config(self) -> SubsampleConfig:
        """The frozen-pipeline config whose features and scores this experiment uses."""
        scores = list(dict.fromkeys(split_pair(p)[0] for p in self.pairs))
        policies = list(dict.fromkeys(split_pair(p)[1] for p in self.pairs))
        return SubsampleConfig(
            dataset=self.dataset,
            data_dir=self.data_dir,
            classes=self.classes,
            n_train=self.n_train,
            subset=self.subset,
            augment=self.augment,
            featurizer=self.score_featurizer,
            featurizer_params=dict(self.score_featurizer_params),
            C=self.C,
            scores=scores,
            policies=policies,
            budgets=list(self.budgets),
            trials=self.trials,
            seed=self.seed,
            out=self.out,
            device=self.device,
        ).validate()


def split_pair(pair: str) -> tuple[str, str]:
    """``"influence/update:k=5"`` -> ``("influence", "update:k=5")`` (normalised specs)."""
    score, sep, policy = str(pair).partition("/")
    if not sep or not score.strip() or not policy.strip():
        raise LeanaugError(f"expected a 'score/policy' pair like 'influence/topk', got {pair!r}")
    return normalize_spec(score.strip()), normalize_spec(policy.strip())


def load_end_to_end_config(path: str | Path | None = None, **overrides: Any) -> EndToEndConfig:
    """Defaults <- YAML file <- ``overrides`` (``None`` values ignored), validated."""
    names = {f.name for f in dataclasses.fields(EndToEndConfig)}
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise LeanaugError(f"config file {path} does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise LeanaugError(f"config file {path} must be a YAML mapping of field: value")
        data.pop("kind", None)
        unknown = sorted(set(data) - names)
        if unknown:
            raise LeanaugError(
                f"config file {path}: unknown field(s) {unknown}; valid fields: {', '.join(sorted(names))}"
            )
        values.update(data)
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise LeanaugError(f"unknown field(s) {unknown}; valid fields: {', '.join(sorted(names))}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    if isinstance(values.get("n_train"), str) and values["n_train"].lower() in ("all", "none"):
        values["n_train"] = None
    for key in ("trials", "steps", "batch_size", "seed"):
        if key in values:
            values[key] = int(values[key])
    if "budgets" in values:
        b = values["budgets"]
        b = b.split(",") if isinstance(b, str) else b
        values["budgets"] = sorted({int(x) for x in b})
    if isinstance(values.get("pairs"), str):
        values["pairs"] = [p.strip() for p in values["pairs"].split(";") if p.strip()]
    if "pairs" in values:
        values["pairs"] = ["/".join(split_pair(p)) for p in values["pairs"]]
    if values.get("data_dir") is not None:
        values["data_dir"] = str(values["data_dir"])
    return EndToEndConfig(**values).validate()


# -- networks and training -------------------------------------------------------------------
def build_network(config: EndToEndConfig, image_shape: tuple[int, int, int], num_classes: int):
    from leanaug.features.networks import PreActResNet, SmallCNN

    if config.network == "smallcnn":
        return SmallCNN(image_shape, num_classes, **config.network_params)
    return PreActResNet(image_shape, num_classes, **config.network_params)


def train_network(
    config: EndToEndConfig,
    images: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor,
    num_classes: int,
    norm_images: torch.Tensor,
    trial: int,
    device: torch.device,
) -> tuple[torch.nn.Module, float]:
    """A fresh network trained for ``config.steps`` Adam steps on ``images`` (float, [0,1]).

    Initialisation and batch order depend only on ``(seed, trial)``: every training set of
    a trial starts from the same weights. ``norm_images`` (the clean training images) fix
    the input normalisation, so it does not change with the selection. Returns the net
    (eval mode) and its accuracy on its training rows during the last pass.
    """
    fork = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork):
        torch.manual_seed(derive_seed(config.seed, "end_to_end", "init", trial))
        net = build_network(config, tuple(images.shape[1:]), num_classes).to(device)
        with torch.no_grad():
            net.normalize.set_stats(norm_images.mean(dim=(0, 2, 3)), norm_images.std(dim=(0, 2, 3)))
        gen = torch.Generator().manual_seed(derive_seed(config.seed, "end_to_end", "order", trial))
        opt = torch.optim.Adam(net.parameters(), lr=config.lr)
        n = images.shape[0]
        bs = min(config.batch_size, n)
        perm = torch.randperm(n, generator=gen)
        pos = 0
        correct = seen = 0
        net.train()
        for _ in range(config.steps):
            if pos + bs > n:
                perm, pos = torch.randperm(n, generator=gen), 0
                correct = seen = 0
            idx = perm[pos : pos + bs]
            pos += bs
            xb, yb, wb = images[idx].to(device), labels[idx].to(device), weights[idx].to(device)
            logits = net(xb)
            loss = (F.cross_entropy(logits, yb, reduction="none") * wb).sum() / wb.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            correct += int((logits.detach().argmax(1) == yb).sum())
            seen += len(idx)
    net.eval()
    return net, correct / max(seen, 1)


def accuracy(
    net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, device, batch: int = 1024
) -> float:
    correct = 0
    with torch.inference_mode():
        for s in range(0, images.shape[0], batch):
            pred = net(images[s : s + batch].to(device)).argmax(1).cpu()
            correct += int((pred == labels[s : s + batch]).sum())
    return correct / images.shape[0]


@dataclass
class _Data:
    train: torch.Tensor  # (n, C, H, W) float
    train_labels: torch.Tensor
    copies: torch.Tensor  # (n, K, C, H, W) float
    test: torch.Tensor  # clean test + all copies, clean first
    test_labels: torch.Tensor
    n_test_clean: int
    num_classes: int


def _load_images(config: EndToEndConfig) -> _Data:
    from leanaug.augment import preset, to_float

    ds = load_config_data(config)
    aug = preset(config.dataset, config.augment)
    train = to_float(ds.train_images)
    test = to_float(ds.test_images)
    copies = aug.copies(train)
    test_copies = aug.copies(test)
    m, k = test_copies.shape[:2]
    test_all = torch.cat([test, test_copies.reshape(m * k, *test.shape[1:])])
    test_labels = torch.from_numpy(ds.test_labels)
    labels_all = torch.cat([test_labels, test_labels.repeat_interleave(k)])
    return _Data(
        train=train,
        train_labels=torch.from_numpy(ds.train_labels),
        copies=copies,
        test=test_all,
        test_labels=labels_all,
        n_test_clean=m,
        num_classes=ds.num_classes,
    )


def _training_set(data: _Data, w: np.ndarray, indices: np.ndarray):
    """Images, labels, weights in :func:`leanaug.policies.augmented_training_set`'s row order."""
    k = data.copies.shape[1]
    idx = torch.from_numpy(np.asarray(indices, dtype=np.int64))
    x = torch.cat([data.train, data.copies[idx].reshape(-1, *data.train.shape[1:])])
    y = torch.cat([data.train_labels, data.train_labels[idx].repeat_interleave(k)])
    return x, y, torch.from_numpy(np.asarray(w, dtype=np.float32))


def _evaluate(net, data: _Data, device) -> tuple[float, float]:
    m = data.n_test_clean
    clean = accuracy(net, data.test[:m], data.test_labels[:m], device)
    both = accuracy(net, data.test, data.test_labels, device)
    return clean, both


# -- the experiment --------------------------------------------------------------------------
def _prepare_out(config: EndToEndConfig, overwrite: bool) -> Path:
    out = Path(config.out)
    cfg_path = out / "config.yaml"
    if overwrite:
        for name in ("results.parquet", "baselines.json", "config.yaml"):
            (out / name).unlink(missing_ok=True)
    elif cfg_path.is_file():
        old = yaml.safe_load(cfg_path.read_text()) or {}
        old_id = {k: v for k, v in old.items() if k not in ("out", "device")}
        diff = sorted(
            k
            for k in set(old_id) | set(config.identity())
            if old_id.get(k) != config.identity().get(k)
        )
        if diff:
            raise LeanaugError(
                f"{out} holds end-to-end results of a different configuration (differs in: "
                f"{', '.join(diff)}); pass overwrite=True (--overwrite) or choose another out"
            )
    output_dir(out, option="out")
    write_text(cfg_path, yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=None))
    return out


def run_end_to_end(
    config: EndToEndConfig, overwrite: bool = False, log: bool = True, plots: bool = True
) -> dict[str, Any]:
    """Run (or resume) the experiment; returns ``{"results", "baselines", "trainings", "seconds"}``."""
    from leanaug.experiments.runner import (
        FrozenFitter,
        _fit_selection,
        _problem,
        compute_baselines,
        compute_scores,
        load_or_compute_features,
        score_is_random,
    )
    from leanaug.policies import POLICIES, augmented_training_set
    from leanaug.scores import SCORES, score_function

    start = time.perf_counter()
    config.validate()
    out = _prepare_out(config, overwrite)
    scfg = config.scoring_config()
    fs, computed = load_or_compute_features(scfg, out, progress=False)
    scores_path = out / "scores.parquet"
    make_classifier = partial(LogisticClassifier, C=config.C)
    base_clf = make_classifier().fit(fs.train, fs.train_labels)
    frame = read_parquet(scores_path) if scores_path.is_file() and not computed else None
    if frame is None or any(s not in frame.columns for s in scfg.scores):
        scores = compute_scores(fs, base_clf, scfg.scores, config.seed)
        frame = pd.DataFrame(
            {"index": np.arange(fs.train.shape[0]), "label": fs.train_labels, **scores}
        )
        write_parquet(scores_path, frame)
    scores = {s: frame[s].to_numpy(dtype=np.float64) for s in scfg.scores}

    frozen_baselines, _ = compute_baselines(fs, FrozenFitter(fs, make_classifier))
    data = _load_images(config)
    device = resolve_device(config.device)
    n = data.train.shape[0]
    if max(config.budgets) > n:
        raise LeanaugError(f"budget {max(config.budgets)} is larger than the {n} training points")
    test_aug = fs.test_augmented

    def say(text: str) -> None:
        if log:
            _STDERR.print(text, highlight=False)

    trainings = 0

    # baselines per trial
    base_path = out / "baselines.json"
    per_trial: dict[str, list[dict[str, float]]] = (
        read_json(base_path).get("trials", {}) if base_path.is_file() and not computed else {}
    )
    for key in ("no_augmentation", "full_augmentation"):
        per_trial.setdefault(key, [])
    for trial in range(config.trials):
        for key, idx in (("no_augmentation", np.arange(0)), ("full_augmentation", np.arange(n))):
            if any(r["trial"] == trial for r in per_trial[key]):
                continue
            t0 = time.perf_counter()
            w = np.ones(n + idx.size * data.copies.shape[1])
            x, y, wt = _training_set(data, w, idx)
            net, train_acc = train_network(
                config, x, y, wt, data.num_classes, data.train, trial, device
            )
            acc, acc_aug = _evaluate(net, data, device)
            trainings += 1
            per_trial[key].append(
                {"trial": trial, "accuracy": acc, "accuracy_augmented_test": acc_aug,
                 "train_accuracy": train_acc, "n_train_rows": int(x.shape[0]),
                 "seconds": time.perf_counter() - t0}
            )  # fmt: skip
            write_json(base_path, _baselines(per_trial, frozen_baselines))
            say(
                f"{key} trial {trial}: clean {acc:.4f} augmented {acc_aug:.4f} ({time.perf_counter() - t0:.0f} s)"
            )
    write_json(base_path, _baselines(per_trial, frozen_baselines))

    results_path = out / "results.parquet"
    results = (
        read_parquet(results_path)
        if results_path.is_file() and not computed
        else pd.DataFrame(columns=E2E_COLUMNS)
    )
    done = {(r.score, r.policy, int(r.trial), int(r.budget)) for r in results.itertuples()}
    rows = [results] if len(results) else []
    for pair in config.pairs:
        score_spec, policy_spec = split_pair(pair)
        for trial in range(config.trials):
            todo = [b for b in config.budgets if (score_spec, policy_spec, trial, b) not in done]
            if not todo:
                continue
            # The runner's unit seed and score handling: same selections as the frozen runs.
            seed = derive_seed(config.seed, score_spec, policy_spec, trial)
            score = instantiate("score", SCORES, score_spec)
            policy = instantiate("policy", POLICIES, policy_spec)
            if score_is_random(score) and trial > 0:
                s = compute_scores(fs, base_clf, [score_spec], config.seed, trial)[score_spec]
            else:
                s = scores[score_spec]
            rescore = score_function(score, numpy_rng(seed, "rescore"))
            problem = _problem(fs, s, make_classifier, rescore)
            selections = policy.select(
                problem, list(config.budgets), rng=np.random.default_rng(seed)
            )
            for budget in todo:
                t0 = time.perf_counter()
                sel = selections[budget]
                ordered = sel.sorted()
                _, _, w = augmented_training_set(problem, ordered)
                clf, _ = _fit_selection(problem, sel)
                frozen = (clf.score(fs.test, fs.test_labels), clf.score(*test_aug))
                x, y, wt = _training_set(data, w, ordered.indices)
                net, train_acc = train_network(
                    config, x, y, wt, data.num_classes, data.train, trial, device
                )
                acc, acc_aug = _evaluate(net, data, device)
                trainings += 1
                row = {
                    "score": score_spec, "policy": policy_spec, "budget": int(budget),
                    "trial": int(trial), "accuracy": acc, "accuracy_augmented_test": acc_aug,
                    "frozen_accuracy": frozen[0], "frozen_accuracy_augmented_test": frozen[1],
                    "train_accuracy": train_acc, "n_augmented": len(sel),
                    "n_train_rows": int(x.shape[0]), "seconds": time.perf_counter() - t0,
                    "seed": seed,
                }  # fmt: skip
                rows.append(pd.DataFrame([row], columns=E2E_COLUMNS))
                results = pd.concat(rows, ignore_index=True)
                write_parquet(results_path, results)
                say(
                    f"{score_spec}/{policy_spec} trial {trial} budget {budget}: clean {acc:.4f} "
                    f"augmented {acc_aug:.4f} (frozen {frozen[1]:.4f}) ({row['seconds']:.0f} s)"
                )
    results = results.sort_values(["score", "policy", "trial", "budget"]).reset_index(drop=True)
    write_parquet(results_path, results)
    if plots and len(results):
        from leanaug.experiments.plots import make_plots

        make_plots(out)
    return {
        "results": results,
        "baselines": read_json(base_path),
        "trainings": trainings,
        "seconds": time.perf_counter() - start,
        "out": out,
    }


def _baselines(
    per_trial: dict[str, list[dict[str, float]]], frozen: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Means over trials (what plots and tables use) plus every trial's values, and the
    frozen-feature logistic regression's baselines under ``frozen``."""
    out: dict[str, Any] = {"trials": per_trial, "frozen": frozen}
    for key, rows in per_trial.items():
        if not rows:
            continue
        out[key] = {
            m: float(np.mean([r[m] for r in rows]))
            for m in ("accuracy", "accuracy_augmented_test", "n_train_rows")
        }
        out[key]["std_accuracy_augmented_test"] = (
            float(np.std([r["accuracy_augmented_test"] for r in rows], ddof=1))
            if len(rows) > 1
            else 0.0
        )
        out[key]["std_accuracy"] = (
            float(np.std([r["accuracy"] for r in rows], ddof=1)) if len(rows) > 1 else 0.0
        )
    return out


__all__ = [
    "E2E_COLUMNS",
    "EndToEndConfig",
    "load_end_to_end_config",
    "run_end_to_end",
    "split_pair",
    "train_network",
]
