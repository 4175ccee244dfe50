"""Matching objectives over ``K`` independent draws of the student's endpoint (issue 19).

A student starts at an expert's ``theta*_t`` and takes ``N`` SGD steps on (augmented)
images; with a random augmentation (phi's noise, DSA) its endpoint ``theta_N`` is random.
Over ``K`` independent augmentation draws on the *same* batch plan and start point, with
``r_k = theta_N^(k) - theta*_{t+M}`` and ``D = ||theta*_t - theta*_{t+M}||^2``:

``matching`` (``draws=1``, the default: MTT's loss, bit for bit)
    ``(1/K) sum_k ||r_k||^2 / D``. Its expectation is
    ``(||E theta_N - theta*||^2 + tr Var(theta_N)) / D``: noise in the student's
    trajectory is penalised, whatever it does to the mean.
``matching-unbiased`` (``draws=2``)
    The U-statistic ``sum_{j != k} <r_j, r_k> / (K (K - 1)) / D``
    (``= (||sum_k r_k||^2 - sum_k ||r_k||^2) / (K (K - 1)) / D``, computed from the pairs
    to avoid the cancellation): unbiased for ``||E theta_N - theta*||^2 / D``, the squared
    bias alone, because ``E <r_j, r_k> = <E r_j, E r_k>`` for independent draws. A single
    value can be negative. Its gradient is the gradient of that unbiased estimate and
    reaches every draw: ``dL/dr_k = 2 sum_{j != k} r_j / (K (K - 1) D)``.

Each objective gives its value (:meth:`Objective.loss`, differentiable by autograd, for
``memory="unrolled"``) and its adjoints ``dL/dtheta_N^(k)`` in closed form
(:meth:`Objective.adjoints`, for the hand-written reverse pass of ``memory="constant"``).
:func:`match_objective` unrolls the ``K`` draws and returns the value and the gradients
with respect to each draw's images and the step size ``alpha``.

Draws. Draw 0 is the iteration's own (its plan's DSA seeds, its phi noise); draw ``k >= 1``
uses the same batches with fresh DSA seeds (:func:`redraw_plan`) and fresh phi noise, both
from a generator seeded by the iteration's identity and ``("draw", k)``
(:func:`draw_generator`), so ``K = 1`` is exactly today's iteration and the draws of a
resumed run are those of an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from leanaug.distill.matching import (
    Augment,
    StudentPlan,
    check_memory_options,
    matching_loss,
    reverse_pass,
    stage_plan,
    store_forward,
    unroll_student,
)
from leanaug.distill.networks import FlatModel
from leanaug.errors import LeanaugError, ParameterError
from leanaug.registry import Registry
from leanaug.seeding import torch_generator

DEFAULT_OBJECTIVE = "matching"


def _denominator(theta_start: Tensor, theta_target: Tensor) -> Tensor:
    """``||theta*_t - theta*_{t+M}||^2``, checked as :func:`matching_loss` checks it."""
    denom = (theta_start - theta_target).pow(2).sum()
    if not torch.isfinite(denom) or denom <= 0:
        raise LeanaugError(
            "expert start and target parameters coincide: the matching loss is undefined"
        )
    return denom


class Objective:
    """Base class: a normalised loss of ``K`` student endpoints against an expert segment.

    Subclasses set :attr:`name` and :attr:`draws` and implement :meth:`loss` and
    :meth:`adjoints`.
    """

    name: str = ""
    draws: int = 1

    def __init__(self, draws: int = 1) -> None:
        self.draws = int(draws)

    def params(self) -> dict[str, Any]:
        """The objective's parameters (every one, defaults included)."""
        return {"draws": self.draws}

    def spec(self) -> str:
        """``"name:key=value,..."``: the canonical text stored in a run's settings."""
        from leanaug.experiments.config import format_spec

        return format_spec(self.name, self.params())

    def _check(self, thetas: Sequence[Tensor]) -> None:
        if len(thetas) != self.draws:
            raise LeanaugError(
                f"objective {self.spec()!r} needs {self.draws} endpoints, got {len(thetas)}"
            )

    def loss(self, thetas: Sequence[Tensor], theta_start: Tensor, theta_target: Tensor) -> Tensor:
        """The normalised loss of the endpoints ``thetas`` (one per draw)."""
        raise NotImplementedError

    def adjoints(
        self, thetas: Sequence[Tensor], theta_start: Tensor, theta_target: Tensor
    ) -> list[Tensor]:
        """``dL/dtheta_N^(k)`` for every draw ``k`` (the endpoints taken as given)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec()!r})"


OBJECTIVES: Registry[type[Objective]] = Registry("objective")


@OBJECTIVES.register("matching")
class MatchingObjective(Objective):
    """MTT's matching loss ``||theta_N - theta*||^2 / D``, averaged over ``draws`` draws.

    With ``draws=1`` the value and the adjoint are the very expressions of
    :func:`leanaug.distill.matching.match_gradients`, so a run gives today's numbers.

    Parameters
    ----------
    draws : int
        Independent augmentation draws ``K`` (at least 1); the loss is the mean of their
        matching losses (the same expectation, less variance, ``K`` times the cost).

    Examples
    --------
    >>> import torch
    >>> start, target = torch.zeros(2), torch.tensor([1.0, 0.0])
    >>> OBJECTIVES.create("matching").loss([torch.tensor([0.5, 0.5])], start, target)
    tensor(0.5000)
    """

    name = "matching"

    def __init__(self, draws: int = 1) -> None:
        if int(draws) < 1:
            raise ParameterError(f"objective 'matching': draws must be at least 1, got {draws}")
        super().__init__(draws)

    def params(self) -> dict[str, Any]:
        return {} if self.draws == 1 else {"draws": self.draws}

    def loss(self, thetas, theta_start, theta_target):
        self._check(thetas)
        if self.draws == 1:
            return matching_loss(thetas[0], theta_start, theta_target)
        denom = _denominator(theta_start, theta_target)
        return torch.stack([(t - theta_target).pow(2).sum() for t in thetas]).mean() / denom

    def adjoints(self, thetas, theta_start, theta_target):
        self._check(thetas)
        denom = (theta_start - theta_target).pow(2).sum()
        if self.draws == 1:  # match_gradients' own expression
            return [2.0 * (thetas[0] - theta_target) / denom]
        return [2.0 * (t - theta_target) / (denom * self.draws) for t in thetas]


@OBJECTIVES.register("matching-unbiased")
class UnbiasedMatchingObjective(Objective):
    """The U-statistic ``sum_{j != k} <r_j, r_k> / (K (K - 1) D)``, unbiased for the squared
    bias ``||E theta_N - theta*||^2 / D`` of the student's endpoint (module docstring).

    Parameters
    ----------
    draws : int
        Independent augmentation draws ``K`` on the same batch plan (at least 2). More draws
        lower the estimate's variance, not its expectation; each costs one more unroll.

    Examples
    --------
    >>> import torch
    >>> start, target = torch.zeros(2), torch.tensor([1.0, 0.0])
    >>> ends = [torch.tensor([0.5, 0.5]), torch.tensor([0.5, -0.5])]  # mean (0.5, 0)
    >>> OBJECTIVES.create("matching-unbiased").loss(ends, start, target)  # 0.25 - 0.25
    tensor(0.)
    >>> OBJECTIVES.create("matching").loss(ends[:1], start, target)  # bias + noise
    tensor(0.5000)
    """

    name = "matching-unbiased"

    def __init__(self, draws: int = 2) -> None:
        if int(draws) < 2:
            raise ParameterError(
                f"objective 'matching-unbiased': draws must be at least 2 (two independent "
                f"draws make the U-statistic), got {draws}"
            )
        super().__init__(draws)

    def loss(self, thetas, theta_start, theta_target):
        self._check(thetas)
        denom = _denominator(theta_start, theta_target)
        r = [t - theta_target for t in thetas]
        pairs = [torch.dot(r[j], r[k]) for j in range(len(r)) for k in range(j + 1, len(r))]
        k = self.draws
        return 2.0 * torch.stack(pairs).sum() / (k * (k - 1)) / denom

    def adjoints(self, thetas, theta_start, theta_target):
        self._check(thetas)
        denom = (theta_start - theta_target).pow(2).sum()
        r = [t - theta_target for t in thetas]
        k = self.draws
        out = []
        for i in range(k):
            others = torch.stack([r[j] for j in range(k) if j != i]).sum(0)
            out.append(2.0 * others / (k * (k - 1) * denom))
        return out


def build_objective(spec: str | Mapping[str, Any] | Objective | None) -> Objective:
    """An :class:`Objective` from ``"matching"``, ``"matching-unbiased:draws=4"``, a mapping
    ``{name: matching-unbiased, draws: 4}`` or an objective; ``None`` is ``"matching"``.
    Unknown names and parameters raise one line listing the valid ones."""
    from leanaug.experiments.config import parse_spec

    if isinstance(spec, Objective):
        return spec
    if spec is None:
        spec = DEFAULT_OBJECTIVE
    name, params = parse_spec(dict(spec) if isinstance(spec, Mapping) else spec)
    return OBJECTIVES.create(name, params)


def objective_spec(spec: str | Mapping[str, Any] | Objective | None) -> str:
    """The canonical text of an objective (``"matching-unbiased"`` ->
    ``"matching-unbiased:draws=2"``): what a run's settings store and compare."""
    return build_objective(spec).spec()


# --------------------------------------------------------------------------- draws
def draw_generator(base_seed: int, *keys: object, draw: int) -> torch.Generator:
    """The generator of extra draw ``draw >= 1`` of the task ``(base_seed, *keys)`` (e.g.
    ``(seed, "iteration", it)``): seeded from the task's identity and ``("draw", draw)``,
    so it is independent of the task's own generator (draw 0) and of the other draws."""
    if draw < 1:
        raise LeanaugError(
            f"draw 0 is the task's own generator; extra draws start at 1, got {draw}"
        )
    return torch_generator(base_seed, *keys, "draw", draw)


def redraw_plan(plan: StudentPlan, generator: torch.Generator) -> StudentPlan:
    """``plan``'s minibatches with ``N`` fresh DSA seeds from ``generator`` (drawn as
    :func:`leanaug.distill.matching.plan_student` draws them): another augmentation draw on
    the same batch plan."""
    seeds = torch.randint(0, 2**62, (plan.steps,), generator=generator).tolist()
    return StudentPlan(batches=list(plan.batches), aug_seeds=[int(s) for s in seeds])


# --------------------------------------------------------------------------- gradients
@dataclass
class ObjectiveResult:
    """Value and gradients of one objective over ``K`` draws (all detached).

    ``grad_images[k]`` is ``dL/d(images of draw k)``, ``theta_n[k]`` draw ``k``'s endpoint.
    """

    loss: Tensor
    grad_images: list[Tensor]
    grad_alpha: Tensor
    theta_n: list[Tensor]


def match_objective(
    objective: Objective | str,
    model: FlatModel,
    theta_start: Tensor,
    theta_target: Tensor,
    images: Sequence[Tensor],
    labels: Tensor,
    alpha: Tensor,
    plans: Sequence[StudentPlan],
    augment: Augment | None = None,
    memory: str = "unrolled",
    theta_store: str = "device",
) -> ObjectiveResult:
    """The objective over ``K`` draws and its gradients with respect to each draw's images
    and ``alpha``.

    Draw ``k`` trains a student from ``theta_start`` on ``images[k]`` with ``plans[k]``
    (the same minibatches for every ``k``, the draw's own DSA seeds). ``memory``:
    ``"unrolled"`` (autograd through the ``K`` unrolls, all alive at once),
    ``"constant"`` (exact; ``K`` graph-free forward passes store their ``theta_i``, then
    one reverse pass per draw from the objective's closed-form adjoint: ``K`` times the
    stored parameters of :func:`leanaug.distill.matching.match_gradients`) or ``"tesla"``.
    With ``matching`` and ``K = 1`` the numbers are those of ``match_gradients``, bit for bit.

    Examples
    --------
    >>> import torch
    >>> from leanaug.distill.matching import plan_student
    >>> from leanaug.distill.networks import ConvNet, FlatModel
    >>> _ = torch.manual_seed(0)
    >>> model = FlatModel(ConvNet(1, 2, (8, 8), width=2, depth=1))
    >>> start = model.flat_parameters().detach()
    >>> target = start + 0.1
    >>> x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 0, 1])
    >>> plan = plan_student(4, 2, 2, torch.Generator().manual_seed(0))
    >>> res = match_objective(
    ...     "matching-unbiased", model, start, target, [x, x + 0.1], y,
    ...     torch.tensor(0.01), [plan, plan])
    >>> len(res.grad_images), res.grad_images[1].shape
    (2, torch.Size([4, 1, 8, 8]))
    """
    objective = build_objective(objective)
    check_memory_options(memory, theta_store)
    k = objective.draws
    if len(images) != k or len(plans) != k:
        raise LeanaugError(
            f"objective {objective.spec()!r} takes {k} draws; got {len(images)} image sets "
            f"and {len(plans)} plans"
        )
    first = plans[0].batches
    for plan in plans[1:]:
        if len(plan.batches) != len(first) or not all(
            torch.equal(a.cpu(), b.cpu()) for a, b in zip(plan.batches, first, strict=True)
        ):
            raise LeanaugError("the draws of one objective must share the batch plan")
    theta_start = theta_start.detach()
    theta_target = theta_target.detach()
    staged = [stage_plan(p, augment, im) for p, im in zip(plans, images, strict=True)]
    if memory == "unrolled":
        xs = [im.detach().requires_grad_(True) for im in images]
        a = alpha.detach().clone().requires_grad_(True)
        thetas = [
            unroll_student(model, theta_start, x, labels, a, p, augment, create_graph=True)
            for x, p in zip(xs, staged, strict=True)
        ]
        loss = objective.loss(thetas, theta_start, theta_target)
        *grad_x, grad_a = torch.autograd.grad(loss, [*xs, a])
        return ObjectiveResult(loss.detach(), list(grad_x), grad_a, [t.detach() for t in thetas])
    host = theta_store == "host"
    stored = [
        store_forward(model, theta_start, im, labels, alpha, p, augment, host)
        for im, p in zip(images, staged, strict=True)
    ]
    thetas = [s.theta_n for s in stored]
    loss = objective.loss(thetas, theta_start, theta_target)
    lams = objective.adjoints(thetas, theta_start, theta_target)
    grad_x, grad_a = [], None
    for s, im, p, lam in zip(stored, images, staged, lams, strict=True):
        gx, ga = reverse_pass(
            model, s, im, labels, alpha, p, augment, lam, exact=memory == "constant"
        )
        grad_x.append(gx)
        grad_a = ga if grad_a is None else grad_a + ga
        del s.thetas[:]  # this draw's stored parameters are no longer needed
    assert grad_a is not None
    return ObjectiveResult(loss.detach(), grad_x, grad_a.reshape(alpha.shape), thetas)
