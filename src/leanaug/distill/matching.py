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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from leanaug.distill.networks import FlatModel
from leanaug.errors import LeanaugError

MEMORY_MODES = ("unrolled", "constant", "tesla")

# ``augment(x, generator=g) -> (x_aug, params)`` draws; ``augment(x, params=params)`` replays
# (the contract of :class:`leanaug.distill.dsa.DSA`). ``None`` means no augmentation.
Augment = Callable[..., Any]


@dataclass
class StudentPlan:
    """Everything random about one iteration's ``N`` student steps, fixed in advance.

    ``batches[i]`` are the indices of the synthetic images used at step ``i``;
    ``aug_seeds[i]`` seeds the DSA draw of step ``i``. Fixing them up front is what lets
    the constant-memory reverse pass replay exactly the forward pass.
    """

    batches: list[Tensor]
    aug_seeds: list[int]

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


def _draw(augment: Augment | None, x: Tensor, seed: int) -> tuple[Tensor, Any]:
    if augment is None:
        return x, None
    # a CPU generator: DSA draws on the generator's device, so CPU and CUDA runs draw alike
    gen = torch.Generator()
    gen.manual_seed(seed)
    out = augment(x, generator=gen)
    return (out[0], out[1]) if isinstance(out, tuple) else (out, None)


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
    for idx, seed in zip(plan.batches, plan.aug_seeds, strict=True):
        x_aug, _ = _draw(augment, images[idx], seed)
        grad = _step_gradient(model, theta, x_aug, labels[idx], create_graph=create_graph)
        if create_graph:
            theta = theta - alpha * grad
        else:
            theta = (theta.detach() - alpha * grad).detach().requires_grad_(True)
    return theta if create_graph else theta.detach()


def matching_loss(theta_n: Tensor, theta_start: Tensor, theta_target: Tensor) -> Tensor:
    """``||theta_N - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2``."""
    denom = (theta_start - theta_target).pow(2).sum()
    if not torch.isfinite(denom) or denom <= 0:
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
) -> MatchResult:
    """The matching loss and ``dL/dimages``, ``dL/dalpha`` (see the module docstring)."""
    if memory not in MEMORY_MODES:
        raise LeanaugError(f"memory mode {memory!r} is not one of {', '.join(MEMORY_MODES)}")
    theta_start = theta_start.detach()
    theta_target = theta_target.detach()
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
    )


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
    model, theta_start, theta_target, images, labels, alpha, plan, augment, exact: bool
) -> MatchResult:
    x_all = images.detach()
    a = alpha.detach()
    # Forward pass without a graph: keep theta_i (N x P) and each step's DSA parameters.
    thetas: list[Tensor] = []
    aug_params: list[Any] = []
    theta = theta_start.clone()
    for idx, seed in zip(plan.batches, plan.aug_seeds, strict=True):
        thetas.append(theta)
        with torch.no_grad():
            x_aug, params = _draw(augment, x_all[idx], seed)
        aug_params.append(params)
        th = theta.clone().requires_grad_(True)
        grad = _step_gradient(model, th, x_aug, labels[idx], create_graph=False)
        theta = (theta - a * grad).detach()
    theta_n = theta
    loss = matching_loss(theta_n, theta_start, theta_target)
    denom = (theta_start - theta_target).pow(2).sum()
    lam = 2.0 * (theta_n - theta_target) / denom  # dL/dtheta_N

    grad_x = torch.zeros_like(x_all)
    grad_a = torch.zeros((), dtype=a.dtype, device=a.device)
    for i in range(plan.steps - 1, -1, -1):
        idx = plan.batches[i]
        th = thetas[i].clone().requires_grad_(True)
        xb = x_all[idx].clone().requires_grad_(True)
        x_aug = _replay(augment, xb, aug_params[i], plan.aug_seeds[i])
        grad = _step_gradient(model, th, x_aug, labels[idx], create_graph=True)
        grad_a = grad_a - torch.dot(grad.detach(), lam)
        need_theta = exact and i > 0  # lam_0 is never used
        inputs = [xb, th] if need_theta else [xb]
        vjps = torch.autograd.grad(grad, inputs, grad_outputs=lam)
        grad_x.index_add_(0, idx.to(grad_x.device), -a * vjps[0])
        if need_theta:
            lam = lam - a * vjps[1]
        del grad, vjps, x_aug
    return MatchResult(
        loss=loss.detach(),
        grad_images=grad_x,
        grad_alpha=grad_a.reshape(alpha.shape),
        theta_n=theta_n,
    )


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
