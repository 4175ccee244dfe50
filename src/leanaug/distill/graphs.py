"""One unrolled matching iteration with a fixed sequence of operations, for CUDA graphs.

Why. On the GPU one matching iteration is bound by dispatching operations, not by
computing them: about 25,000 per iteration at N=30, 9-17 us each, where 10 iterations
per second would allow 4 us (``benchmarks/bench_step_ops.py``, ``docs/performance.md``).
A CUDA graph replays a captured sequence of kernels with no per-operation host cost, but
it can only replay ONE sequence, reading its inputs from fixed buffers. Two things in
:func:`leanaug.distill.matching.match_gradients` change the sequence from one iteration
to the next:

* DSA picks one op group per student step at random, a Python branch. Here every group
  of the strategy is applied at every step and ``torch.where`` on the picked index keeps
  only the picked group's output (:func:`masked_dsa`): the same images and the same
  gradients, with a fixed sequence (and six groups' arithmetic per step: 20-50 % more
  time per iteration on the CPU, ``docs/performance.md``);
* the minibatch indices and the DSA draws are new tensors each step. Here they are packed
  up front into one :class:`StaticPlan` of device tensors (``N x B`` indices, the picks,
  ``N x B`` draws per parameter), which a graph reads and a new plan overwrites in place.

:func:`static_match` is the unrolled iteration written that way; it equals
``match_gradients(..., memory="unrolled")`` (tests, float64) and reads nothing back
from the device. :class:`GraphedMatch` captures it once in a CUDA graph and replays it.

Status: the CPU part is tested; the CUDA capture is **not yet run on a GPU** (no session
had one since it was written), so it is not wired into ``leanaug distill``.
``benchmarks/bench_cuda_graph.py`` times eager against graphed on a GPU and checks that
they give the same gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from leanaug.distill.dsa import _APPLY, DSA
from leanaug.distill.matching import StudentPlan, matching_loss
from leanaug.distill.networks import FlatModel
from leanaug.errors import LeanaugError


def _identity_values(batch: int) -> dict[str, Tensor]:
    """Draws that leave the images unchanged, for the groups a step did not pick (their
    output is discarded by :func:`masked_dsa`; identity keeps it finite). A cutout of
    size 0 cuts nothing, so the DSA's own cutout ratio is not needed here."""
    zeros, ones = torch.zeros(batch), torch.ones(batch)
    long0 = torch.zeros(batch, dtype=torch.long)
    return {
        "brightness.shift": zeros,
        "saturation.factor": ones,
        "contrast.factor": ones,
        "crop.dy": long0,
        "crop.dx": long0,
        "cutout.cy": long0,
        "cutout.cx": long0,
        "cutout.size_y": torch.zeros(1, dtype=torch.long),
        "cutout.size_x": torch.zeros(1, dtype=torch.long),
        "flip.flip": torch.zeros(batch, dtype=torch.bool),
        "scale.sx": ones,
        "scale.sy": ones,
        "rotate.degrees": zeros,
    }


@dataclass
class StaticPlan:
    """A :class:`~leanaug.distill.matching.StudentPlan` as fixed-shape tensors.

    ``batches`` is ``N x B`` indices; ``picks`` the index (into ``groups``) of the DSA
    group each step applies; ``values`` maps each DSA parameter to its ``N x B`` (or
    ``N x 1``) draws, identity values for groups a step did not pick.
    """

    batches: Tensor
    picks: Tensor
    values: dict[str, Tensor]
    groups: tuple[str, ...]

    @property
    def steps(self) -> int:
        return self.batches.shape[0]

    def to(self, device: torch.device | str) -> StaticPlan:
        return StaticPlan(
            self.batches.to(device),
            self.picks.to(device),
            {k: v.to(device) for k, v in self.values.items()},
            self.groups,
        )

    def copy_(self, other: StaticPlan) -> None:
        """Overwrite in place (the buffers a captured graph reads)."""
        if other.groups != self.groups or other.batches.shape != self.batches.shape:
            raise LeanaugError("a static plan can only be overwritten by one of the same shape")
        self.batches.copy_(other.batches, non_blocking=True)
        self.picks.copy_(other.picks, non_blocking=True)
        for k, v in self.values.items():
            v.copy_(other.values[k], non_blocking=True)


def pack_plan(plan: StudentPlan, dsa: DSA | None, image_shape: tuple[int, ...]) -> StaticPlan:
    """Pack ``plan`` and the DSA draws its seeds give (exactly those that
    ``match_gradients`` draws) into a :class:`StaticPlan` on the CPU.

    ``image_shape`` is one image's ``(C, H, W)``. Every step must use the same number of
    images (``batch_syn`` dividing the number of images, or every image each step).
    """
    sizes = {len(b) for b in plan.batches}
    if len(sizes) != 1:
        raise LeanaugError(
            f"a static plan needs the same batch size at every step, got sizes {sorted(sizes)} "
            "(choose batch_syn dividing the number of images)"
        )
    batch = sizes.pop()
    groups: tuple[str, ...] = () if dsa is None else dsa.groups
    if dsa is not None and not dsa.per_sample:
        raise LeanaugError("a static plan needs DSA(per_sample=True), as the student steps use")
    picks: list[int] = []
    columns: dict[str, list[Tensor]] = {}
    for seed in plan.aug_seeds:
        values = _identity_values(batch) if dsa is not None else {}
        if groups:
            # the same generator and draw as matching._draw: a CPU generator seeded per step
            drawn = dsa.sample(
                torch.empty(batch, *image_shape), torch.Generator().manual_seed(seed)
            )
            values.update(drawn.values)
            picks.append(groups.index(drawn.groups[0]) if dsa.mode == "single" else -1)
        else:
            picks.append(-1)
        for k, v in values.items():
            columns.setdefault(k, []).append(v.reshape(-1))
    return StaticPlan(
        batches=torch.stack(list(plan.batches)),
        picks=torch.tensor(picks, dtype=torch.long),
        values={k: torch.stack(v) for k, v in columns.items()},
        groups=groups,
    )


def masked_dsa(
    x: Tensor, pick: Tensor, values: dict[str, Tensor], groups: tuple[str, ...]
) -> Tensor:
    """Apply the group ``groups[pick]`` (``pick`` a 0-d device tensor; ``-1``: every
    group in turn, DSA's ``mode="all"``), computing every group so that the sequence of
    operations does not depend on the pick."""
    out = x
    for g, group in enumerate(groups):
        y = _APPLY[group](out, values)
        out = torch.where((pick == g) | (pick < 0), y, out)
    return out


def static_match(
    model: FlatModel,
    theta_start: Tensor,
    theta_target: Tensor,
    images: Tensor,
    labels: Tensor,
    alpha: Tensor,
    plan: StaticPlan,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(loss, dL/dimages, dL/dalpha)`` of one unrolled iteration, as
    ``match_gradients(..., memory="unrolled")``; ``images`` and ``alpha`` must be leaves
    that require grad. Nothing is read back from the device (the start/target check of
    :func:`~leanaug.distill.matching.matching_loss` is the caller's, once)."""
    theta = theta_start.detach().clone().requires_grad_(True)
    for i in range(plan.steps):
        idx = plan.batches[i]
        step_values = {k: v[i] for k, v in plan.values.items()}
        # index_select, not images[idx]: its backward (index_add_) can be captured, the
        # backward of advanced indexing (index_put_ with accumulate) could not
        x = masked_dsa(images.index_select(0, idx), plan.picks[i], step_values, plan.groups)
        loss = F.cross_entropy(model(theta, x), labels.index_select(0, idx))
        (grad,) = torch.autograd.grad(loss, theta, create_graph=True)
        theta = theta - alpha * grad
    loss = matching_loss(theta, theta_start, theta_target, check=False)
    grad_images, grad_alpha = torch.autograd.grad(loss, [images, alpha])
    return loss.detach(), grad_images, grad_alpha


class GraphedMatch:
    """:func:`static_match` captured once in a CUDA graph and replayed (CUDA only).

    The images, alpha, expert start and target and the plan are copied into fixed
    buffers before each replay; the outputs are returned as copies. Not yet run on a GPU
    (see the module docstring).
    """

    def __init__(
        self,
        model: FlatModel,
        images: Tensor,
        labels: Tensor,
        alpha: Tensor,
        theta_start: Tensor,
        theta_target: Tensor,
        plan: StaticPlan,
        warmup: int = 3,
    ) -> None:
        if images.device.type != "cuda":
            raise LeanaugError(f"CUDA graphs need a CUDA device, got {images.device}")
        self.model = model
        self.images = images.detach().clone().requires_grad_(True)
        self.alpha = alpha.detach().clone().requires_grad_(True)
        self.labels = labels.detach().clone()
        self.start = theta_start.detach().clone()
        self.target = theta_target.detach().clone()
        self.plan = plan.to(images.device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the graph, as torch.cuda.graph asks
            for _ in range(warmup):
                self._run()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = self._run()

    def _run(self) -> tuple[Tensor, Tensor, Tensor]:
        return static_match(
            self.model, self.start, self.target, self.images, self.labels, self.alpha, self.plan
        )

    def __call__(
        self,
        images: Tensor,
        alpha: Tensor,
        theta_start: Tensor,
        theta_target: Tensor,
        plan: StaticPlan,
    ) -> tuple[Tensor, Tensor, Tensor]:
        with torch.no_grad():
            self.images.copy_(images)
            self.alpha.copy_(alpha.reshape(self.alpha.shape))
            self.start.copy_(theta_start)
            self.target.copy_(theta_target)
            self.plan.copy_(plan)
        self.graph.replay()
        return tuple(t.clone() for t in self.outputs)  # type: ignore[return-value]
