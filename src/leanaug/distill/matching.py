"""Trajectory matching (MTT, Cazenavette et al. 2022) and its constant-memory gradient.

One distillation iteration starts a student at an expert's parameters
``theta_0 = theta*_t``, takes ``N`` SGD steps on (augmented) minibatches of the synthetic
images with the learnable step size ``alpha``::

    theta_{i+1} = theta_i - alpha * g_i,   g_i = grad_theta CE(f(DSA(x_{b_i}); theta_i), y_{b_i})

and scores the end point against the expert ``M`` epochs later::

    L = ||theta_N - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2

This module computes ``L`` and its gradient with respect to the synthetic pixels ``x`` and
``alpha`` in three ways (``memory=``):

``"unrolled"``
    Plain autograd through all ``N`` steps built with ``create_graph=True`` (the
    reference implementation). Every step's activations (and their double-backward
    graph) stay alive until the final backward: memory grows linearly with ``N``.

``"constant"``
    The *exact* same gradient with activation memory of one step. A forward pass runs
    the ``N`` steps without a graph and stores only the parameter vectors
    ``theta_0..theta_{N-1}`` (``N x P`` numbers: 80 steps of the 320k-parameter CIFAR
    ConvNet are 100 MB in float32, small next to the activations of 80 steps) and the
    per-step DSA parameters. A reverse pass then walks ``i = N-1 .. 0`` carrying the
    adjoint ``lam_{i+1} = dL/dtheta_{i+1}`` (``lam_N = 2 (theta_N - theta*) / denom``):
    it rebuilds step ``i``'s graph from the stored ``theta_i`` (replaying the same
    minibatch and DSA parameters), and one vector-Jacobian product of ``g_i`` with
    ``lam_{i+1}`` gives both

    - ``dL/dx    += -alpha * (dg_i/dx)^T lam_{i+1}``
    - ``lam_i     = lam_{i+1} - alpha * H_i lam_{i+1}`` (``H_i`` the Hessian at step ``i``:
      the cross-step term through which ``theta_{i+1..N}`` depend on ``x`` via ``theta_i``)
    - ``dL/dalpha += -g_i . lam_{i+1}``.

    This is reverse-mode differentiation done by hand, step by step, so it equals the
    unrolled gradient up to floating-point rounding (tests check it in float64). It costs
    one extra plain gradient evaluation per step (the graph-free forward pass).

    ``theta_store="host"`` keeps the stored ``theta_i`` in (pinned) host memory when the
    run is on a GPU, copied out and back with non-blocking transfers, so that device
    memory no longer grows with ``N`` at all (on the H200 the ``N`` vectors were the only
    growth: 556 -> 647 MB from N=10 to 80, ``docs/performance.md``). On a CPU device it
    changes nothing.

``"tesla"``
    TESLA's approximation (Cui et al. 2023): ``theta_N = theta_0 - alpha * sum_i g_i``
    differentiated with each ``theta_i`` held fixed, i.e. ``lam_i = lam_N`` for every step
    (the Hessian terms above are dropped). Cheaper than ``"constant"`` (no
    Hessian-vector product with respect to theta), constant memory, but *not* the
    unrolled gradient; offered for comparison only.

Written by hand rather than with ``torch.utils.checkpoint`` because checkpointing the
unrolled graph still keeps the ``N`` double-backward graphs of the final backward alive
together, and because the per-step DSA parameters must be replayed explicitly.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from leanaug.device import resolve_device
from leanaug.distill.networks import PRECISIONS, FlatModel
from leanaug.distill.synthetic import INITS, Checkpoint, initial_images, save_grid
from leanaug.errors import DataError, LeanaugError
from leanaug.progress import note
from leanaug.results import output_dir, read_json, read_parquet, write_json, write_parquet
from leanaug.seeding import derive_seed, torch_generator

MEMORY_MODES = ("unrolled", "constant", "tesla")
THETA_STORES = ("device", "host")  # where the reverse-pass modes keep theta_0..theta_{N-1}

# ``augment(x, generator=g) -> (x_aug, params)`` draws; ``augment(x, params=params)`` replays
# (the contract of :class:`leanaug.distill.dsa.DSA`). ``None`` means no augmentation.
Augment = Callable[..., Any]


@dataclass
class StudentPlan:
    """Everything random about one iteration's ``N`` student steps, fixed in advance.

    ``batches[i]`` are the indices of the synthetic images used at step ``i``;
    ``aug_seeds[i]`` seeds the DSA draw of step ``i``. Fixing them up front is what lets
    the constant-memory reverse pass replay exactly the forward pass. ``aug_params[i]``,
    when set (:func:`stage_plan`), is that draw already made, on the images' device.
    """

    batches: list[Tensor]
    aug_seeds: list[int]
    aug_params: list[Any] | None = None

    @property
    def steps(self) -> int:
        return len(self.batches)


def plan_student(
    n_images: int, steps: int, batch_syn: int | None, generator: torch.Generator
) -> StudentPlan:
    """Minibatches as in the reference: a random permutation cut into ``batch_syn`` chunks,
    a new permutation when the chunks run out; ``batch_syn=None`` uses every image each step."""
    if steps < 1:
        raise LeanaugError(f"syn_steps must be at least 1, got {steps}")
    batch = n_images if batch_syn is None or batch_syn <= 0 else min(int(batch_syn), n_images)
    batches: list[Tensor] = []
    chunks: list[Tensor] = []
    for _ in range(steps):
        if not chunks:
            perm = torch.randperm(n_images, generator=generator)
            chunks = list(torch.split(perm, batch))[::-1]
        batches.append(chunks.pop())
    seeds = torch.randint(0, 2**62, (steps,), generator=generator).tolist()
    return StudentPlan(batches=batches, aug_seeds=[int(s) for s in seeds])


def _seeded(seed: int) -> torch.Generator:
    # a CPU generator: DSA draws on the generator's device, so CPU and CUDA runs draw alike
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def _draw(augment: Augment | None, x: Tensor, seed: int, params: Any = None) -> tuple[Tensor, Any]:
    """``(augment(x), params)``: drawn from ``seed``, or ``params`` applied when staged."""
    if augment is None:
        return x, None
    if params is not None:
        return _replay(augment, x, params, seed), params
    out = augment(x, generator=_seeded(seed))
    return (out[0], out[1]) if isinstance(out, tuple) else (out, None)


def upload(tensors: Sequence[Tensor], device: torch.device) -> list[Tensor]:
    """``tensors`` on ``device`` with one copy per dtype: packed into one flat buffer, and on
    a GPU pinned and copied with ``non_blocking=True``.

    A copy from pageable host memory makes the host wait for the device, so the blocking
    copies of each student step's batch indices and DSA draws stalled the GPU's queue N
    times an iteration; staged this way an iteration makes at most one copy per dtype.
    """
    out: list[Tensor] = list(tensors)
    by_dtype: dict[torch.dtype, list[int]] = {}
    for k, t in enumerate(tensors):
        if t.device != device:
            by_dtype.setdefault(t.dtype, []).append(k)
    for ks in by_dtype.values():
        flat = torch.cat([tensors[k].reshape(-1) for k in ks])
        if device.type == "cuda":
            flat = flat.pin_memory()
        flat = flat.to(device, non_blocking=True)
        for k, piece in zip(ks, flat.split([tensors[k].numel() for k in ks]), strict=True):
            out[k] = piece.view(tensors[k].shape)
    return out


def stage_plan(plan: StudentPlan, augment: Augment | None, images: Tensor) -> StudentPlan:
    """The plan with its batch indices, and every step's draw of an augmentation that can
    draw without applying (``augment.sample``, as :class:`~leanaug.distill.dsa.DSA`), on
    ``images``' device, moved there by :func:`upload` once for the whole iteration.

    The draws are the ones :func:`_draw` would make step by step (same seeds, same CPU
    generators), so the student's updates do not change.
    """
    if plan.aug_params is not None:
        return plan
    sample = getattr(augment, "sample", None)
    params: list[Any] = []
    if callable(sample):
        shape = tuple(images.shape[1:])
        for idx, seed in zip(plan.batches, plan.aug_seeds, strict=True):
            params.append(sample(torch.empty((len(idx), *shape), device="meta"), _seeded(seed)))
    values = [v for p in params for v in p.values.values()]
    moved = iter(upload([*plan.batches, *values], images.device))
    batches = [next(moved) for _ in plan.batches]
    staged = [type(p)(p.groups, {k: next(moved) for k in p.values}) for p in params]
    return StudentPlan(batches, list(plan.aug_seeds), staged or None)


def _replay(augment: Augment | None, x: Tensor, params: Any, seed: int) -> Tensor:
    if augment is None:
        return x
    if params is None:  # an augmentation without replayable params: redraw from the seed
        return _draw(augment, x, seed)[0]
    out = augment(x, params=params)
    return out[0] if isinstance(out, tuple) else out


def _step_gradient(
    model: FlatModel, theta: Tensor, x: Tensor, y: Tensor, create_graph: bool
) -> Tensor:
    loss = F.cross_entropy(model(theta, x), y)
    (grad,) = torch.autograd.grad(loss, theta, create_graph=create_graph)
    return grad


def unroll_student(
    model: FlatModel,
    theta_start: Tensor,
    images: Tensor,
    labels: Tensor,
    alpha: Tensor | float,
    plan: StudentPlan,
    augment: Augment | None = None,
    create_graph: bool = False,
) -> Tensor:
    """``theta_N`` after the plan's ``N`` SGD steps of size ``alpha`` from ``theta_start``.

    With ``create_graph=True`` the result is differentiable with respect to ``images`` and
    ``alpha`` (the unrolled graph); otherwise it is detached.
    """
    theta = theta_start.detach().clone().requires_grad_(True)
    for i, (idx, seed) in enumerate(zip(plan.batches, plan.aug_seeds, strict=True)):
        x_aug, _ = _draw(augment, images[idx], seed, plan.aug_params and plan.aug_params[i])
        grad = _step_gradient(model, theta, x_aug, labels[idx], create_graph=create_graph)
        if create_graph:
            theta = theta - alpha * grad
        else:
            theta = (theta.detach() - alpha * grad).detach().requires_grad_(True)
    return theta if create_graph else theta.detach()


def matching_loss(
    theta_n: Tensor, theta_start: Tensor, theta_target: Tensor, check: bool = True
) -> Tensor:
    """``||theta_N - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2``.

    ``check`` raises when the denominator is zero or not finite; it reads the value back
    from the device, so code that must not (a CUDA graph) passes ``False`` and checks once.
    """
    denom = (theta_start - theta_target).pow(2).sum()
    if check and (not torch.isfinite(denom) or denom <= 0):
        raise LeanaugError(
            "expert start and target parameters coincide: the matching loss is undefined"
        )
    return (theta_n - theta_target).pow(2).sum() / denom


@dataclass
class MatchResult:
    """Loss value and gradients of one matching iteration (all detached)."""

    loss: Tensor
    grad_images: Tensor
    grad_alpha: Tensor
    theta_n: Tensor


def match_gradients(
    model: FlatModel,
    theta_start: Tensor,
    theta_target: Tensor,
    images: Tensor,
    labels: Tensor,
    alpha: Tensor,
    plan: StudentPlan,
    augment: Augment | None = None,
    memory: str = "unrolled",
    theta_store: str = "device",
) -> MatchResult:
    """The matching loss and ``dL/dimages``, ``dL/dalpha`` (see the module docstring)."""
    check_memory_options(memory, theta_store)
    theta_start = theta_start.detach()
    theta_target = theta_target.detach()
    plan = stage_plan(plan, augment, images)
    if memory == "unrolled":
        return _match_unrolled(
            model, theta_start, theta_target, images, labels, alpha, plan, augment
        )
    return _match_reverse(
        model,
        theta_start,
        theta_target,
        images,
        labels,
        alpha,
        plan,
        augment,
        exact=memory == "constant",
        host=theta_store == "host",
    )


def check_memory_options(memory: str, theta_store: str) -> None:
    if memory not in MEMORY_MODES:
        raise LeanaugError(f"memory must be one of {', '.join(MEMORY_MODES)}, got {memory!r}")
    if theta_store not in THETA_STORES:
        raise LeanaugError(
            f"theta_store must be one of {', '.join(THETA_STORES)}, got {theta_store!r}"
        )
    if theta_store == "host" and memory == "unrolled":
        raise LeanaugError(
            "theta_store 'host' needs memory 'constant' or 'tesla' (the unrolled mode keeps "
            "its whole autograd graph on the device)"
        )


def _stash(theta: Tensor, host: bool) -> Tensor:
    """``theta`` itself, or a copy in pinned host memory when ``host`` and on a GPU; the
    non-blocking copy is ordered on the current stream, so ``theta`` may be freed after."""
    if not host or theta.device.type == "cpu":
        return theta
    out = torch.empty(theta.shape, dtype=theta.dtype, pin_memory=True)
    return out.copy_(theta, non_blocking=True)


def _match_unrolled(
    model, theta_start, theta_target, images, labels, alpha, plan, augment
) -> MatchResult:
    x = images.detach().requires_grad_(True)
    a = alpha.detach().clone().requires_grad_(True)
    theta_n = unroll_student(model, theta_start, x, labels, a, plan, augment, create_graph=True)
    loss = matching_loss(theta_n, theta_start, theta_target)
    grad_x, grad_a = torch.autograd.grad(loss, [x, a])
    return MatchResult(
        loss=loss.detach(), grad_images=grad_x, grad_alpha=grad_a, theta_n=theta_n.detach()
    )


def _match_reverse(
    model, theta_start, theta_target, images, labels, alpha, plan, augment, exact: bool, host: bool
) -> MatchResult:
    stored = store_forward(model, theta_start, images, labels, alpha, plan, augment, host)
    theta_n = stored.theta_n
    loss = matching_loss(theta_n, theta_start, theta_target)
    denom = (theta_start - theta_target).pow(2).sum()
    lam = 2.0 * (theta_n - theta_target) / denom  # dL/dtheta_N
    grad_x, grad_a = reverse_pass(model, stored, images, labels, alpha, plan, augment, lam, exact)
    return MatchResult(
        loss=loss.detach(),
        grad_images=grad_x,
        grad_alpha=grad_a.reshape(alpha.shape),
        theta_n=theta_n,
    )


@dataclass
class StoredForward:
    """What the reverse pass needs of a graph-free forward pass: ``theta_0..theta_{N-1}``
    (on the host when stashed there), each step's DSA parameters, and ``theta_N``."""

    thetas: list[Tensor]
    aug_params: list[Any]
    theta_n: Tensor


def store_forward(
    model: FlatModel,
    theta_start: Tensor,
    images: Tensor,
    labels: Tensor,
    alpha: Tensor,
    plan: StudentPlan,
    augment: Augment | None,
    host: bool = False,
) -> StoredForward:
    """The forward pass of ``"constant"`` / ``"tesla"`` (no graph; see the module docstring)."""
    x_all = images.detach()
    a = alpha.detach()
    # Forward pass without a graph: keep theta_i (N x P) and each step's DSA parameters.
    thetas: list[Tensor] = []
    aug_params: list[Any] = []
    theta = theta_start.clone()
    for i, (idx, seed) in enumerate(zip(plan.batches, plan.aug_seeds, strict=True)):
        thetas.append(_stash(theta, host))
        with torch.no_grad():
            x_aug, params = _draw(augment, x_all[idx], seed, plan.aug_params and plan.aug_params[i])
        aug_params.append(params)
        th = theta.clone().requires_grad_(True)
        grad = _step_gradient(model, th, x_aug, labels[idx], create_graph=False)
        theta = (theta - a * grad).detach()
    return StoredForward(thetas, aug_params, theta)


def reverse_pass(
    model: FlatModel,
    stored: StoredForward,
    images: Tensor,
    labels: Tensor,
    alpha: Tensor,
    plan: StudentPlan,
    augment: Augment | None,
    lam: Tensor,
    exact: bool = True,
) -> tuple[Tensor, Tensor]:
    """``(dL/dimages, dL/dalpha)`` from the adjoint ``lam = dL/dtheta_N`` of any loss of
    ``theta_N``, walking the stored forward pass back (``exact=False``: TESLA's
    approximation, ``lam_i = lam_N``)."""
    x_all = images.detach()
    a = alpha.detach()
    thetas, aug_params = stored.thetas, stored.aug_params
    device = stored.theta_n.device
    grad_x = torch.zeros_like(x_all)
    grad_a = torch.zeros((), dtype=a.dtype, device=a.device)
    for i in range(plan.steps - 1, -1, -1):
        idx = plan.batches[i]
        th = thetas[i].to(device, non_blocking=True).clone().requires_grad_(True)
        xb = x_all[idx].clone().requires_grad_(True)
        x_aug = _replay(augment, xb, aug_params[i], plan.aug_seeds[i])
        grad = _step_gradient(model, th, x_aug, labels[idx], create_graph=True)
        grad_a = grad_a - torch.dot(grad.detach(), lam)
        need_theta = exact and i > 0  # lam_0 is never used
        inputs = [xb, th] if need_theta else [xb]
        vjps = torch.autograd.grad(grad, inputs, grad_outputs=lam)
        grad_x.index_add_(0, idx, -a * vjps[0])
        if need_theta:
            lam = lam - a * vjps[1]
        del grad, vjps, x_aug
    return grad_x, grad_a


# One alpha update may change alpha by at most this factor (see TrajectoryMatching).
MAX_ALPHA_FACTOR = 1.05


def step_log_alpha_(
    optimizer: torch.optim.Optimizer, log_alpha: Tensor, grad_alpha: Tensor
) -> None:
    """One update of the learned step size, in place: ``optimizer`` (SGD, learning rate
    ``lr_lr``) steps ``log_alpha`` with the gradient ``dL/dalpha / alpha``, which moves
    ``alpha`` by MTT's ``-lr_lr * dL/dalpha`` to first order at any ``alpha``
    (``d log(alpha) = d alpha / alpha``); the step is then bounded to a factor
    ``MAX_ALPHA_FACTOR`` either way, where the reference's step would cross zero.

    The bound also holds for what the momentum carries: the gradient is clipped before it
    enters the momentum buffer (``lr_lr * |g| <= log MAX_ALPHA_FACTOR``), and when the step
    is clipped the buffer is set to the step actually taken. Without that, one huge first
    gradient (digits, issue 18: ``dL/dlog alpha = 3e6`` at ``lr_lr = 1e-5``, 40x the bound)
    stayed in the buffer and moved alpha by the full factor for 5+ iterations in a row,
    whatever the later gradients said."""
    alpha = log_alpha.detach().exp()
    grad = (grad_alpha / alpha).to(log_alpha.dtype).reshape(log_alpha.shape)
    bound = math.log(MAX_ALPHA_FACTOR)
    lrs = [
        float(g["lr"]) for g in optimizer.param_groups if any(p is log_alpha for p in g["params"])
    ]
    lr = lrs[0] if lrs else 0.0
    if lr > 0:
        grad = grad.clamp(-bound / lr, bound / lr)
    log_alpha.grad = grad
    before = log_alpha.detach().clone()
    optimizer.step()
    with torch.no_grad():
        clipped = torch.minimum(torch.maximum(log_alpha, before - bound), before + bound)
        if lr > 0 and not torch.equal(clipped, log_alpha):
            buf = optimizer.state.get(log_alpha, {}).get("momentum_buffer")
            if buf is not None:
                buf.copy_((before - clipped) / lr)
        log_alpha.copy_(clipped)
    log_alpha.grad = None


def expert_segment(
    trajectory: Tensor, start_epoch: int, expert_epochs: int
) -> tuple[Tensor, Tensor]:
    """``(theta*_t, theta*_{t+M})`` rows of an expert trajectory ``(epochs+1) x P``."""
    end = start_epoch + expert_epochs
    if start_epoch < 0 or end >= trajectory.shape[0]:
        raise LeanaugError(
            f"expert trajectory has {trajectory.shape[0] - 1} epochs; start epoch {start_epoch} + "
            f"expert_epochs {expert_epochs} is out of range"
        )
    return trajectory[start_epoch], trajectory[end]


def check_plan_inputs(images: Tensor, labels: Tensor, batches: Sequence[Tensor]) -> None:
    if images.shape[0] != labels.shape[0]:
        raise LeanaugError(f"{images.shape[0]} synthetic images but {labels.shape[0]} labels")
    for b in batches:
        if b.numel() == 0:
            raise LeanaugError("empty synthetic minibatch")


def bounded_image_gradient(grad: Tensor, lr_img: float, max_image_step: float) -> Tensor:
    """``grad`` scaled down, where needed, so that one SGD step ``lr_img * grad`` changes the
    pixels by at most ``max_image_step`` root-mean-square (in the preprocessed units, where
    real images have standard deviation about 1); ``max_image_step=0`` leaves it alone.

    Gradient-norm clipping (as ``torch.nn.utils.clip_grad_norm_``, here on the RMS). Why:
    the pixel gradient scales as ``1 / ||theta*_t - theta*_{t+M}||^2``, which depends on
    the data set and the experts. On sklearn's digits (6 expert SGD steps per epoch, that
    denominator 0.0028) the first gradient's norm was 2.3e3 for images of norm 25: at
    lr_img 100 the first step moved the pixels by 1.8e4 RMS, at lr_img 0.01 the gradients
    grew with the images (to 2.3e4) and they ended 15 RMS away; either way at chance."""
    if max_image_step <= 0:
        return grad
    limit = max_image_step / lr_img
    rms = grad.pow(2).mean().sqrt()
    return grad * torch.clamp(limit / rms.clamp_min(torch.finfo(grad.dtype).tiny), max=1.0)


def loss_growth_reason(losses: Sequence[float], growth: float, window: int = 3) -> str | None:
    """Why a run whose matching loss has grown ``growth``-fold over its start must stop, or
    ``None``. ``losses`` are the run's losses so far (iteration 1 first, the current one
    last). The start is the median of the first ``window`` losses, the present the median
    of the last ``window``; medians, so one unlucky (expert, start epoch) segment does not
    stop a run. Only once there are more than ``window`` losses; ``growth=0``: never."""
    if growth <= 0 or len(losses) <= window:
        return None
    start = float(torch.tensor(losses[:window], dtype=torch.float64).median())
    now = float(torch.tensor(losses[-window:], dtype=torch.float64).median())
    if start > 0 and now > growth * start:
        return (
            f"the matching loss has grown {now / start:.3g}-fold over its start (median of the "
            f"last {window} iterations {now:.4g}, of the first {window} {start:.4g}; "
            f"--loss-growth {growth:g})"
        )
    return None


# --------------------------------------------------------------------------- the loop
class DistillationDiverged(LeanaugError):
    """The matching loss or the step size blew up; the last good checkpoint is kept."""


CHECKPOINT_NAME = "checkpoint.safetensors"
LOG_NAME = "log.parquet"
SETTINGS_NAME = "distill_config.json"
IMAGES_NAME = "images.safetensors"
BEST_IMAGES_NAME = "best_images.safetensors"  # the best tracking evaluation's images
# Settings a resumed run may change (how long to run, how often to look).
_RESUMABLE_CHANGES = (
    "format",
    "iterations",
    "eval_every",
    "eval_runs",
    "eval_epochs",
    "checkpoint_every",
    "device",
    "loss_limit",
    "loss_growth",
)


@dataclass
class TrajectoryMatching:
    """Distil ``ipc`` images per class by matching expert trajectories (MTT).

    Parameters follow the reference's names: ``syn_steps`` = N student steps per
    iteration, ``expert_epochs`` = M, ``max_start_epoch`` = T+ (the start epoch is drawn
    uniformly from ``0 .. T+ - 1``, as the reference's ``randint(0, T+)``), ``lr_img`` the
    pixel learning rate, ``lr_teacher`` = alpha_0 the initial student step size,
    ``batch_syn`` the student minibatch (``None``/0: all images every step).

    The step size is ``alpha = exp(log_alpha)``, positive by construction. It is learned by
    SGD (momentum 0.5, learning rate ``lr_lr``) on ``log_alpha`` with the gradient
    ``dL/dalpha / alpha`` (:func:`step_log_alpha_`): a step then moves ``alpha`` by the
    reference's ``-lr_lr * dL/dalpha`` to first order at every ``alpha``, and one step may
    change ``alpha`` by at most a factor ``MAX_ALPHA_FACTOR`` (1.05; the momentum included), where the reference's step would cross zero (the reference's own steps are ~3 % on CIFAR-10: 1e-5 x dL/dalpha ~30 at alpha 0.01). (An earlier rule, ``lr_lr / alpha_0**2`` on ``dL/dlog_alpha``,
    matched the reference only at ``alpha_0`` and grew as ``(alpha / alpha_0)**2``: on
    CIFAR-10 one step at ``alpha = 50 alpha_0`` sent alpha to 1e-8 and the run never came back.)

    ``memory``: ``"unrolled"`` | ``"constant"`` (exact, activation memory of one step) |
    ``"tesla"`` (approximate); see the module docstring. ``theta_store="host"`` keeps the
    constant/tesla modes' stored student parameters in host memory on a GPU.
    ``loss_limit``: a matching loss above it (or a non-finite loss, gradient, alpha or
    image) stops the run with :class:`DistillationDiverged`; so does a loss that has grown
    ``loss_growth``-fold over the run's start (:func:`loss_growth_reason`; 0: off).
    ``max_start_epoch=None``: T+ is the whole usable trajectory (every start epoch with
    ``M`` expert epochs after it). ``max_image_step``: one pixel update changes the images
    by at most this RMS (:func:`bounded_image_gradient`; 0: unbounded, the reference).
    With tracking evaluation (``eval_every > 0``) the images of the best evaluation so far
    are kept in ``best_images.safetensors`` (the reference's "best checkpoint").

    ``precision`` (``"float32"`` | ``"bfloat16"``: autocast of the student's forward pass)
    and ``channels_last`` are GPU fast paths (see ``docs/performance.md`` for what they
    buy and how far their gradients differ from float32).
    """

    ipc: int = 1
    syn_steps: int = 20
    expert_epochs: int = 2
    max_start_epoch: int | None = None
    iterations: int = 500
    lr_img: float = 100.0
    max_image_step: float = 0.01
    lr_lr: float = 1e-5
    lr_teacher: float = 0.01
    batch_syn: int | None = None
    init: str = "real"
    dsa: bool = True
    memory: str = "unrolled"
    theta_store: str = "device"
    precision: str = "float32"
    channels_last: bool = False
    eval_every: int = 100
    eval_runs: int = 5
    eval_epochs: int = 300
    checkpoint_every: int = 10
    loss_limit: float = 1e3
    loss_growth: float = 5.0
    seed: int = 0
    device: str = "auto"

    # ------------------------------------------------------------------ settings
    @classmethod
    def param_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.param_names()}

    @classmethod
    def from_config(cls, config: dict[str, Any], source: str = "config") -> TrajectoryMatching:
        """From a mapping of settings (``lr-img`` and ``lr_img`` both work), types checked."""
        kinds = {f.name: str(f.type) for f in fields(cls)}
        params: dict[str, Any] = {}
        for key, value in config.items():
            name = str(key).replace("-", "_")
            if name not in kinds:
                raise LeanaugError(
                    f"{source}: unknown setting {key!r}; valid: {', '.join(cls.param_names())}"
                )
            params[name] = _coerce(value, kinds[name], f"{source}: {key}")
        return cls(**params)

    def _validate(self) -> None:
        checks = [
            (self.ipc >= 1, f"ipc must be at least 1, got {self.ipc}"),
            (self.syn_steps >= 1, f"syn_steps must be at least 1, got {self.syn_steps}"),
            (
                self.expert_epochs >= 1,
                f"expert_epochs must be at least 1, got {self.expert_epochs}",
            ),
            (
                self.max_start_epoch is None or self.max_start_epoch >= 1,
                f"max_start_epoch must be at least 1, got {self.max_start_epoch}",
            ),
            (
                self.max_image_step >= 0 and math.isfinite(self.max_image_step),
                f"max_image_step must be >= 0 (0: no bound), got {self.max_image_step}",
            ),
            (
                self.loss_growth == 0 or self.loss_growth > 1,
                f"loss_growth must be above 1 (0: off), got {self.loss_growth}",
            ),
            (self.iterations >= 0, f"iterations must be >= 0, got {self.iterations}"),
            (
                self.lr_img > 0 and math.isfinite(self.lr_img),
                f"lr_img must be positive, got {self.lr_img}",
            ),
            (
                self.lr_lr >= 0 and math.isfinite(self.lr_lr),
                f"lr_lr must be >= 0, got {self.lr_lr}",
            ),
            (
                self.lr_teacher > 0 and math.isfinite(self.lr_teacher),
                f"lr_teacher must be positive, got {self.lr_teacher}",
            ),
            (
                self.batch_syn is None or self.batch_syn >= 0,
                f"batch_syn must be >= 0, got {self.batch_syn}",
            ),
            (self.init in INITS, f"init must be one of {', '.join(INITS)}, got {self.init!r}"),
            (
                self.precision in PRECISIONS,
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}",
            ),
            (
                self.eval_every >= 0 and self.eval_runs >= 1 and self.eval_epochs >= 1,
                "eval_every must be >= 0 and eval_runs, eval_epochs >= 1",
            ),
            (
                self.checkpoint_every >= 1,
                f"checkpoint_every must be at least 1, got {self.checkpoint_every}",
            ),
            (self.loss_limit > 0, f"loss_limit must be positive, got {self.loss_limit}"),
        ]
        for ok, message in checks:
            if not ok:
                raise LeanaugError(message)
        check_memory_options(self.memory, self.theta_store)

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        experts_dir: str | os.PathLike[str],
        out_dir: str | os.PathLike[str],
        *,
        data_dir: str | os.PathLike[str] | None = None,
        progress: bool = True,
        on_iteration: Callable[[int], None] | None = None,
    ) -> TrajectoryMatching:
        """Run (or resume) the distillation into ``out_dir``; see ``docs/results-distillation.md``.

        Writes ``checkpoint.safetensors`` (every ``checkpoint_every`` iterations),
        ``log.parquet``, ``grids/iter_NNNNNN.png`` at evaluations and finally
        ``images.safetensors`` (the image-set format of :mod:`leanaug.distill.evaluate`)
        and ``images.png``. Sets ``images_``, ``labels_``, ``lr_``, ``log_``.
        """
        self._validate()
        run = _Run(self, Path(experts_dir), Path(out_dir), data_dir, progress, on_iteration)
        run.execute()
        self.images_, self.labels_, self.lr_, self.log_ = (
            run.images.detach().cpu(),
            run.labels.cpu(),
            run.alpha(),
            run.log_frame(),
        )
        return self


def _coerce(value: Any, kind: str, where: str) -> Any:
    """A config value as the annotated type (``int``, ``float``, ``bool``, ``str``, ``int | None``)."""
    if value is None and "None" in kind:
        return None
    base = kind.split("|")[0].strip()
    try:
        if base == "bool":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
                return str(value).lower() in ("true", "yes", "1", "on")
            raise ValueError(value)
        if base == "int":
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError(value)
            return int(float(value))
        if base == "float":
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise LeanaugError(f"{where}: expected {base}, got {value!r}") from None


def read_settings_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML (or JSON) mapping of distillation settings, e.g. ``configs/mtt/*.yaml``."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise LeanaugError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise LeanaugError(f"--config {path}: not valid YAML/JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise LeanaugError(f"--config {path}: expected a mapping of setting names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


_LOG_COLUMNS = (
    "iteration",
    "expert",
    "start_epoch",
    "loss",
    "alpha",
    "grad_norm",
    "alpha_grad",
    "image_step",
    "seconds",
    "eval_accuracy",
    "eval_accuracy_std",
    "eval_best_accuracy",
)


# A final tracking accuracy this far (a fraction) below the initial images' is a warning.
WORSE_THAN_INITIAL = 0.05


@dataclass
class TrackingSummary:
    """Tracking accuracies of a run's log: the initial images (iteration 0), the last
    evaluation and the best one (the reference's "best checkpoint")."""

    initial: float
    initial_std: float
    final: float
    final_std: float
    final_iteration: int
    best: float
    best_iteration: int

    def warning(self, out: str | os.PathLike[str]) -> str | None:
        """One WARNING line when the final accuracy is far below the initial images'."""
        if self.final >= self.initial - WORSE_THAN_INITIAL:
            return None
        return (
            f"WARNING: distillation made the images worse: tracking test accuracy fell from "
            f"{100 * self.initial:.2f} % (initial images) to {100 * self.final:.2f} % at iteration "
            f"{self.final_iteration}; the best checkpoint (iteration {self.best_iteration}, "
            f"{100 * self.best:.2f} %) is {Path(out) / BEST_IMAGES_NAME}. Try a smaller "
            "--max-image-step or --lr-img, fewer --syn-steps, or experts trained for more epochs."
        )


def tracking_summary(log: pd.DataFrame) -> TrackingSummary | None:
    """The :class:`TrackingSummary` of a run's log, ``None`` without evaluations at
    iteration 0 and later."""
    evals = log.dropna(subset=["eval_accuracy"])
    if len(evals) < 2 or int(evals["iteration"].iloc[0]) != 0:
        return None
    first, last = evals.iloc[0], evals.iloc[-1]
    best = evals.loc[evals["eval_accuracy"].idxmax()]  # the first of equal ones
    return TrackingSummary(
        initial=float(first["eval_accuracy"]),
        initial_std=float(first["eval_accuracy_std"]),
        final=float(last["eval_accuracy"]),
        final_std=float(last["eval_accuracy_std"]),
        final_iteration=int(last["iteration"]),
        best=float(best["eval_accuracy"]),
        best_iteration=int(best["iteration"]),
    )


def _settings_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        if key in _RESUMABLE_CHANGES:
            continue
        if old.get(key) != new.get(key):
            out.append(f"{key}: {old.get(key)!r} there, {new.get(key)!r} now")
    return out


class _Run:
    """One (possibly resumed) distillation run; state lives in ``out_dir``."""

    def __init__(
        self,
        est: TrajectoryMatching,
        experts_dir: Path,
        out_dir: Path,
        data_dir,
        progress: bool,
        on_iteration,
    ) -> None:
        self.est = est
        self.experts_dir = experts_dir
        self.out = out_dir
        self.data_dir = data_dir
        self.progress = progress
        self.on_iteration = on_iteration
        self.device = resolve_device(est.device)
        self.rows: list[dict[str, Any]] = []
        self._dataset = None
        self._test: tuple[Tensor, Tensor] | None = None

    # ------------------------------------------------------------------ setup
    def _load_experts(self) -> None:
        from leanaug.distill.dsa import DSA
        from leanaug.distill.experts import build_network, load_experts, load_preprocessor

        est = self.est
        self.experts = load_experts(self.experts_dir)
        self.config = self.experts[0].config
        self.pre = load_preprocessor(self.experts_dir)
        epochs = min(e.epochs_done for e in self.experts)
        if est.max_start_epoch is None:  # T+: the whole usable trajectory
            if est.expert_epochs > epochs:
                raise LeanaugError(
                    f"--expert-epochs {est.expert_epochs} needs experts of at least "
                    f"{est.expert_epochs} epochs; {self.experts_dir} has {epochs}"
                )
            self.max_start = epochs - est.expert_epochs + 1
        else:
            self.max_start = est.max_start_epoch
        if self.max_start - 1 + est.expert_epochs > epochs:
            raise LeanaugError(
                f"--max-start-epoch {est.max_start_epoch} with --expert-epochs {est.expert_epochs} needs experts of at "
                f"least {est.max_start_epoch - 1 + est.expert_epochs} epochs; {self.experts_dir} has {epochs}"
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(
                0
            )  # the module only gives shapes; students start at expert parameters
            self.module = build_network(self.config["network"]).to(self.device)
        self.model = FlatModel(
            self.module, precision=est.precision, channels_last=est.channels_last
        )
        if self.model.size != self.experts[0].num_parameters:
            raise LeanaugError(
                f"{self.experts_dir}: experts have {self.experts[0].num_parameters} parameters, the network of "
                f"config.json has {self.model.size}"
            )
        dsa_cfg = self.config.get("training", {}).get("dsa")
        self.dsa = DSA(**dsa_cfg) if est.dsa and dsa_cfg else None
        self.num_classes = int(self.config["network"]["num_classes"])

    def dataset(self):
        if self._dataset is None:
            from leanaug.distill.experts import load_dataset_for

            self._dataset = load_dataset_for(self.config, self.data_dir)
        return self._dataset

    def _settings(self) -> dict[str, Any]:
        experts_cfg = {k: v for k, v in self.config.items() if k not in ("experts", "epochs")}
        experts_cfg["dataset"] = {
            k: v for k, v in experts_cfg.get("dataset", {}).items() if k != "data_dir"
        }
        params = {**self.est.get_params(), "max_start_epoch": self.max_start}  # T+ resolved
        return json.loads(
            json.dumps({**params, "experts": experts_cfg, "num_experts": len(self.experts)})
        )

    def _prepare(self) -> None:
        est = self.est
        output_dir(self.out)  # a file, a file above it, not writable: one line each
        settings = self._settings()
        settings_path = self.out / SETTINGS_NAME
        ckpt_path = self.out / CHECKPOINT_NAME
        if settings_path.exists():
            diffs = _settings_differences(read_json(settings_path), settings)
            if diffs:
                raise LeanaugError(
                    f"{self.out} holds a distillation run with other settings ({'; '.join(diffs)}); "
                    "use another --out or the same settings"
                )
        elif ckpt_path.exists():
            raise LeanaugError(
                f"{self.out} holds a checkpoint but no {SETTINGS_NAME}; refusing to mix runs"
            )
        write_json(settings_path, {"format": "leanaug-distill/1", **settings})

        dtype = torch.float32
        if ckpt_path.exists():
            ck = Checkpoint.load(ckpt_path)
            self.start = ck.iteration
            note(
                f"{self.out}: resuming from the checkpoint of iteration {ck.iteration} "
                f"(of {est.iterations})",
                enabled=self.progress,
            )
            images = ck.images.to(self.device, dtype)
            log_alpha = ck.log_alpha.to(self.device, dtype)
            log_path = self.out / LOG_NAME
            if log_path.exists():
                frame = read_parquet(log_path)
                frame = frame[frame["iteration"] <= ck.iteration]
                self.rows = [
                    {k: (None if pd.isna(v) else v) for k, v in row.items()}
                    for row in frame.to_dict("records")
                ]
        else:
            ck = None
            self.start = 0
            ds = self.dataset()
            train_x = self.pre.transform(ds.train_images, device=self.device)
            train_y = torch.as_tensor(ds.train_labels).to(self.device)
            images, _ = initial_images(
                train_x, train_y, self.num_classes, est.ipc, est.init, est.seed
            )
            images = images.to(dtype)
            log_alpha = torch.tensor(math.log(est.lr_teacher), dtype=dtype, device=self.device)
        self.labels = torch.arange(self.num_classes, device=self.device).repeat_interleave(est.ipc)
        if images.shape[0] != self.labels.shape[0]:
            raise DataError(
                f"{ckpt_path}: {images.shape[0]} images, expected {self.labels.shape[0]}"
            )
        # One memory layout whichever way the images came: for 1-channel images the strides
        # of a fresh tensor and of one read from a checkpoint can differ while both are
        # "contiguous", and the convolutions then round differently (a resumed run drifted).
        self.images = images.clone(memory_format=torch.contiguous_format).requires_grad_(True)
        self.log_alpha = log_alpha.clone().requires_grad_(True)
        self.opt_img = torch.optim.SGD([self.images], lr=est.lr_img, momentum=0.5)
        self.opt_lr = torch.optim.SGD([self.log_alpha], lr=est.lr_lr, momentum=0.5)
        if ck is not None:
            if ck.images_momentum is not None:
                self.opt_img.state[self.images]["momentum_buffer"] = ck.images_momentum.to(
                    self.device, dtype
                ).clone()
            if ck.log_alpha_momentum is not None:
                self.opt_lr.state[self.log_alpha]["momentum_buffer"] = ck.log_alpha_momentum.to(
                    self.device, dtype
                ).clone()
        self.last_checkpoint = self.start if ck is not None else None

    # ------------------------------------------------------------------ helpers
    def alpha(self) -> float:
        return float(self.log_alpha.detach().exp())

    def log_frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.rows, columns=list(_LOG_COLUMNS))
        for col in _LOG_COLUMNS:
            if col == "iteration":
                frame[col] = frame[col].astype("int64")
            elif col in ("expert", "start_epoch"):  # empty on the iteration-0 row
                frame[col] = pd.to_numeric(frame[col]).astype("Int64")
            else:
                frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
        return frame

    def _write_log(self) -> None:
        write_parquet(self.out / LOG_NAME, self.log_frame())

    def _checkpoint(self, iteration: int) -> None:
        self._write_log()
        mom_img = self.opt_img.state.get(self.images, {}).get("momentum_buffer")
        mom_lr = self.opt_lr.state.get(self.log_alpha, {}).get("momentum_buffer")
        Checkpoint(iteration, self.images.detach(), self.log_alpha.detach(), mom_img, mom_lr).save(
            self.out / CHECKPOINT_NAME
        )
        self.last_checkpoint = iteration

    def _display(self) -> Tensor:
        with torch.no_grad():
            return self.pre.inverse_transform(self.images.detach().float().cpu())

    def _grid(self, iteration: int) -> None:
        save_grid(
            self.out / "grids" / f"iter_{iteration:06d}.png",
            self._display(),
            self.labels,
            self.num_classes,
        )

    def _test_set(self) -> tuple[Tensor, Tensor]:
        if self._test is None:
            ds = self.dataset()
            self._test = (
                self.pre.transform(ds.test_images, device=self.device),
                torch.as_tensor(ds.test_labels).to(self.device),
            )
        return self._test

    def _evaluate(self, iteration: int) -> tuple[float, float, float]:
        """(mean final, std final, mean best-epoch) test accuracy of fresh networks."""
        from leanaug.distill.evaluate import evaluate_images

        est = self.est
        test_x, test_y = self._test_set()
        strategy = self.dsa.strategy if self.dsa is not None else ""
        result = evaluate_images(
            self.images.detach(),
            self.labels,
            test_x,
            test_y,
            self.config["network"],
            self.alpha(),
            epochs=est.eval_epochs,
            runs=est.eval_runs,
            dsa=self.dsa is not None,
            dsa_strategy=strategy or "none",
            seed=derive_seed(est.seed, "eval", iteration),
            device=self.device,
        )
        return result.final_mean, result.final_std, result.best_mean

    def _keep_best(self, iteration: int) -> None:
        """Write ``best_images.safetensors`` when ``iteration``'s tracking accuracy is the
        best so far (ties keep the earlier one), as the reference keeps its best checkpoint.
        Decided from the log, so a resumed run keeps the same file."""
        from leanaug.distill.evaluate import save_image_set

        evals = [
            (r["eval_accuracy"], r["iteration"])
            for r in self.rows
            if r.get("eval_accuracy") is not None and not pd.isna(r["eval_accuracy"])
        ]
        if not evals:
            return
        best = max(evals, key=lambda e: (e[0], -e[1]))
        if best[1] != iteration:
            return
        save_image_set(
            self.out / BEST_IMAGES_NAME,
            self.images.detach().cpu(),
            self.labels.cpu(),
            lr=self.alpha(),
            metadata={
                "experts": str(self.experts_dir),
                "method": "trajectory matching (MTT), best tracking checkpoint",
                "iteration": iteration,
                "tracking_accuracy": best[0],
                "settings": self._settings(),
            },
        )

    def _diverged(self, iteration: int, what: str) -> None:
        self._write_log()
        where = (
            f"the last good checkpoint (iteration {self.last_checkpoint}) is kept in {self.out / CHECKPOINT_NAME}"
            if self.last_checkpoint is not None
            else "no checkpoint was written yet"
        )
        raise DistillationDiverged(
            f"distillation stopped at iteration {iteration}: {what} (try a smaller --lr-img, "
            f"--max-image-step, --lr-lr, --lr-teacher, --syn-steps or --max-start-epoch); {where}"
        )

    # ------------------------------------------------------------------ one iteration
    def _first_row(self) -> None:
        """Iteration 0 of a fresh run: the starting images' row (with their tracking
        accuracy when evaluating), their grid, a checkpoint and, when evaluating, the best
        images so far."""
        evaluating = self.est.eval_every > 0
        acc = self._evaluate(0) if evaluating else (None, None, None)
        self.rows.append(
            dict(
                iteration=0,
                alpha=self.alpha(),
                eval_accuracy=acc[0],
                eval_accuracy_std=acc[1],
                eval_best_accuracy=acc[2],
            )
        )
        self._grid(0)
        self._checkpoint(0)
        if evaluating:
            self._keep_best(0)

    def _match(self, it: int) -> tuple[Any, dict[str, Any]]:
        """Draw iteration ``it``'s expert, start epoch and student plan (in this order,
        from the iteration's own generator) and match gradients; returns the result and
        the iteration's row."""
        est = self.est
        gen = torch_generator(est.seed, "iteration", it)
        e = int(torch.randint(len(self.experts), (1,), generator=gen))
        t = int(torch.randint(self.max_start, (1,), generator=gen))
        plan = plan_student(self.images.shape[0], est.syn_steps, est.batch_syn, gen)
        start, target = expert_segment(self.experts[e].trajectory, t, est.expert_epochs)
        alpha = self.log_alpha.detach().exp()
        res = match_gradients(
            self.model,
            start.to(self.device),
            target.to(self.device),
            self.images.detach(),
            self.labels,
            alpha,
            plan,
            self.dsa,
            est.memory,
            est.theta_store,
        )
        row = dict(
            iteration=it,
            expert=e,
            start_epoch=t,
            loss=float(res.loss),
            alpha=float(alpha),
            grad_norm=float(res.grad_images.norm()),
            alpha_grad=float(res.grad_alpha),
        )
        return res, row

    def _check_match(self, it: int, row: dict[str, Any]) -> None:
        """Stop the run (``_diverged``, with ``row`` logged) on a non-finite or too large
        matching loss, a non-finite gradient, or a loss that keeps growing."""
        est = self.est
        loss = row["loss"]
        if not math.isfinite(loss) or loss > est.loss_limit:
            self.rows.append(row)
            self._diverged(
                it,
                f"matching loss {loss:.4g} is {'not finite' if not math.isfinite(loss) else f'above the limit {est.loss_limit:g}'}",
            )
        if not (math.isfinite(row["grad_norm"]) and math.isfinite(row["alpha_grad"])):
            self.rows.append(row)
            self._diverged(it, "the gradient is not finite")
        grown = loss_growth_reason(
            [r["loss"] for r in self.rows if r.get("loss") is not None] + [loss],
            est.loss_growth,
        )
        if grown is not None:
            self.rows.append(row)
            self._diverged(it, grown)

    def _update(self, it: int, res: Any, row: dict[str, Any]) -> None:
        """Step the images (bounded step, logged as ``image_step``) and log alpha; stop the
        run when the new alpha or an image is not finite."""
        est = self.est
        before = self.images.detach().clone()
        self.images.grad = bounded_image_gradient(
            res.grad_images.to(self.images.dtype), est.lr_img, est.max_image_step
        )
        self.opt_img.step()
        row["image_step"] = float((self.images.detach() - before).pow(2).mean().sqrt())
        step_log_alpha_(self.opt_lr, self.log_alpha, res.grad_alpha)
        self.images.grad = None
        new_alpha = self.alpha()
        if not (math.isfinite(new_alpha) and new_alpha > 0) or not bool(
            torch.isfinite(self.images).all()
        ):
            self.rows.append(row)
            self._diverged(
                it, f"after the update alpha is {new_alpha:.4g} or an image is not finite"
            )

    def _evaluates_at(self, it: int) -> bool:
        est = self.est
        return est.eval_every > 0 and (it % est.eval_every == 0 or it == est.iterations)

    def _iteration(self, it: int) -> dict[str, Any]:
        """One distillation iteration: match, check, update, time it (``seconds``, not
        counting evaluation) and, when due, evaluate and draw the grid; returns its row."""
        tic = time.perf_counter()
        res, row = self._match(it)
        self._check_match(it, row)
        self._update(it, res, row)
        row["seconds"] = time.perf_counter() - tic
        if self._evaluates_at(it):
            acc = self._evaluate(it)
            row.update(eval_accuracy=acc[0], eval_accuracy_std=acc[1], eval_best_accuracy=acc[2])
            self._grid(it)
        return row

    # ------------------------------------------------------------------ the loop
    def execute(self) -> None:
        from leanaug.progress import Progress

        self._load_experts()
        self._prepare()
        est = self.est
        if self.start == 0 and not self.rows:
            self._first_row()
        with Progress(disable=not self.progress) as bar:
            task = bar.add_task(
                "distilling", total=est.iterations, completed=min(self.start, est.iterations)
            )
            for it in range(self.start + 1, est.iterations + 1):
                row = self._iteration(it)
                self.rows.append(row)
                evaluate_now = self._evaluates_at(it)
                if evaluate_now:
                    self._keep_best(it)
                if evaluate_now or it == est.iterations or it % est.checkpoint_every == 0:
                    self._checkpoint(it)
                acc_text = (
                    "" if row.get("eval_accuracy") is None else f" acc {row['eval_accuracy']:.3f}"
                )
                bar.update(
                    task,
                    advance=1,
                    description=f"distilling | loss {row['loss']:.4f} alpha {self.alpha():.3g}{acc_text}",
                )
                if self.on_iteration is not None:
                    self.on_iteration(it)
        self._finish()

    def _finish(self) -> None:
        from leanaug.distill.evaluate import save_image_set

        self._write_log()
        save_image_set(
            self.out / IMAGES_NAME,
            self.images.detach().cpu(),
            self.labels.cpu(),
            lr=self.alpha(),
            metadata={
                "experts": str(self.experts_dir),
                "method": "trajectory matching (MTT)",
                "iterations": self.est.iterations,
                "settings": self.est.get_params(),
            },
        )
        save_grid(self.out / "images.png", self._display(), self.labels, self.num_classes)
