"""Expert trajectories for trajectory matching (MTT, Cazenavette et al. 2022).

``train_experts`` trains ``experts`` ConvNets from different initialisations with plain
SGD (lr 0.01, momentum 0, no weight decay, batch 256, cross-entropy, DSA with fresh
parameters for every batch) and records the flat parameter vector after initialisation
and after every epoch.

Files (``DIR``)::

    config.json                  what produced the trajectories (see ``expert_config``)
    preprocess.json/.safetensors the fitted input transform (leanaug.distill.preprocess)
    expert_000.safetensors       tensor ``trajectory`` (epochs_done + 1) x P in the
                                 folder's ``trajectory_dtype`` (config.json; float32
                                 unless ``--dtype float16``), row 0 = initialisation;
                                 with float16 also ``last`` (P float32, the exact last
                                 row, from which a resumed run continues); metadata
                                 ``test_accuracy`` (JSON list, one per finished epoch),
                                 ``train_loss``, ``dtype``
    expert_001.safetensors ...

The loaders return float32 tensors whatever the stored dtype. float16 halves the files
(the rows are rounded to float16, relative error <= 2**-11; matching uses them as
float32); a float16 run resumes bit-exactly from ``last``. :func:`compact_experts`
(``leanaug distill compact-experts``) copies a folder keeping the first K epochs in
float16: small enough to keep a benchmark's experts in a repository.

Each expert file is rewritten atomically after every epoch. Every random choice is
seeded from ``(seed, expert index, epoch)`` through :mod:`leanaug.seeding`, and SGD
without momentum keeps no state beyond the parameters, so a killed run started again with
the same arguments resumes at its last finished epoch and produces exactly the same files
as an uninterrupted run (bit for bit on CPU; on CUDA up to the GPU kernels' own
nondeterminism). Asking for more experts or epochs later extends the same trajectories.

``executor="ray"`` (``leanaug distill experts --executor ray``) trains one Ray task per
unfinished expert (:func:`run_expert_task`, a GPU each when the cluster has GPUs); a task
whose worker dies is retried and resumes from its own file, and the driver skips experts
that are already finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from leanaug.data.base import ImageDataset
from leanaug.device import resolve_device
from leanaug.distill.dsa import DEFAULT_STRATEGY, DSA
from leanaug.distill.networks import NETWORKS, FlatModel, literature_first_padding
from leanaug.distill.preprocess import CONFIG_NAME as PREPROCESS_CONFIG
from leanaug.distill.preprocess import TENSORS_NAME as PREPROCESS_TENSORS
from leanaug.distill.preprocess import Preprocessor
from leanaug.distill.training import accuracy, train_epoch, training_forward
from leanaug.errors import DataError, LeanaugError
from leanaug.executors import Executor, LocalExecutor, make_executor
from leanaug.progress import Progress, note
from leanaug.results import output_dir, read_json, write_json, write_with
from leanaug.seeding import derive_seed, torch_generator

FORMAT = "leanaug-experts/1"
FILE_FORMAT = "leanaug-expert/1"
CONFIG_NAME = "config.json"
_EXPERT_RE = re.compile(r"^expert_(\d{3,})\.safetensors$")
# Keys of config.json that may differ when a run is resumed or extended.
_EXTENSIBLE_KEYS = ("experts", "epochs")
#: Storage dtypes of the trajectories (``--dtype``); the loaders always return float32.
TRAJECTORY_DTYPES = {"float32": torch.float32, "float16": torch.float16}


@dataclass
class ExpertTrajectory:
    """One expert: ``trajectory`` (epochs_done + 1) x P, row 0 the initialisation."""

    trajectory: Tensor
    test_accuracy: list[float]
    config: dict[str, Any]
    train_loss: list[float] = field(default_factory=list)
    path: Path | None = None
    #: the exact float32 last row where ``trajectory`` is stored rounded (float16 files)
    last: Tensor | None = None

    @property
    def epochs_done(self) -> int:
        return self.trajectory.shape[0] - 1

    @property
    def num_parameters(self) -> int:
        return self.trajectory.shape[1]


def expert_path(directory: str | os.PathLike[str], index: int) -> Path:
    return Path(directory) / f"expert_{index:03d}.safetensors"


def check_dtype(dtype: str) -> str:
    """``dtype`` if it is a storage dtype of trajectories, else a one-line error."""
    if dtype not in TRAJECTORY_DTYPES:
        raise LeanaugError(
            f"trajectory dtype {dtype!r} is not one of {', '.join(TRAJECTORY_DTYPES)}"
        )
    return dtype


def trajectory_dtype(config: dict[str, Any]) -> str:
    """The storage dtype of a folder's trajectories (float32 for folders written before)."""
    return str(config.get("trajectory_dtype", "float32"))


def check_folder_dtype(out_dir: str | os.PathLike[str], dtype: str) -> None:
    """A one-line error when the experts folder ``out_dir`` stores another dtype than ``dtype``."""
    check_dtype(dtype)
    if not (Path(out_dir) / CONFIG_NAME).is_file():
        return
    old = trajectory_dtype(load_config(out_dir))
    if old != dtype:
        raise LeanaugError(
            f"{out_dir} stores trajectories as {old} (config.json), not {dtype}: "
            f"resume with --dtype {old} or use another --out"
        )


def build_network(network_config: dict[str, Any]) -> nn.Module:
    """A network from the ``network`` entry of config.json (``name`` + constructor kwargs)."""
    cfg = dict(network_config)
    name = cfg.pop("name", "convnet")
    if "image_size" in cfg:
        cfg["image_size"] = tuple(cfg["image_size"])
    return NETWORKS.get(name)(**cfg)


def dataset_fingerprint(dataset: ImageDataset) -> str:
    """sha256 of the training images and labels: detects a different data set or subset."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(dataset.train_images).tobytes())
    h.update(np.ascontiguousarray(dataset.train_labels).tobytes())
    return h.hexdigest()


def expert_config(
    dataset: ImageDataset,
    *,
    dataset_spec: dict[str, Any] | None = None,
    experts: int,
    epochs: int,
    width: int = 128,
    depth: int = 3,
    norm: str = "instancenorm",
    first_padding: int | None = None,
    lr: float = 0.01,
    batch_size: int = 256,
    zca: bool = False,
    zca_eps: float = 0.1,
    dsa_strategy: str = DEFAULT_STRATEGY,
    seed: int = 0,
    dtype: str = "float32",
) -> dict[str, Any]:
    """The config.json of an expert run (also what a resumed run is checked against).

    ``dataset_spec`` holds the arguments that reload the data set with
    ``leanaug.data.load_dataset`` (``name`` and optionally ``n_train``, ``classes``,
    ``subset``, ``seed``, ``data_dir``); ``data_dir`` is informational and not compared.
    """
    c, h, w = dataset.image_shape
    if first_padding is None:  # the literature's: 3 for MNIST-like 1 x 28 x 28, else 1
        first_padding = literature_first_padding(c, (h, w))
    spec = {"name": dataset.name, **(dataset_spec or {})}
    dsa = DSA(dsa_strategy) if dsa_strategy else None
    return {
        "format": FORMAT,
        "dataset": {
            **spec,
            "num_classes": dataset.num_classes,
            "image_shape": [c, h, w],
            "n_train_images": int(dataset.train_images.shape[0]),
            "train_sha256": dataset_fingerprint(dataset),
        },
        "network": {
            "name": "convnet",
            "in_channels": c,
            "num_classes": dataset.num_classes,
            "image_size": [h, w],
            "width": width,
            "depth": depth,
            "norm": norm,
            "first_padding": first_padding,
        },
        "preprocessing": {"zca": zca, "zca_eps": zca_eps},
        "training": {
            "optimizer": "sgd",
            "lr": lr,
            "momentum": 0.0,
            "weight_decay": 0.0,
            "batch_size": batch_size,
            "loss": "cross_entropy",
            "dsa": dsa.config() if dsa is not None else None,
        },
        "seed": seed,
        "trajectory_dtype": check_dtype(dtype),
        "experts": experts,
        "epochs": epochs,
    }


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    # "compacted" (compact_experts) records the source; a resume checks each file's ``last``
    out = {k: v for k, v in cfg.items() if k not in (*_EXTENSIBLE_KEYS, "compacted")}
    out["trajectory_dtype"] = trajectory_dtype(cfg)
    if isinstance(out.get("network"), dict) and "first_padding" not in out["network"]:
        out["network"] = {**out["network"], "first_padding": 1}  # written before the option
    out["dataset"] = {k: v for k, v in cfg.get("dataset", {}).items() if k != "data_dir"}
    return json.loads(json.dumps(out))  # tuples -> lists, as after a JSON round trip


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new)):
            out += _differences(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} there, {new!r} now"]


def load_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"experts directory {directory} does not exist")
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise DataError(f"{directory} holds no {CONFIG_NAME}: not an experts directory")
    try:
        cfg = read_json(path)
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable JSON file ({exc})") from exc
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise DataError(
            f"{path}: format {cfg.get('format') if isinstance(cfg, dict) else None!r}, expected {FORMAT!r}"
        )
    return cfg


def load_dataset_for(
    config: dict[str, Any], data_dir: str | os.PathLike[str] | None = None
) -> ImageDataset:
    """Reload the data set the experts of ``config`` were trained on (and check it is the same).

    ``data_dir`` overrides the folder recorded in config.json. A training set whose
    fingerprint differs from the recorded one raises :class:`DataError`.
    """
    from leanaug.data import load_dataset

    spec = dict(config["dataset"])
    kwargs = {
        k: spec[k] for k in ("classes", "n_train", "subset", "seed") if spec.get(k) is not None
    }
    folder = data_dir if data_dir is not None else spec.get("data_dir")
    dataset = load_dataset(spec["name"], data_dir=folder, **kwargs)
    if dataset_fingerprint(dataset) != spec.get("train_sha256"):
        raise DataError(
            f"data set {spec['name']!r} (from {folder or 'the default data folder'}) is not the one the "
            "experts were trained on (training images differ from config.json's train_sha256)"
        )
    return dataset


def load_preprocessor(directory: str | os.PathLike[str]) -> Preprocessor:
    """The input transform the experts in ``directory`` were trained with."""
    return Preprocessor.load(directory)


def load_expert(
    path: str | os.PathLike[str], config: dict[str, Any] | None = None
) -> ExpertTrajectory:
    """Read one ``expert_NNN.safetensors`` (config from ``config.json`` beside it)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"expert file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            trajectory = f.get_tensor("trajectory").to(torch.float32)
            last = f.get_tensor("last").to(torch.float32) if "last" in f.keys() else None  # noqa: SIM118
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for bad files
        raise DataError(f"{path}: not a readable expert file ({exc})") from exc
    if meta.get("format") != FILE_FORMAT:
        raise DataError(f"{path}: format {meta.get('format')!r}, expected {FILE_FORMAT!r}")
    acc = json.loads(meta.get("test_accuracy", "[]"))
    loss = json.loads(meta.get("train_loss", "[]"))
    if trajectory.ndim != 2 or trajectory.shape[0] != len(acc) + 1:
        raise DataError(
            f"{path}: trajectory {tuple(trajectory.shape)} does not match {len(acc)} test accuracies"
        )
    if config is None:
        config = load_config(path.parent)
    if last is not None and last.shape != trajectory.shape[1:]:
        raise DataError(f"{path}: last row {tuple(last.shape)} does not match the trajectory")
    return ExpertTrajectory(
        trajectory, [float(a) for a in acc], config, [float(v) for v in loss], path, last
    )


def load_experts(directory: str | os.PathLike[str]) -> list[ExpertTrajectory]:
    """All experts of ``directory`` in index order (a clear error if there are none)."""
    config = load_config(directory)
    files = sorted(
        (int(m.group(1)), p) for p in Path(directory).iterdir() if (m := _EXPERT_RE.match(p.name))
    )
    if not files:
        raise DataError(f"{directory} holds no expert files (expert_000.safetensors, ...)")
    out = [load_expert(p, config) for _, p in files]
    sizes = {e.num_parameters for e in out}
    if len(sizes) != 1:
        raise DataError(f"{directory}: experts have different parameter counts {sorted(sizes)}")
    return out


_KEEP_LAST: Any = object()  # _save_expert's default: the exact last row is rows[-1]


def _save_expert(
    path: Path,
    rows: list[Tensor],
    test_accuracy: list[float],
    train_loss: list[float],
    index: int,
    dtype: str = "float32",
    last: Tensor | None = _KEEP_LAST,
) -> None:
    """Write one expert file; a non-float32 ``dtype`` adds ``last`` (float32) unless it is None."""
    stored = TRAJECTORY_DTYPES[check_dtype(dtype)]
    tensors = {"trajectory": torch.stack(rows).to(stored).contiguous()}
    if stored != torch.float32:
        last = rows[-1] if last is _KEEP_LAST else last
        if last is not None:
            tensors["last"] = last.to(torch.float32).contiguous().clone()
    meta = {
        "format": FILE_FORMAT,
        "expert": str(index),
        "epochs_done": str(len(test_accuracy)),
        "test_accuracy": json.dumps(test_accuracy),
        "train_loss": json.dumps(train_loss),
        "dtype": dtype,
    }
    write_with(path, lambda p: save_file(tensors, str(p), metadata=meta))


def _prepare_directory(
    out_dir: Path, config: dict[str, Any], dataset: ImageDataset
) -> Preprocessor:
    """Check an existing run against ``config``; write config + preprocessing for a new one."""
    if out_dir.is_dir():  # temp files a killed run left behind (results.write_with names)
        for stale in out_dir.glob(".expert_*.safetensors"):
            stale.unlink(missing_ok=True)
    cfg_path = out_dir / CONFIG_NAME
    if cfg_path.exists():
        old = load_config(out_dir)
        check_folder_dtype(out_dir, trajectory_dtype(config))
        diffs = _differences(_comparable(old), _comparable(config))
        if diffs:
            raise LeanaugError(
                f"{out_dir} holds experts trained with other settings ({'; '.join(diffs)}); "
                "use another --out or the same settings"
            )
        # a resumed run may ask for more experts / epochs (extends) but never forgets any
        config = {
            **config,
            **{k: max(int(old.get(k, 0)), int(config[k])) for k in _EXTENSIBLE_KEYS},
        }
    elif out_dir.is_dir() and any(_EXPERT_RE.match(p.name) for p in out_dir.iterdir()):
        raise LeanaugError(
            f"{out_dir} holds expert files but no {CONFIG_NAME}; refusing to mix runs"
        )
    if (out_dir / PREPROCESS_CONFIG).exists():
        pre = Preprocessor.load(out_dir)
        if pre.config() != config["preprocessing"]:
            raise LeanaugError(
                f"{out_dir}: saved preprocessing {pre.config()} differs from {config['preprocessing']}"
            )
    else:
        pre = Preprocessor(**config["preprocessing"]).fit(dataset.train_images)
        pre.save(out_dir)
    write_json(cfg_path, config)
    return pre


def train_experts(
    dataset: ImageDataset,
    out_dir: str | os.PathLike[str],
    *,
    experts: int,
    epochs: int,
    width: int = 128,
    depth: int = 3,
    norm: str = "instancenorm",
    first_padding: int | None = None,
    lr: float = 0.01,
    batch_size: int = 256,
    zca: bool = False,
    dsa_strategy: str = DEFAULT_STRATEGY,
    seed: int = 0,
    device: str | torch.device = "auto",
    dataset_spec: dict[str, Any] | None = None,
    progress: bool = True,
    executor: str | Executor | None = None,
    ray_address: str | None = None,
    compile: bool = False,
    dtype: str = "float32",
) -> list[ExpertTrajectory]:
    """Train (or resume / extend) ``experts`` expert trajectories of ``epochs`` epochs into ``out_dir``.

    ``compile=True`` trains each expert's network through ``torch.compile``
    (:func:`leanaug.distill.training.training_forward`): faster on a CPU once compiled,
    equal to float32 rounding; not part of the config, so a run may be resumed either way.

    ``dtype`` (``float32``, ``float16``): how the trajectories are stored (recorded in
    config.json; a resume with another dtype is refused). Training is float32 either way,
    and a float16 run resumes from the float32 ``last`` row, bit for bit.

    ``executor``: ``None`` / ``"local"`` trains the experts one after another in this
    process; ``"ray"`` (on ``ray_address``, else a local Ray instance) or an
    :class:`~leanaug.executors.Executor` runs one task per unfinished expert, see
    :func:`run_expert_task`. The files are the same either way.
    """
    if experts < 1 or epochs < 1:
        raise LeanaugError(
            f"need at least 1 expert and 1 epoch, got experts={experts} epochs={epochs}"
        )
    if batch_size < 1 or lr <= 0:
        raise LeanaugError(f"need batch_size >= 1 and lr > 0, got batch_size={batch_size} lr={lr}")
    # An executor by name is made here, so a bad name or a missing Ray fails before any work.
    owned = not isinstance(executor, Executor)
    ex = make_executor(executor, n_jobs=-1, address=ray_address) if owned else executor
    remote = not isinstance(ex, LocalExecutor)  # local: the loop below, in this process
    if remote:  # the workers resolve --device on their own machines; data ships from CPU
        dev = torch.device("cpu")
    else:
        dev = device if isinstance(device, torch.device) else resolve_device(device)
    out = Path(out_dir)
    config = expert_config(
        dataset,
        dataset_spec=dataset_spec,
        experts=experts,
        epochs=epochs,
        width=width,
        depth=depth,
        norm=norm,
        first_padding=first_padding,
        lr=lr,
        batch_size=batch_size,
        zca=zca,
        dsa_strategy=dsa_strategy,
        seed=seed,
        dtype=dtype,
    )
    output_dir(out)  # a file, a file above it, not writable: one line each
    pre = _prepare_directory(out, config, dataset)
    config = load_config(out)  # exactly what later readers see

    train_x = pre.transform(dataset.train_images, device=dev)
    train_y = torch.as_tensor(dataset.train_labels).to(dev)
    test_x = pre.transform(dataset.test_images, device=dev)
    test_y = torch.as_tensor(dataset.test_labels).to(dev)
    dsa = DSA(dsa_strategy) if dsa_strategy else None
    if remote:
        job = ExpertJob(
            config=config,
            out_dir=str(out.resolve()),
            train_x=train_x,
            train_y=train_y,
            test_x=test_x,
            test_y=test_y,
            lr=lr,
            batch_size=batch_size,
            dsa_strategy=dsa_strategy,
            device=str(device),
            experts=experts,
            compile=compile,
        )
        try:
            return _train_experts_on(ex, job, out, epochs, seed, progress)
        finally:
            if owned:
                ex.close()

    results: list[ExpertTrajectory] = []
    with Progress(disable=not progress) as bar:
        task = bar.add_task("training experts", total=experts * epochs)
        for i in range(experts):
            results.append(
                _train_expert(
                    i,
                    config,
                    out,
                    (train_x, train_y, test_x, test_y),
                    dsa,
                    epochs=epochs,
                    lr=lr,
                    batch_size=batch_size,
                    seed=seed,
                    dev=dev,
                    bar=bar,
                    task=task,
                    experts=experts,
                    compile=compile,
                )
            )
    return results


def _train_expert(
    i: int,
    config: dict[str, Any],
    out: Path,
    data: tuple[Tensor, Tensor, Tensor, Tensor],
    dsa: DSA | None,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    dev: torch.device,
    bar: Any,
    task: Any,
    experts: int,
    compile: bool = False,
) -> ExpertTrajectory:
    """Train (or resume) expert ``i`` up to ``epochs`` epochs, rewriting its file after each."""
    train_x, train_y, test_x, test_y = data
    path = expert_path(out, i)
    dtype = trajectory_dtype(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "expert", i, "init"))
        module = build_network(config["network"])  # built on CPU: same init on any device
    flat = FlatModel(module)
    if path.exists():
        prev = load_expert(path, config)
        if prev.num_parameters != flat.size:
            raise DataError(
                f"{path}: {prev.num_parameters} parameters, the network has {flat.size}"
            )
        rows = list(prev.trajectory.unbind(0))
        test_acc, train_loss = prev.test_accuracy, prev.train_loss
        if prev.last is not None:  # float16 rows: continue from the exact parameters
            rows[-1] = prev.last
        elif dtype != "float32" and prev.epochs_done < epochs:
            raise LeanaugError(
                f"{path}: its last epoch is stored only as {dtype} (a compacted expert), so "
                "training cannot continue from its exact parameters; train into another --out"
            )
        flat.load_into_module(rows[-1])
    else:
        rows, test_acc, train_loss = [flat.flat_parameters().clone()], [], []
    module.to(dev)
    forward = training_forward(module, compile)
    optimizer = torch.optim.SGD(module.parameters(), lr=lr, momentum=0.0, weight_decay=0.0)
    done = len(rows) - 1
    if done:
        state = "finished" if done >= epochs else f"resuming from epoch {done} of {epochs}"
        note(f"{path}: {state}", enabled=bar.enabled)
    bar.advance(task, min(done, epochs))
    for epoch in range(done, epochs):
        bar.update(
            task,
            description=f"training experts | expert {i + 1}/{experts} epoch {epoch + 1}/{epochs}",
        )
        gen = torch_generator(seed, "expert", i, "epoch", epoch)
        loss = train_epoch(
            module,
            optimizer,
            train_x,
            train_y,
            batch_size=batch_size,
            generator=gen,
            dsa=dsa,
            forward=forward,
        )
        if not np.isfinite(loss):
            raise LeanaugError(
                f"expert {i} epoch {epoch + 1}: the training loss is {loss} (lower --lr)"
            )
        test_acc.append(accuracy(module, test_x, test_y))
        train_loss.append(loss)
        rows.append(flat.flat_parameters().cpu().clone())
        _save_expert(path, rows, test_acc, train_loss, i, dtype)
        bar.advance(task)
    # what load_expert would read back: the rows as stored (as float32), the exact last row
    stored = torch.stack(rows).to(TRAJECTORY_DTYPES[dtype]).to(torch.float32)
    last = rows[-1].clone() if dtype != "float32" else None
    return ExpertTrajectory(stored, list(test_acc), config, list(train_loss), path, last)


# -- one task per expert (leanaug.executors: Ray) ------------------------------------------
@dataclass(frozen=True)
class ExpertTask:
    """One expert of a run. Its identity (``seed``, ``index``) names all its randomness
    (``derive_seed(seed, "expert", index, ...)``), whichever worker runs it."""

    index: int
    seed: int
    epochs: int


@dataclass
class ExpertJob:
    """What every expert task needs, shipped once: the config and the preprocessed data (CPU)."""

    config: dict[str, Any]
    out_dir: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    lr: float
    batch_size: int
    dsa_strategy: str
    device: str
    experts: int
    #: torch threads of a task (the CPUs Ray reserves for it). CPU results depend on the
    #: thread count in the last bits: a task's files equal a local run's bit for bit when
    #: both use the same count (``torch.set_num_threads``), else to float32 rounding.
    threads: int = 1
    compile: bool = False  # torch.compile each expert's network (train_experts)


def run_expert_task(job: ExpertJob, task: ExpertTask) -> tuple[int, ExpertTrajectory]:
    """Train (or resume) one expert on this worker: ``(index, trajectory)``.

    Idempotent: the expert's own file ``expert_NNN.safetensors`` is rewritten atomically
    after every epoch, and a re-run (a retried task after its worker was killed) resumes
    at the last finished epoch with the same seeds, so it ends with the same file.
    """
    dev = resolve_device(job.device)  # on this worker (Ray sets CUDA_VISIBLE_DEVICES)
    data = tuple(t.to(dev) for t in (job.train_x, job.train_y, job.test_x, job.test_y))
    dsa = DSA(job.dsa_strategy) if job.dsa_strategy else None
    bar = Progress(disable=True)  # the driver shows progress by finished experts
    threads = torch.get_num_threads()
    torch.set_num_threads(job.threads)
    try:
        result = _train_expert(
            task.index,
            job.config,
            Path(job.out_dir),
            data,  # type: ignore[arg-type]
            dsa,
            epochs=task.epochs,
            lr=job.lr,
            batch_size=job.batch_size,
            seed=task.seed,
            dev=dev,
            bar=bar,
            task=bar.add_task("expert", total=task.epochs),
            experts=job.experts,
            compile=job.compile,
        )
    finally:
        torch.set_num_threads(threads)
    return task.index, result


def _train_experts_on(
    ex: Executor,
    job: ExpertJob,
    out: Path,
    epochs: int,
    seed: int,
    progress: bool,
) -> list[ExpertTrajectory]:
    """One :func:`run_expert_task` per unfinished expert on ``executor``; finished ones are read."""
    config = job.config
    finished: dict[int, ExpertTrajectory] = {}
    todo = []
    for i in range(job.experts):
        path = expert_path(out, i)
        if path.exists():
            prev = load_expert(path, config)
            if prev.epochs_done >= epochs:
                finished[i] = prev
                continue
        todo.append(ExpertTask(i, seed, epochs))
    description = f"experts ({ex.describe()})" if progress else None
    use_gpu = job.device != "cpu"
    for i, result in ex.map(
        run_expert_task, todo, shared=job, progress=description, use_gpu=use_gpu
    ):
        path = expert_path(out, i)
        # Workers on other machines without a shared file system wrote their own copy;
        # the driver's file is then written from the returned trajectory.
        if not path.exists() or load_expert(path, config).epochs_done < result.epochs_done:
            rows = list(result.trajectory.unbind(0))
            dtype = trajectory_dtype(config)
            last = result.last if dtype != "float32" else _KEEP_LAST
            _save_expert(path, rows, result.test_accuracy, result.train_loss, i, dtype, last)
        result.path = path
        finished[i] = result
    for stale in out.glob(".expert_*.safetensors"):  # temp files of killed attempts
        stale.unlink(missing_ok=True)
    return [finished[i] for i in sorted(finished)]


# -- compact copies (a benchmark's experts kept in a repository) --------------------------
def _folder_bytes(directory: Path) -> int:
    names = {CONFIG_NAME, PREPROCESS_CONFIG, PREPROCESS_TENSORS}
    return sum(
        p.stat().st_size
        for p in directory.iterdir()
        if p.is_file() and (p.name in names or _EXPERT_RE.match(p.name))
    )


def compact_experts(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    dtype: str = "float16",
    epochs: int | None = None,
) -> dict[str, Any]:
    """Copy the experts folder ``src`` into ``dst`` keeping rows 0..``epochs`` in ``dtype``.

    ``epochs`` (K, default: the shortest expert's) need only be what matching uses,
    ``max_start_epoch - 1 + expert_epochs``. config.json (``epochs`` = K,
    ``trajectory_dtype``, ``compacted``) and the preprocessing are copied, so ``dst`` is an
    experts folder for ``distill images``. Where the exact float32 row K is known (a float32
    source, or a float16 one cut at its end) it is kept as ``last``, so ``distill experts``
    can extend ``dst``; otherwise such a resume is refused. Returns the folders' sizes in
    bytes (``bytes_before``, ``bytes_after``), ``experts``, ``epochs`` and ``dtype``.
    """
    check_dtype(dtype)
    src, dst = Path(src), Path(dst)
    config = load_config(src)
    experts = load_experts(src)
    shortest = min(e.epochs_done for e in experts)
    k = shortest if epochs is None else int(epochs)
    if not 1 <= k <= shortest:
        raise LeanaugError(
            f"--epochs {k}: the experts in {src} have {shortest} epochs (keep 1 to {shortest})"
        )
    output_dir(dst)
    if dst.resolve() == src.resolve():
        raise LeanaugError(f"{dst} is the source folder; give another --out")
    if (dst / CONFIG_NAME).exists() or any(_EXPERT_RE.match(p.name) for p in dst.iterdir()):
        raise LeanaugError(f"{dst} already holds experts; give an empty or new --out")
    exact_rows = trajectory_dtype(config) == "float32"
    for i, e in enumerate(experts):
        rows = list(e.trajectory[: k + 1].unbind(0))
        last = e.trajectory[k] if exact_rows else (e.last if k == e.epochs_done else None)
        acc, loss = e.test_accuracy[:k], e.train_loss[:k]
        _save_expert(expert_path(dst, i), rows, acc, loss, i, dtype, last)
    for name in (PREPROCESS_CONFIG, PREPROCESS_TENSORS):
        write_with(dst / name, lambda p, name=name: shutil.copyfile(src / name, p))
    compacted = {"from": str(src.resolve()), "epochs": k, "dtype": dtype}
    write_json(
        dst / CONFIG_NAME,
        {**config, "trajectory_dtype": dtype, "epochs": k, "compacted": compacted},
    )
    return {
        "bytes_before": _folder_bytes(src),
        "bytes_after": _folder_bytes(dst),
        "experts": len(experts),
        "epochs": k,
        "dtype": dtype,
    }
