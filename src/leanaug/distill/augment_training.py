"""Augmentation by distillation: learn ``phi`` by trajectory matching, then train with it.

**Learning phi** (:class:`AugmentDistillation`, ``leanaug distill augment``). A fixed,
seeded subset (a fraction ``subset`` of the training set, class-stratified, nested: the
1 % subset lies inside the 10 % one, which lies inside the 50 % one) stands in for the
data. Each iteration

1. draws an expert ``e`` and a start epoch ``t < T+`` (``max_start_epoch``);
2. plans ``N`` (``syn_steps``) student minibatches of ``batch`` subset images
   (:func:`leanaug.distill.matching.plan_student`; a new permutation when the subset runs
   out) and lays them out as ``N * batch`` *slots*;
3. computes ``z = phi(x_slot, noise_slot)`` with a fresh noise draw for every slot (so an
   image used twice in one iteration gets two draws) and keeps the graph;
4. calls :func:`leanaug.distill.matching.match_gradients` on ``z.detach()`` (DSA after phi
   when ``dsa`` is on, the student's ``N`` steps of size ``alpha`` from ``theta*_t``, the
   MTT loss against ``theta*_{t+M}``) and back-propagates ``dL/dz`` into phi's weights
   with ``z.backward(dL/dz)`` (exact for ``memory`` ``"unrolled"`` and ``"constant"``);
   With ``objective`` other than ``"matching"`` (:mod:`leanaug.distill.objectives`, e.g.
   ``"matching-unbiased"``), steps 3-4 run for ``K`` independent draws of phi's noise and
   the DSA parameters on the same batch plan (draw 0 is the one above, draw ``k`` is seeded
   from ``(seed, "iteration", i, "draw", k)``), the objective combines the ``K`` student
   endpoints and ``dL/dz_k`` flows back through every draw;
5. updates phi with Adam (or SGD momentum 0.5) and ``alpha = exp(log_alpha)`` with SGD
   momentum 0.5 on ``log_alpha`` (learning rate ``lr_lr``, gradient ``dL/dalpha / alpha``:
   MTT's ``-lr_lr * dL/dalpha`` at any ``alpha``, at most a factor 2 per step; ``alpha``
   stays positive; see :class:`leanaug.distill.matching.TrajectoryMatching`). ``alpha_mode="raw"``
   learns ``alpha`` itself, as the reference and the course project did (it can go
   negative; for the failure study only).

Each iteration also logs ``loss_identity``: the same objective on the same plan (and DSA
draws) with phi the identity (the real subset images), so every row says whether phi beats
plain data.

Files in ``out``: ``augment_config.json`` (settings; a resumed run must match),
``checkpoint.safetensors`` (phi, optimizer states, log_alpha, iteration),
``log.parquet``, ``pictures/iter_NNNNNN.png`` (the same inputs ``x`` in the first
column, several draws of ``phi(x)`` beside them), and at the end ``phi.safetensors``
(:func:`leanaug.distill.augnet.save_phi`: weights + config + alpha + subset) and
``curves.png``. Every random draw is seeded from ``(seed, "iteration", i)``, so a killed
run resumed from its checkpoint gives the same phi as an uninterrupted one.

**Training with phi** (:func:`train_on_augmented`): fresh ConvNets trained for a fixed
number of SGD steps on a training set with a per-batch transform hook
``transform(x, y, index, generator) -> x'`` (:class:`PhiTransform`: frozen phi with fresh
noise; :class:`DSATransform`; :class:`KorniaAutoTransform`: TrivialAugment / RandAugment;
:class:`Compose`).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from leanaug.device import resolve_device
from leanaug.distill.augnet import PHI_FAMILIES, AugNet, build_phi, save_phi
from leanaug.distill.matching import (
    MEMORY_MODES,
    MatchResult,
    StudentPlan,
    check_memory_options,
    expert_segment,
    match_gradients,
    plan_student,
    step_log_alpha_,
    unroll_student,
)
from leanaug.distill.networks import FlatModel
from leanaug.distill.objectives import (
    DEFAULT_OBJECTIVE,
    Objective,
    ObjectiveResult,
    build_objective,
    draw_generator,
    match_objective,
    objective_spec,
    redraw_plan,
)
from leanaug.distill.synthetic import read_checkpoint_file
from leanaug.errors import DataError, LeanaugError
from leanaug.progress import note
from leanaug.results import (
    output_dir,
    read_json,
    read_parquet,
    write_json,
    write_parquet,
    write_with,
)
from leanaug.seeding import derive_seed, numpy_rng, torch_generator

SETTINGS_NAME = "augment_config.json"
CHECKPOINT_NAME = "checkpoint.safetensors"
LOG_NAME = "log.parquet"
PHI_NAME = "phi.safetensors"
CHECKPOINT_FORMAT = "leanaug-augment-checkpoint/1"
OPTIMIZERS = ("adam", "sgd")
ALPHA_MODES = ("log", "raw")
_RESUMABLE_CHANGES = ("iterations", "checkpoint_every", "picture_every", "device", "format")
LOG_COLUMNS = (
    "iteration",
    "expert",
    "start_epoch",
    "loss",
    "loss_identity",
    "alpha",
    "alpha_grad",
    "grad_norm",
    "phi_change",
    "noise_effect",
    "seconds",
)


class AugmentDiverged(LeanaugError):
    """The matching loss, a gradient, alpha or phi blew up; the last checkpoint is kept."""


# --------------------------------------------------------------------------- subsets
def subset_indices(labels: np.ndarray | Tensor, fraction: float, seed: int = 0) -> np.ndarray:
    """A class-stratified random subset of ``fraction`` of the images (sorted indices).

    Each class keeps ``max(1, round(fraction * n_c))`` images: the first ones of a per-class
    permutation seeded by ``(seed, "subset", class)``, so subsets of one seed are nested
    (1 % inside 10 % inside 50 %) and ``fraction=1`` is every image.
    """
    fraction = float(fraction)
    if not (0.0 < fraction <= 1.0) or not math.isfinite(fraction):
        raise LeanaugError(f"--subset must be a fraction in (0, 1], got {fraction}")
    y = np.asarray(labels)
    out = []
    for c in np.unique(y):
        pool = np.flatnonzero(y == c)
        perm = numpy_rng(seed, "subset", int(c)).permutation(pool)
        out.append(perm[: max(1, int(round(fraction * len(pool))))])
    return np.sort(np.concatenate(out))


# --------------------------------------------------------------------------- one step
@dataclass
class SlotPlan:
    """One iteration's ``N * batch`` slots: which subset image fills each slot, and the
    student plan over the slots (step ``i`` uses slots ``i*batch .. (i+1)*batch - 1``)."""

    images: Tensor  # subset positions, one per slot
    plan: StudentPlan


def plan_slots(n_subset: int, steps: int, batch: int, generator: torch.Generator) -> SlotPlan:
    inner = plan_student(n_subset, steps, batch, generator)
    slots = torch.cat(inner.batches)
    batches, start = [], 0
    for b in inner.batches:
        batches.append(torch.arange(start, start + len(b)))
        start += len(b)
    return SlotPlan(slots, StudentPlan(batches=batches, aug_seeds=list(inner.aug_seeds)))


def phi_match_gradients(
    phi: AugNet,
    model: FlatModel,
    theta_start: Tensor,
    theta_target: Tensor,
    x: Tensor,
    labels: Tensor,
    index: Tensor | None,
    noise: Tensor,
    alpha: Tensor,
    plan: StudentPlan,
    augment: Any = None,
    memory: str = "unrolled",
    backward: bool = True,
    theta_store: str = "device",
) -> tuple[MatchResult, Tensor]:
    """MTT loss of a student trained on ``phi(x, noise)``; accumulates ``dL/dphi`` into
    ``phi``'s ``.grad`` when ``backward``. Returns the match result and ``phi(x)`` (detached).

    ``x``, ``labels``, ``index``, ``noise`` are per slot; ``plan`` indexes the slots.
    """
    if memory not in ("unrolled", "constant"):
        raise LeanaugError(
            f"phi needs the exact image gradient: memory 'unrolled' or 'constant', got {memory!r}"
        )
    z = phi(x, noise, labels=labels, index=index)
    res = match_gradients(
        model,
        theta_start,
        theta_target,
        z.detach(),
        labels,
        alpha,
        plan,
        augment,
        memory,
        theta_store,
    )
    if backward:
        z.backward(res.grad_images.to(z.dtype))
    return res, z.detach()


def phi_match_objective(
    phi: AugNet,
    model: FlatModel,
    theta_start: Tensor,
    theta_target: Tensor,
    x: Tensor,
    labels: Tensor,
    index: Tensor | None,
    noises: list[Tensor],
    alpha: Tensor,
    plans: list[StudentPlan],
    augment: Any = None,
    memory: str = "unrolled",
    backward: bool = True,
    theta_store: str = "device",
    objective: Objective | str = DEFAULT_OBJECTIVE,
) -> tuple[ObjectiveResult, list[Tensor]]:
    """:func:`phi_match_gradients` for an objective over ``K`` draws: draw ``k`` is
    ``phi(x, noises[k])`` trained on with ``plans[k]`` (same slots, the draw's DSA seeds).
    Accumulates ``dL/dphi`` through every draw into ``phi``'s ``.grad`` when ``backward``;
    returns the result and the ``K`` draws of ``phi(x)`` (detached). With ``"matching"``
    and one draw it is :func:`phi_match_gradients`, bit for bit."""
    if memory not in ("unrolled", "constant"):
        raise LeanaugError(
            f"phi needs the exact image gradient: memory 'unrolled' or 'constant', got {memory!r}"
        )
    zs = [phi(x, noise, labels=labels, index=index) for noise in noises]
    res = match_objective(
        objective,
        model,
        theta_start,
        theta_target,
        [z.detach() for z in zs],
        labels,
        alpha,
        plans,
        augment,
        memory,
        theta_store,
    )
    if backward:
        torch.autograd.backward(
            zs, [g.to(z.dtype) for g, z in zip(res.grad_images, zs, strict=True)]
        )
    return res, [z.detach() for z in zs]


# --------------------------------------------------------------------------- the estimator
@dataclass
class AugmentDistillation:
    """Learn an augmentation network ``phi`` by trajectory matching (see the module docstring).

    ``phi``: a family of :data:`leanaug.distill.augnet.PHI_FAMILIES`, ``phi_options`` its
    keyword options. ``subset``: fraction of the training set phi is learned on
    (``subset_seed`` picks it). ``syn_steps`` = N, ``expert_epochs`` = M,
    ``max_start_epoch`` = T+, ``batch`` = student minibatch. ``optimizer`` (adam | sgd,
    momentum 0.5) with ``lr_phi`` for phi's weights; ``lr_lr`` / ``lr_teacher`` as in
    :class:`leanaug.distill.matching.TrajectoryMatching`. ``clip_grad`` (> 0) clips phi's
    gradient norm. ``loss_limit``: a loss above it (or any non-finite value) stops the run.
    ``theta_store="host"`` (with ``memory="constant"``) keeps the unroll's stored student
    parameters in host memory on a GPU. ``objective``: ``"matching"`` (MTT's loss) or
    ``"matching-unbiased[:draws=K]"`` (the U-statistic over ``K`` draws, unbiased for the
    squared bias of the student's endpoint; :mod:`leanaug.distill.objectives`).

    Examples
    --------
    >>> est = AugmentDistillation(phi="transform", objective="matching-unbiased", iterations=50)
    >>> est.validate()
    >>> est.get_params()["objective"]
    'matching-unbiased'
    >>> # est.fit("runs/experts", "runs/phi")  # learns phi; see leanaug distill augment
    """

    phi: str = "residual"
    phi_options: dict[str, Any] = field(default_factory=dict)
    subset: float = 0.1
    subset_seed: int = 0
    iterations: int = 200
    syn_steps: int = 10
    expert_epochs: int = 1
    max_start_epoch: int = 2
    batch: int = 64
    optimizer: str = "adam"
    lr_phi: float = 1e-3
    lr_lr: float = 1e-5
    lr_teacher: float = 0.01
    alpha_mode: str = "log"
    clip_grad: float = 0.0
    dsa: bool = True
    memory: str = "unrolled"
    theta_store: str = "device"
    objective: str = DEFAULT_OBJECTIVE
    identity_loss: bool = True
    checkpoint_every: int = 10
    picture_every: int = 100
    loss_limit: float = 1e3
    seed: int = 0
    device: str = "auto"

    @classmethod
    def param_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.param_names()}

    @classmethod
    def from_config(cls, config: dict[str, Any], source: str = "config") -> AugmentDistillation:
        unknown = sorted(set(config) - set(cls.param_names()))
        if unknown:
            raise LeanaugError(
                f"{source}: unknown setting(s) {', '.join(unknown)}; valid: {', '.join(cls.param_names())}"
            )
        return cls(**config)

    def validate(self) -> None:
        PHI_FAMILIES.get(self.phi)  # unknown names list the valid ones
        if not isinstance(self.phi_options, dict):
            raise LeanaugError(f"phi_options must be a mapping, got {self.phi_options!r}")
        # unknown options or bad values: one line listing phi's options and their types
        PHI_FAMILIES.check_params(self.phi, self.phi_options, skip=4)
        subset_indices(np.zeros(1), self.subset)  # (0, 1] check with the CLI's wording
        checks = [
            (self.iterations >= 0, f"iterations must be >= 0, got {self.iterations}"),
            (self.syn_steps >= 1, f"syn_steps must be >= 1, got {self.syn_steps}"),
            (self.expert_epochs >= 1, f"expert_epochs must be >= 1, got {self.expert_epochs}"),
            (
                self.max_start_epoch >= 1,
                f"max_start_epoch must be >= 1, got {self.max_start_epoch}",
            ),
            (self.batch >= 1, f"batch must be >= 1, got {self.batch}"),
            (
                self.optimizer in OPTIMIZERS,
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}",
            ),
            (
                self.lr_phi > 0 and math.isfinite(self.lr_phi),
                f"lr_phi must be > 0, got {self.lr_phi}",
            ),
            (
                self.lr_lr >= 0 and math.isfinite(self.lr_lr),
                f"lr_lr must be >= 0, got {self.lr_lr}",
            ),
            (
                self.lr_teacher > 0 and math.isfinite(self.lr_teacher),
                f"lr_teacher must be > 0, got {self.lr_teacher}",
            ),
            (
                self.alpha_mode in ALPHA_MODES,
                f"alpha_mode must be one of {', '.join(ALPHA_MODES)}, got {self.alpha_mode!r}",
            ),
            (self.clip_grad >= 0, f"clip_grad must be >= 0, got {self.clip_grad}"),
            (
                self.memory in ("unrolled", "constant"),
                f"memory must be 'unrolled' or 'constant' for phi (not {self.memory!r}; "
                f"all modes: {', '.join(MEMORY_MODES)})",
            ),
            (self.checkpoint_every >= 1, "checkpoint_every must be >= 1"),
            (self.picture_every >= 0, "picture_every must be >= 0"),
            (self.loss_limit > 0, f"loss_limit must be > 0, got {self.loss_limit}"),
        ]
        for ok, message in checks:
            if not ok:
                raise LeanaugError(message)
        check_memory_options(self.memory, self.theta_store)
        build_objective(self.objective)  # unknown names / parameters: one line listing them

    def fit(
        self,
        experts_dir: str | os.PathLike[str],
        out_dir: str | os.PathLike[str],
        *,
        data_dir: str | os.PathLike[str] | None = None,
        progress: bool = True,
        on_iteration: Callable[[int], None] | None = None,
    ) -> AugmentDistillation:
        """Run (or resume) the training into ``out_dir``. Sets ``phi_`` (eval mode),
        ``alpha_``, ``log_``, ``subset_indices_``."""
        self.validate()
        run = _Run(self, Path(experts_dir), Path(out_dir), data_dir, progress, on_iteration)
        run.execute()
        self.phi_ = run.phi.eval()
        self.alpha_ = run.alpha()
        self.log_ = run.log_frame()
        self.subset_indices_ = run.subset
        return self


# --------------------------------------------------------------------------- state files
def _flatten_optimizer(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], Any]:
    """Optimizer state -> (tensors for safetensors, JSON skeleton)."""
    sd = opt.state_dict()
    tensors: dict[str, Tensor] = {}
    skeleton: dict[str, Any] = {"param_groups": sd["param_groups"], "state": {}}
    for pid, st in sd["state"].items():
        entry = {}
        for key, value in st.items():
            if torch.is_tensor(value):
                name = f"{prefix}/{pid}/{key}"
                tensors[name] = value.detach().cpu().contiguous()
                entry[key] = {"tensor": name}
            else:
                entry[key] = value
        skeleton["state"][str(pid)] = entry
    return tensors, skeleton


def _unflatten_optimizer(tensors: dict[str, Tensor], skeleton: Any) -> dict[str, Any]:
    state = {}
    for pid, entry in skeleton["state"].items():
        state[int(pid)] = {
            k: (tensors[v["tensor"]] if isinstance(v, dict) and "tensor" in v else v)
            for k, v in entry.items()
        }
    return {"state": state, "param_groups": skeleton["param_groups"]}


def _settings_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    # settings written before the objective was a setting were all MTT's loss
    old = {"objective": DEFAULT_OBJECTIVE, **old}
    out = []
    for key in sorted(set(old) | set(new)):
        if key in _RESUMABLE_CHANGES:
            continue
        if old.get(key) != new.get(key):
            out.append(f"{key}: {old.get(key)!r} there, {new.get(key)!r} now")
    return out


class _Run:
    """One (possibly resumed) phi training run; its state lives in ``out_dir``."""

    def __init__(self, est, experts_dir: Path, out_dir: Path, data_dir, progress, on_iteration):
        self.est = est
        self.experts_dir = experts_dir
        self.out = out_dir
        self.data_dir = data_dir
        self.progress = progress
        self.on_iteration = on_iteration
        self.device = resolve_device(est.device)
        self.rows: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ setup
    def _load(self) -> None:
        from leanaug.distill.dsa import DSA
        from leanaug.distill.experts import (
            build_network,
            load_dataset_for,
            load_experts,
            load_preprocessor,
        )

        est = self.est
        self.experts = load_experts(self.experts_dir)
        self.config = self.experts[0].config
        epochs = min(e.epochs_done for e in self.experts)
        if est.max_start_epoch - 1 + est.expert_epochs > epochs:
            raise LeanaugError(
                f"--max-start-epoch {est.max_start_epoch} with --expert-epochs {est.expert_epochs} needs "
                f"experts of at least {est.max_start_epoch - 1 + est.expert_epochs} epochs; "
                f"{self.experts_dir} has {epochs}"
            )
        self.pre = load_preprocessor(self.experts_dir)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # shapes only: students start at expert parameters
            self.module = build_network(self.config["network"]).to(self.device)
        self.model = FlatModel(self.module)
        if self.model.size != self.experts[0].num_parameters:
            raise DataError(
                f"{self.experts_dir}: experts have {self.experts[0].num_parameters} parameters, "
                f"the network of config.json has {self.model.size}"
            )
        dsa_cfg = self.config.get("training", {}).get("dsa")
        self.dsa = DSA(**dsa_cfg) if est.dsa and dsa_cfg else None
        net = self.config["network"]
        self.num_classes = int(net["num_classes"])
        ds = load_dataset_for(self.config, self.data_dir)
        self.subset = subset_indices(ds.train_labels, est.subset, est.subset_seed)
        self.x = self.pre.transform(ds.train_images[self.subset], device=self.device)
        self.y = torch.as_tensor(ds.train_labels[self.subset]).to(self.device).long()
        self.in_channels = int(net["in_channels"])
        self.image_size = tuple(int(s) for s in net["image_size"])
        self.objective = build_objective(est.objective)

    def _settings(self) -> dict[str, Any]:
        experts_cfg = {k: v for k, v in self.config.items() if k not in ("experts", "epochs")}
        experts_cfg["dataset"] = {
            k: v for k, v in experts_cfg.get("dataset", {}).items() if k != "data_dir"
        }
        return json.loads(
            json.dumps(
                {
                    **self.est.get_params(),
                    "objective": objective_spec(self.est.objective),
                    "experts": experts_cfg,
                    "num_experts": len(self.experts),
                    "subset_size": int(len(self.subset)),
                }
            )
        )

    def _build(self) -> None:
        est = self.est
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(est.seed, "phi", "init"))
            phi = build_phi(
                est.phi,
                self.in_channels,
                self.image_size,
                self.num_classes,
                num_images=len(self.subset),
                options=est.phi_options,
            )
        self.phi = phi.to(self.device).train()
        params = [p for p in self.phi.parameters() if p.requires_grad]
        if est.optimizer == "adam":
            self.opt_phi = torch.optim.Adam(params, lr=est.lr_phi)
        else:
            self.opt_phi = torch.optim.SGD(params, lr=est.lr_phi, momentum=0.5)
        if est.alpha_mode == "log":
            self.alpha_param = torch.tensor(math.log(est.lr_teacher), device=self.device)
        else:
            self.alpha_param = torch.tensor(float(est.lr_teacher), device=self.device)
        self.alpha_param.requires_grad_(True)
        self.opt_alpha = torch.optim.SGD([self.alpha_param], lr=est.lr_lr, momentum=0.5)

    def _prepare(self) -> None:
        output_dir(self.out)  # a file, a file above it, not writable: one line each
        settings = self._settings()
        settings_path = self.out / SETTINGS_NAME
        ckpt_path = self.out / CHECKPOINT_NAME
        if settings_path.exists():
            diffs = _settings_differences(read_json(settings_path), settings)
            if diffs:
                raise LeanaugError(
                    f"{self.out} holds a phi training run with other settings ({'; '.join(diffs)}); "
                    "use another --out or the same settings"
                )
        elif ckpt_path.exists():
            raise LeanaugError(f"{self.out} holds a checkpoint but no {SETTINGS_NAME}")
        write_json(settings_path, {"format": "leanaug-augment/1", **settings})
        self._build()
        self.start = 0
        self.last_checkpoint: int | None = None
        if ckpt_path.exists():
            self._restore(ckpt_path)
            note(
                f"{self.out}: resuming from the checkpoint of iteration {self.start} "
                f"(of {self.est.iterations})",
                enabled=self.progress,
            )
            log_path = self.out / LOG_NAME
            if log_path.exists():
                frame = read_parquet(log_path)
                frame = frame[frame["iteration"] <= self.start]
                self.rows = [
                    {k: (None if pd.isna(v) else v) for k, v in row.items()}
                    for row in frame.to_dict("records")
                ]

    def _checkpoint(self, iteration: int) -> None:
        self._write_log()
        tensors = {
            f"phi/{k}": v.detach().cpu().contiguous() for k, v in self.phi.state_dict().items()
        }
        tensors["alpha_param"] = self.alpha_param.detach().cpu().reshape(1)
        t1, s1 = _flatten_optimizer("opt_phi", self.opt_phi)
        t2, s2 = _flatten_optimizer("opt_alpha", self.opt_alpha)
        tensors.update(t1)
        tensors.update(t2)
        meta = {
            "format": CHECKPOINT_FORMAT,
            "iteration": str(iteration),
            "opt_phi": json.dumps(s1),
            "opt_alpha": json.dumps(s2),
        }
        write_with(self.out / CHECKPOINT_NAME, lambda p: save_file(tensors, str(p), metadata=meta))
        self.last_checkpoint = iteration

    def _restore(self, path: Path) -> None:
        meta, tensors = read_checkpoint_file(path)
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise DataError(
                f"{path}: format {meta.get('format')!r}, expected {CHECKPOINT_FORMAT!r}"
            )
        phi_sd = {k[4:]: v for k, v in tensors.items() if k.startswith("phi/")}
        self.phi.load_state_dict(phi_sd)
        with torch.no_grad():
            self.alpha_param.copy_(tensors["alpha_param"].reshape(()))
        self.opt_phi.load_state_dict(_unflatten_optimizer(tensors, json.loads(meta["opt_phi"])))
        self.opt_alpha.load_state_dict(_unflatten_optimizer(tensors, json.loads(meta["opt_alpha"])))
        self.start = int(meta["iteration"])
        self.last_checkpoint = self.start

    # ------------------------------------------------------------------ helpers
    def alpha(self) -> float:
        a = self.alpha_param.detach()
        return float(a.exp() if self.est.alpha_mode == "log" else a)

    def log_frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.rows, columns=list(LOG_COLUMNS))
        for col in LOG_COLUMNS:
            if col == "iteration":
                frame[col] = frame[col].astype("int64")
            elif col in ("expert", "start_epoch"):
                frame[col] = pd.to_numeric(frame[col]).astype("Int64")
            else:
                frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
        return frame

    def _write_log(self) -> None:
        write_parquet(self.out / LOG_NAME, self.log_frame())

    def _display_set(self) -> tuple[Tensor, Tensor, Tensor]:
        """Up to 8 subset images (one per class first), always the same ones."""
        picks: list[int] = []
        y = self.y.cpu()
        for c in range(self.num_classes):
            members = torch.nonzero(y == c).flatten()
            if len(members):
                picks.append(int(members[0]))
            if len(picks) == 8:
                break
        idx = torch.tensor(picks, dtype=torch.long)
        return self.x[idx.to(self.device)], self.y[idx.to(self.device)], idx.to(self.device)

    def _picture(self, path: Path, draws: int = 5) -> None:
        x, y, idx = self._display_set()
        gen = torch_generator(self.est.seed, "picture")
        with torch.no_grad():
            outs = [x] + [self.phi.augment(x, y, idx, generator=gen) for _ in range(draws)]
        shown = [self.pre.inverse_transform(o.float().cpu()) for o in outs]
        save_phi_picture(path, shown, [f"draw {k}" for k in range(1, draws + 1)])

    def _diverged(self, iteration: int, what: str) -> None:
        self._write_log()
        where = (
            f"the last good checkpoint (iteration {self.last_checkpoint}) is kept in {self.out / CHECKPOINT_NAME}"
            if self.last_checkpoint is not None
            else "no checkpoint was written yet"
        )
        raise AugmentDiverged(
            f"phi training stopped at iteration {iteration}: {what} (try a smaller --lr-phi, --lr-lr, "
            f"--lr-teacher or --max-start-epoch); {where}"
        )

    # ------------------------------------------------------------------ one iteration
    def _iteration(self, it: int) -> dict[str, Any]:
        est = self.est
        gen = torch_generator(est.seed, "iteration", it)
        e = int(torch.randint(len(self.experts), (1,), generator=gen))
        t = int(torch.randint(est.max_start_epoch, (1,), generator=gen))
        slots = plan_slots(len(self.subset), est.syn_steps, est.batch, gen)
        start, target = expert_segment(self.experts[e].trajectory, t, est.expert_epochs)
        start, target = start.to(self.device), target.to(self.device)
        pos = slots.images.to(self.device)
        x, y = self.x[pos], self.y[pos]
        noises, plans = [self.phi.sample_noise(x, gen)], [slots.plan]
        for k in range(1, self.objective.draws):  # more draws: same slots, own noise and DSA
            gen_k = draw_generator(est.seed, "iteration", it, draw=k)
            plans.append(redraw_plan(slots.plan, gen_k))
            noises.append(self.phi.sample_noise(x, gen_k))
        a = self.alpha_param.detach()
        alpha = a.exp() if est.alpha_mode == "log" else a.clone()
        self.opt_phi.zero_grad(set_to_none=True)
        res, zs = phi_match_objective(
            self.phi,
            self.model,
            start,
            target,
            x,
            y,
            pos,
            noises,
            alpha,
            plans,
            self.dsa,
            est.memory,
            theta_store=est.theta_store,
            objective=self.objective,
        )
        z = zs[0]
        loss = float(res.loss)
        row: dict[str, Any] = dict(
            iteration=it, expert=e, start_epoch=t, loss=loss, alpha=float(alpha)
        )
        if est.identity_loss:
            with torch.enable_grad():
                ends = [unroll_student(self.model, start, x, y, alpha, p, self.dsa) for p in plans]
            row["loss_identity"] = float(self.objective.loss(ends, start, target))
        grads = [p.grad for p in self.phi.parameters() if p.grad is not None]
        grad_norm = (
            float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
            if grads
            else 0.0
        )
        row.update(
            grad_norm=grad_norm,
            alpha_grad=float(res.grad_alpha),
            phi_change=float((z - x).pow(2).mean().sqrt()),
        )
        with torch.no_grad():  # how much the noise matters: two draws on the first 64 slots
            k = min(64, x.shape[0])
            g2 = torch_generator(est.seed, "noise-effect", it)
            d1 = self.phi.augment(x[:k], y[:k], pos[:k], generator=g2)
            d2 = self.phi.augment(x[:k], y[:k], pos[:k], generator=g2)
            row["noise_effect"] = float((d1 - d2).pow(2).mean().sqrt())
        if not math.isfinite(loss) or loss > est.loss_limit:
            self.rows.append(row)
            self._diverged(
                it,
                f"matching loss {loss:.4g} is "
                f"{'not finite' if not math.isfinite(loss) else f'above the limit {est.loss_limit:g}'}",
            )
        if not (math.isfinite(grad_norm) and math.isfinite(float(res.grad_alpha))):
            self.rows.append(row)
            self._diverged(it, "a gradient is not finite")
        if est.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(self.phi.parameters(), est.clip_grad)
        self.opt_phi.step()
        if est.alpha_mode == "log":  # MTT's step on alpha, at any alpha (see matching)
            step_log_alpha_(self.opt_alpha, self.alpha_param, res.grad_alpha)
        else:
            self.alpha_param.grad = res.grad_alpha.reshape(()).to(self.alpha_param.dtype)
            self.opt_alpha.step()
            self.alpha_param.grad = None
        new_alpha = self.alpha()
        bad_phi = any(not bool(torch.isfinite(p).all()) for p in self.phi.parameters())
        if not math.isfinite(new_alpha) or bad_phi:
            self.rows.append(row)
            self._diverged(
                it, f"after the update alpha is {new_alpha:.4g} or a phi weight is not finite"
            )
        return row

    # ------------------------------------------------------------------ the loop
    def execute(self) -> None:
        from leanaug.progress import Progress

        self._load()
        self._prepare()
        est = self.est
        if self.start == 0 and not (self.out / CHECKPOINT_NAME).exists():
            if est.picture_every > 0:
                self._picture(self.out / "pictures" / "iter_000000.png")
            self._checkpoint(0)
        with Progress(disable=not self.progress) as bar:
            task = bar.add_task(
                "learning phi", total=est.iterations, completed=min(self.start, est.iterations)
            )
            for it in range(self.start + 1, est.iterations + 1):
                tic = time.perf_counter()
                row = self._iteration(it)
                row["seconds"] = time.perf_counter() - tic
                self.rows.append(row)
                last = it == est.iterations
                if est.picture_every > 0 and (it % est.picture_every == 0 or last):
                    self._picture(self.out / "pictures" / f"iter_{it:06d}.png")
                if last or it % est.checkpoint_every == 0:
                    self._checkpoint(it)
                ident = row.get("loss_identity")
                ident_text = "" if ident is None else f" (identity {ident:.4f})"
                bar.update(
                    task,
                    advance=1,
                    description=f"learning phi | loss {row['loss']:.4f}{ident_text} "
                    f"alpha {self.alpha():.3g}",
                )
                if self.on_iteration is not None:
                    self.on_iteration(it)
        self._finish()

    def _finish(self) -> None:
        self._write_log()
        est = self.est
        save_phi(
            self.out / PHI_NAME,
            self.phi,
            metadata={
                "alpha": self.alpha(),
                "experts": str(self.experts_dir),
                "subset": est.subset,
                "subset_seed": est.subset_seed,
                "subset_size": int(len(self.subset)),
                "iterations": est.iterations,
                "settings": est.get_params(),
                "method": "augmentation by distillation (trajectory matching)",
            },
        )
        if est.picture_every > 0:
            self._picture(self.out / "phi.png")
        if len(self.rows):
            plot_log(
                self.log_frame(),
                self.out / "curves.png",
                title=f"phi={est.phi} subset={est.subset:g}",
            )


def load_checkpoint_phi(out_dir: str | os.PathLike[str]) -> tuple[AugNet, float, int]:
    """``(phi, alpha, iteration)`` of the last checkpoint in a run folder (e.g. of a run that
    stopped with :class:`AugmentDiverged`); phi in eval mode."""
    from leanaug.distill.augnet import phi_from_config

    out = Path(out_dir)
    path = out / CHECKPOINT_NAME
    if not path.is_file() or not (out / SETTINGS_NAME).is_file():
        raise DataError(f"{out}: no phi training checkpoint ({CHECKPOINT_NAME}, {SETTINGS_NAME})")
    settings = read_json(out / SETTINGS_NAME)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    phi_sd = {k[4:]: v for k, v in tensors.items() if k.startswith("phi/")}
    net = settings["experts"]["network"]
    phi = phi_from_config(
        {
            "family": settings["phi"],
            "in_channels": net["in_channels"],
            "image_size": net["image_size"],
            "num_classes": net["num_classes"],
            "num_images": settings["subset_size"],
            "options": settings["phi_options"],
        }
    )
    phi.load_state_dict(phi_sd)
    a = float(tensors["alpha_param"].reshape(()))
    alpha = math.exp(a) if settings.get("alpha_mode", "log") == "log" else a
    return phi.eval(), alpha, int(meta["iteration"])


# --------------------------------------------------------------------------- pictures
def save_phi_picture(
    path: str | os.PathLike[str], columns: list[Tensor], labels: list[str]
) -> Path:
    """Images side by side: ``columns[0]`` the inputs x (one row per image), then draws of
    phi(x). Tensors N x C x H x W in [0, 1] units (clipped)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n, c, h, w = columns[0].shape
    k = len(columns)
    grid = torch.ones(c, n * (h + 1) + 1, k * (w + 2) + 1)
    for j, col in enumerate(columns):
        col = col.detach().float().cpu().clamp(0, 1)
        for i in range(n):
            top, left = 1 + i * (h + 1), 1 + j * (w + 2) + (1 if j else 0)
            grid[:, top : top + h, left : left + w] = col[i]
    img = grid.numpy()
    img = img[0] if c == 1 else np.transpose(img, (1, 2, 0))
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * k, 0.5 + 0.9 * n))
    ax.imshow(img, cmap="gray" if c == 1 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([(w + 2) * j + w / 2 + 1 for j in range(k)])
    ax.set_xticklabels(["x"] + list(labels[: k - 1]), fontsize=7)
    ax.set_yticks([])
    fig.tight_layout()

    def save(p: Path) -> None:
        fig.savefig(p, format="png", dpi=110)

    try:
        return write_with(path, save)
    finally:
        plt.close(fig)


def plot_log(frame: pd.DataFrame, path: str | os.PathLike[str], title: str = "") -> Path:
    """Matching loss (phi and identity, smoothed) and alpha against the iteration."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    win = max(1, len(frame) // 20)
    for col, style in (("loss", "-"), ("loss_identity", "--")):
        if col in frame and frame[col].notna().any():
            ax1.plot(
                frame["iteration"], frame[col].rolling(win, min_periods=1).mean(), style, label=col
            )
    ax1.set_xlabel("iteration")
    ax1.set_ylabel(f"matching loss (rolling mean {win})")
    ax1.legend(fontsize=8)
    ax2.plot(frame["iteration"], frame["alpha"])
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("alpha (student step size)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    try:
        return write_with(path, lambda p: fig.savefig(p, format="png", dpi=110))
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------- training with phi
Transform = Callable[[Tensor, Tensor, Tensor, torch.Generator], Tensor]


class PhiTransform:
    """A frozen phi with fresh noise on every batch (no gradient to phi)."""

    def __init__(self, phi: AugNet, use_index: bool | None = None) -> None:
        self.phi = phi.eval()
        for p in self.phi.parameters():
            p.requires_grad_(False)
        self.use_index = phi.needs_index if use_index is None else use_index

    def __call__(self, x: Tensor, y: Tensor, index: Tensor, generator: torch.Generator) -> Tensor:
        self.phi.to(x.device)
        with torch.no_grad():
            return self.phi.augment(x, y, index if self.use_index else None, generator=generator)


class DSATransform:
    """DSA (the experts' settings) with parameters drawn from the batch's generator."""

    def __init__(self, dsa) -> None:
        self.dsa = dsa

    def __call__(self, x, y, index, generator):
        return self.dsa(x, generator=generator)[0]


class KorniaAutoTransform:
    """kornia's TrivialAugment or RandAugment on ``[0, 1]`` images (undo the preprocessing,
    augment, redo it). kornia draws from torch's global RNG: it is forked and seeded from
    the batch's generator, so runs are reproducible."""

    def __init__(self, name: str, preprocessor, n: int = 2, m: int = 10) -> None:
        from kornia.augmentation import auto

        if name == "trivialaugment":
            self.aug = auto.TrivialAugment()
        elif name == "randaugment":
            self.aug = auto.RandAugment(n=n, m=m)
        else:
            raise LeanaugError(
                f"unknown kornia policy {name!r}; valid: trivialaugment, randaugment"
            )
        self.name = name
        self.pre = preprocessor

    def __call__(self, x, y, index, generator):
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            raw = self.pre.inverse_transform(x).clamp(0, 1)
            return self.pre.transform_float(self.aug(raw).clamp(0, 1)).to(x.dtype)


class Compose:
    def __init__(self, *transforms: Transform | None) -> None:
        self.transforms = [t for t in transforms if t is not None]

    def __call__(self, x, y, index, generator):
        for t in self.transforms:
            x = t(x, y, index, generator)
        return x


@dataclass
class TrainResult:
    final_accuracy: list[float]
    curves: list[list[tuple[int, float]]]
    seconds: float
    config: dict[str, Any]

    @property
    def mean(self) -> float:
        return float(np.mean(self.final_accuracy))

    @property
    def std(self) -> float:
        return float(np.std(self.final_accuracy))


def train_on_augmented(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    network_config: dict[str, Any],
    *,
    transform: Transform | None = None,
    steps: int = 500,
    batch_size: int = 128,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    runs: int = 5,
    seed: int = 0,
    eval_every: int = 0,
    device: str | torch.device = "cpu",
) -> TrainResult:
    """Train ``runs`` fresh networks for ``steps`` SGD steps on ``transform(batch)``; test each.

    Batches walk through seeded random permutations of the training set (a new one per
    pass); the learning rate is multiplied by 0.1 after half the steps (MTT's evaluation
    schedule, counted in steps so that every subset size gets the same compute).
    ``transform(x, y, index, generator)`` gets the batch, its indices into ``train_x`` and
    the run's generator. Run ``r`` is seeded from ``(seed, r)``.
    """
    from leanaug.distill.experts import build_network
    from leanaug.distill.training import accuracy

    if steps < 1 or runs < 1 or batch_size < 1 or not lr > 0:
        raise LeanaugError(
            f"need steps, runs, batch_size >= 1 and lr > 0; got {steps}, {runs}, {batch_size}, {lr}"
        )
    dev = device if isinstance(device, torch.device) else resolve_device(str(device))
    train_x, train_y = train_x.to(dev, torch.float32), train_y.to(dev).long()
    test_x, test_y = test_x.to(dev, torch.float32), test_y.to(dev).long()
    n = train_x.shape[0]
    tic = time.perf_counter()
    finals, curves = [], []
    for r in range(runs):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, "train", r, "init"))
            module = build_network(network_config)
        module.to(dev).train()
        opt = torch.optim.SGD(
            module.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
        )
        gen = torch_generator(seed, "train", r, "batches")
        order, cursor, curve = torch.randperm(n, generator=gen), 0, []
        for step in range(steps):
            if step == steps // 2 and steps > 1:
                for group in opt.param_groups:
                    group["lr"] = lr * 0.1
            if cursor + batch_size > n and cursor > 0:
                order, cursor = torch.randperm(n, generator=gen), 0
            idx = order[cursor : cursor + batch_size]
            cursor += len(idx)
            idx_dev = idx.to(dev)
            x, y = train_x[idx_dev], train_y[idx_dev]
            if transform is not None:
                x = transform(x, y, idx_dev, gen)
            module.train()
            loss = F.cross_entropy(module(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if not math.isfinite(float(loss.detach())):
                raise LeanaugError(
                    f"training run {r}: loss became {float(loss)} at step {step + 1}"
                )
            if eval_every and (step + 1) % eval_every == 0 and step + 1 < steps:
                curve.append((step + 1, accuracy(module, test_x, test_y)))
        acc = accuracy(module, test_x, test_y)
        curve.append((steps, acc))
        finals.append(acc)
        curves.append(curve)
    config = dict(
        network=dict(network_config),
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        runs=runs,
        seed=seed,
        n_train=n,
    )
    return TrainResult(finals, curves, time.perf_counter() - tic, config)
