"""The static-shape matching iteration (CUDA graph form) against the eager one."""

from __future__ import annotations

import pytest
import torch

from leanaug.distill.dsa import DSA
from leanaug.distill.graphs import GraphedMatch, masked_dsa, pack_plan, static_match
from leanaug.distill.matching import match_gradients, plan_student
from leanaug.distill.networks import ConvNet, FlatModel
from leanaug.errors import LeanaugError


def _problem(dtype=torch.float64, device="cpu"):
    torch.manual_seed(0)
    module = ConvNet(3, 4, (12, 12), width=4, depth=2).to(dtype=dtype, device=device)
    model = FlatModel(module)
    start = model.flat_parameters()
    target = start + 0.05 * torch.randn_like(start)
    images = torch.randn(8, 3, 12, 12, dtype=dtype, device=device)
    labels = torch.arange(4, device=device).repeat_interleave(2)
    return model, start, target, images, labels


def test_masked_dsa_equals_the_group_the_step_picked():
    dsa = DSA()
    images = torch.randn(8, 3, 12, 12, dtype=torch.float64, requires_grad=True)
    plan = plan_student(8, 60, 4, torch.Generator().manual_seed(3))
    static = pack_plan(plan, dsa, (3, 12, 12))
    assert set(static.picks.tolist()) == set(range(len(dsa.groups)))  # every group seen
    for i, seed in enumerate(plan.aug_seeds):
        x = images[plan.batches[i]]
        eager, _ = dsa(x, generator=torch.Generator().manual_seed(seed))
        values = {k: v[i] for k, v in static.values.items()}
        masked = masked_dsa(x, static.picks[i], values, static.groups)
        torch.testing.assert_close(masked, eager, rtol=0, atol=0)
        r = torch.randn_like(eager)
        (g_eager,) = torch.autograd.grad((eager * r).sum(), images, retain_graph=True)
        (g_masked,) = torch.autograd.grad((masked * r).sum(), images)
        torch.testing.assert_close(g_masked, g_eager, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("batch_syn", [None, 4])
@pytest.mark.parametrize("dsa", [DSA(), DSA(mode="all"), None])
def test_static_match_equals_unrolled_match_gradients(batch_syn, dsa):
    model, start, target, images, labels = _problem()
    alpha = torch.tensor(0.05, dtype=torch.float64)
    plan = plan_student(8, 5, batch_syn, torch.Generator().manual_seed(1))
    ref = match_gradients(model, start, target, images, labels, alpha, plan, dsa, "unrolled")
    x = images.clone().requires_grad_(True)
    a = alpha.clone().requires_grad_(True)
    loss, gx, ga = static_match(
        model, start, target, x, labels, a, pack_plan(plan, dsa, (3, 12, 12))
    )
    torch.testing.assert_close(loss, ref.loss, rtol=1e-12, atol=0)
    torch.testing.assert_close(gx, ref.grad_images, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(ga.reshape(()), ref.grad_alpha.reshape(()), rtol=1e-10, atol=0)


def test_static_match_reads_nothing_back_from_the_device():
    # on the meta device any .item(), int() or bool() of a tensor raises; a CUDA graph
    # capture fails the same way on a host read
    model, start, target, images, labels = _problem(dtype=torch.float32)
    meta = torch.device("meta")
    plan = pack_plan(plan_student(8, 3, 4, torch.Generator().manual_seed(1)), DSA(), (3, 12, 12))
    x = images.to(meta).requires_grad_(True)
    a = torch.tensor(0.05, device=meta, requires_grad=True)
    loss, gx, _ = static_match(
        model, start.to(meta), target.to(meta), x, labels.to(meta), a, plan.to(meta)
    )
    assert gx.shape == images.shape and loss.device == meta


def test_pack_plan_needs_equal_batches():
    plan = plan_student(8, 4, 3, torch.Generator().manual_seed(0))  # 3 + 3 + 2
    with pytest.raises(LeanaugError, match="same batch size"):
        pack_plan(plan, DSA(), (3, 12, 12))
    with pytest.raises(LeanaugError, match="per_sample"):
        pack_plan(plan_student(8, 2, 4, torch.Generator()), DSA(per_sample=False), (3, 12, 12))


def test_graphed_match_needs_cuda():
    model, start, target, images, labels = _problem(dtype=torch.float32)
    plan = pack_plan(plan_student(8, 2, 4, torch.Generator()), DSA(), (3, 12, 12))
    with pytest.raises(LeanaugError, match="CUDA"):
        GraphedMatch(model, images, labels, torch.tensor(0.05), start, target, plan)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_graphed_match_replays_the_eager_iteration():
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    model, start, target, images, labels = _problem(dtype=torch.float32, device="cuda")
    alpha = torch.tensor(0.05, device="cuda")
    plans = [
        pack_plan(plan_student(8, 4, 4, torch.Generator().manual_seed(s)), DSA(), (3, 12, 12))
        for s in range(3)
    ]
    graphed = GraphedMatch(model, images, labels, alpha, start, target, plans[0])
    for k, plan in enumerate(plans):  # new plans and images in the same buffers
        imgs = images + 0.1 * k
        out = graphed(imgs, alpha, start, target, plan)
        ref = static_match(
            model,
            start,
            target,
            imgs.clone().requires_grad_(True),
            labels,
            alpha.clone().requires_grad_(True),
            plan.to("cuda"),
        )
        for got, want in zip(out, ref, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
