"""Trajectory matching: the student, the loss and its gradient (issue #6)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from leanaug.distill.matching import (
    match_gradients,
    matching_loss,
    plan_student,
    unroll_student,
)
from leanaug.distill.networks import ConvNet, FlatModel


def _net(channels=1, classes=3, size=8, width=4, seed=0):
    torch.manual_seed(seed)
    return ConvNet(channels, classes, (size, size), width=width, depth=2).double()


def test_plan_cuts_permutations_into_minibatches():
    plan = plan_student(10, 7, 4, torch.Generator().manual_seed(0))
    sizes = [len(b) for b in plan.batches]
    assert sizes == [4, 4, 2, 4, 4, 2, 4]
    for start in (0, 3):  # each pass over the chunks is a permutation of all images
        assert sorted(torch.cat(plan.batches[start : start + 3]).tolist()) == list(range(10))
    everything = plan_student(10, 3, None, torch.Generator().manual_seed(0))
    assert all(sorted(b.tolist()) == list(range(10)) for b in everything.batches)
    again = plan_student(10, 7, 4, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(plan.batches, again.batches, strict=True))
    assert plan.aug_seeds == again.aug_seeds


def test_student_on_real_data_lands_on_torch_sgd():
    """alpha = the expert's lr, same batches, no DSA: exactly torch.optim.SGD's parameters."""
    net = _net(size=12, width=6)
    model = FlatModel(net)
    theta0 = model.flat_parameters()
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(20, 1, 12, 12, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (20,), generator=gen)
    lr = 0.05
    plan = plan_student(20, 9, 6, torch.Generator().manual_seed(2))

    theta_n = unroll_student(model, theta0, images, labels, lr, plan, augment=None)

    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.0)
    for idx in plan.batches:
        opt.zero_grad()
        F.cross_entropy(net(images[idx]), labels[idx]).backward()
        opt.step()
    reference = model.flat_parameters()
    assert not torch.allclose(reference, theta0)
    assert torch.allclose(theta_n, reference, rtol=0, atol=1e-10)
    # and the differentiable (create_graph) unroll computes the same point
    graph = unroll_student(
        model,
        theta0,
        images,
        labels,
        torch.tensor(lr, dtype=torch.float64),
        plan,
        create_graph=True,
    )
    assert torch.allclose(graph.detach(), reference, rtol=0, atol=1e-10)


@pytest.mark.parametrize("memory", ["unrolled", "constant"])
def test_gradient_matches_finite_differences(memory):
    dsa = pytest.importorskip("leanaug.distill.dsa").DSA()
    net = _net(channels=3, size=8, width=4, seed=3)
    model = FlatModel(net)
    theta0 = model.flat_parameters()
    target = theta0 + 0.05 * torch.randn(
        theta0.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64
    )
    gen = torch.Generator().manual_seed(5)
    images = torch.randn(6, 3, 8, 8, generator=gen, dtype=torch.float64)
    labels = torch.arange(3).repeat(2)
    alpha = torch.tensor(0.05, dtype=torch.float64)
    plan = plan_student(6, 5, 4, torch.Generator().manual_seed(6))

    def loss(x, a):
        theta_n = unroll_student(model, theta0, x, labels, a, plan, dsa)
        return float(matching_loss(theta_n, theta0, target))

    result = match_gradients(model, theta0, target, images, labels, alpha, plan, dsa, memory)
    assert float(result.loss) == pytest.approx(loss(images, alpha), rel=1e-12)
    eps = 1e-6
    pick = torch.randperm(images.numel(), generator=torch.Generator().manual_seed(7))[:12]
    for flat in pick.tolist():
        up, down = images.clone(), images.clone()
        up.view(-1)[flat] += eps
        down.view(-1)[flat] -= eps
        fd = (loss(up, alpha) - loss(down, alpha)) / (2 * eps)
        assert result.grad_images.view(-1)[flat].item() == pytest.approx(fd, rel=1e-5, abs=1e-9)
    fd_alpha = (loss(images, alpha + eps) - loss(images, alpha - eps)) / (2 * eps)
    assert result.grad_alpha.item() == pytest.approx(fd_alpha, rel=1e-6)
