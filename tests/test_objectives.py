"""Matching objectives over K draws (issue 19): the U-statistic is unbiased for the squared
bias, `matching` is today's loss bit for bit, gradients are exact, and the CLI takes them."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from leanaug.cli.main import main
from leanaug.distill.augment_training import (
    AugmentDistillation,
    phi_match_gradients,
    phi_match_objective,
    plan_slots,
)
from leanaug.distill.augnet import build_phi
from leanaug.distill.dsa import DSA
from leanaug.distill.matching import StudentPlan, match_gradients, unroll_student
from leanaug.distill.networks import ConvNet, FlatModel
from leanaug.distill.objectives import (
    OBJECTIVES,
    build_objective,
    draw_generator,
    match_objective,
    objective_spec,
    redraw_plan,
)
from leanaug.errors import LeanaugError


@pytest.fixture(autouse=True)
def one_thread():
    # tiny networks: a second intra-op thread costs more than it gives on a loaded 2-core
    # machine (as in test_augnet.py); the results do not depend on the thread count
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --------------------------------------------------------------------------- the estimator
def _linear_student(samples: int, draws: int, seed: int = 0):
    """A linear least-squares student: N SGD steps on batches whose targets carry Gaussian
    noise (the 'augmentation'), so theta_N = c + sum_i B_i eps_i is affine in the noise.

    Returns ``(ends, mean, cov, start, target)``: ``ends`` samples x draws x P endpoints
    simulated step by step, and E theta_N and Var theta_N in closed form."""
    g = torch.Generator().manual_seed(seed)
    p, b, n, alpha, s = 4, 6, 5, 0.3, 3.0
    xs = torch.randn(n, b, p, generator=g, dtype=torch.float64)
    ys = torch.randn(n, b, generator=g, dtype=torch.float64)
    start = torch.randn(p, generator=g, dtype=torch.float64)
    # closed form: theta_N = A theta_0 + sum_i B_i (y_i + s eps_i), with B_i
    # = (prod_{j > i} (I - alpha X_j^T X_j / b)) alpha X_i^T / b
    eye = torch.eye(p, dtype=torch.float64)
    steps = [eye - alpha * xs[i].T @ xs[i] / b for i in range(n)]
    mean, cov = start.clone(), torch.zeros(p, p, dtype=torch.float64)
    for i in range(n):
        mean = steps[i] @ mean + alpha * xs[i].T @ ys[i] / b
        cov = steps[i] @ cov @ steps[i].T
        bi = s * alpha * xs[i].T / b
        cov = cov + bi @ bi.T
    target = mean + 0.8 * torch.randn(p, generator=g, dtype=torch.float64)  # a biased student
    # simulation: every (sample, draw) with its own noise, through the SGD recursion
    theta = start.expand(samples, draws, p).clone()
    for i in range(n):
        eps = torch.randn(samples, draws, b, generator=g, dtype=torch.float64)
        resid = theta @ xs[i].T - (ys[i] + s * eps)  # samples x draws x b
        theta = theta - alpha * resid @ xs[i] / b
    return theta, mean, cov, start, target


@pytest.mark.parametrize("draws", [2, 4])
def test_u_statistic_is_unbiased_for_the_squared_bias_and_mse_adds_the_variance(draws):
    ends, mean, cov, start, target = _linear_student(samples=20000, draws=draws)
    denom = float((start - target).pow(2).sum())
    bias2 = float((mean - target).pow(2).sum()) / denom
    trace = float(torch.trace(cov)) / denom
    assert 0.2 < trace / bias2 < 5  # the noise matters as much as the bias
    unbiased = OBJECTIVES.create("matching-unbiased", {"draws": draws})
    mse = OBJECTIVES.create("matching", {"draws": draws})
    u = torch.stack([unbiased.loss(list(e), start, target) for e in ends])
    m = torch.stack([mse.loss(list(e), start, target) for e in ends])
    se_u = float(u.std() / len(u) ** 0.5)
    se_m = float(m.std() / len(m) ** 0.5)
    assert abs(float(u.mean()) - bias2) < 4 * se_u, (float(u.mean()), bias2, se_u)
    assert abs(float(m.mean()) - (bias2 + trace)) < 4 * se_m, (float(m.mean()), bias2 + trace)
    assert float(m.mean()) - bias2 > 20 * se_m  # the MSE really is biased by tr Var
    if draws == 2:  # single U values can be negative; their mean is not
        assert (u < 0).any()
    # the identity behind the estimator: U = (||sum r||^2 - sum ||r||^2) / (K (K-1) D)
    r = ends[0] - target
    gram = (r.sum(0).pow(2).sum() - r.pow(2).sum()) / (draws * (draws - 1) * denom)
    assert float(u[0]) == pytest.approx(float(gram), rel=1e-10)


@pytest.mark.parametrize(
    ("name", "draws"),
    [("matching", 1), ("matching", 3), ("matching-unbiased", 2), ("matching-unbiased", 3)],
)
def test_closed_form_adjoints_are_the_autograd_gradient(name, draws):
    g = torch.Generator().manual_seed(1)
    start, target = torch.randn(2, 7, generator=g, dtype=torch.float64)
    thetas = [
        torch.randn(7, generator=g, dtype=torch.float64).requires_grad_() for _ in range(draws)
    ]
    obj = OBJECTIVES.create(name, {"draws": draws})
    grads = torch.autograd.grad(obj.loss(thetas, start, target), thetas)
    for got, want in zip(obj.adjoints(thetas, start, target), grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


def test_objective_specs_and_errors():
    assert objective_spec(None) == "matching" == objective_spec("matching:draws=1")
    assert objective_spec("matching-unbiased") == "matching-unbiased:draws=2"
    assert build_objective({"name": "matching-unbiased", "draws": 4}).draws == 4
    with pytest.raises(LeanaugError, match="valid names: matching, matching-unbiased"):
        build_objective("nosuch")
    with pytest.raises(LeanaugError, match="at least 2"):
        build_objective("matching-unbiased:draws=1")
    with pytest.raises(LeanaugError, match="valid parameters: draws: int = 2"):
        build_objective("matching-unbiased:k=3")
    start, target = torch.zeros(3), torch.zeros(3)
    with pytest.raises(LeanaugError, match="coincide"):
        build_objective("matching-unbiased").loss([start, start], start, target)


def test_extra_draws_share_the_batches_and_are_seeded_from_the_task():
    plan = plan_slots(20, 4, 5, torch.Generator().manual_seed(0)).plan
    one = redraw_plan(plan, draw_generator(0, "iteration", 3, draw=1))
    again = redraw_plan(plan, draw_generator(0, "iteration", 3, draw=1))
    two = redraw_plan(plan, draw_generator(0, "iteration", 3, draw=2))
    assert all(torch.equal(a, b) for a, b in zip(one.batches, plan.batches, strict=True))
    assert one.aug_seeds == again.aug_seeds
    assert len({tuple(plan.aug_seeds), tuple(one.aug_seeds), tuple(two.aug_seeds)}) == 3
    with pytest.raises(LeanaugError, match="extra draws start at 1"):
        draw_generator(0, "iteration", 3, draw=0)


# --------------------------------------------------------------------------- gradients
def _setting(dtype):
    torch.manual_seed(3)
    model = FlatModel(ConvNet(1, 3, (8, 8), width=4, depth=2).to(dtype))
    theta0 = model.flat_parameters().detach()
    target = theta0 + 0.05 * torch.randn(
        theta0.shape, generator=torch.Generator().manual_seed(4), dtype=dtype
    )
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(6, 1, 8, 8, generator=gen, dtype=dtype)
    y = torch.arange(6) % 3
    slots = plan_slots(6, 3, 4, torch.Generator().manual_seed(6))
    return model, theta0, target, x[slots.images], y[slots.images], slots


def _phi(family, dtype):
    torch.manual_seed(7)
    options = {"width": 2, "noise_channels": 1} if family == "residual" else {"width": 2}
    phi = build_phi(family, 1, (8, 8), 3, options=options).to(dtype)
    with torch.no_grad():  # off the identity, so that every weight gets a gradient
        for p in phi.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return phi


@pytest.mark.parametrize("memory", ["unrolled", "constant"])
def test_matching_through_the_new_path_is_todays_loss_bit_for_bit(memory):
    model, theta0, target, xs, ys, slots = _setting(torch.float32)
    alpha = torch.tensor(0.1)
    out = []
    for new in (False, True):
        phi = _phi("residual", torch.float32)
        noise = phi.sample_noise(xs, torch.Generator().manual_seed(8))
        if new:
            res, zs = phi_match_objective(
                phi,
                model,
                theta0,
                target,
                xs,
                ys,
                None,
                [noise],
                alpha,
                [slots.plan],
                DSA(),
                memory,
                objective="matching",
            )
            res_x, z = res.grad_images[0], zs[0]
        else:
            res, z = phi_match_gradients(
                phi, model, theta0, target, xs, ys, None, noise, alpha, slots.plan, DSA(), memory
            )
            res_x = res.grad_images
        out.append((res.loss, res.grad_alpha, res_x, z, [p.grad for p in phi.parameters()]))
    (l0, a0, x0, z0, g0), (l1, a1, x1, z1, g1) = out
    assert torch.equal(l0, l1) and torch.equal(a0, a1) and torch.equal(x0, x1)
    assert torch.equal(z0, z1)
    assert all(torch.equal(u, v) for u, v in zip(g0, g1, strict=True))
    # and match_objective itself is match_gradients
    ref = match_gradients(model, theta0, target, z0, ys, alpha, slots.plan, DSA(), memory)
    got = match_objective(
        "matching", model, theta0, target, [z0], ys, alpha, [slots.plan], DSA(), memory
    )
    assert torch.equal(ref.loss, got.loss) and torch.equal(ref.grad_alpha, got.grad_alpha)
    assert torch.equal(ref.grad_images, got.grad_images[0])


@pytest.mark.parametrize(
    ("family", "memory", "draws"),
    [("residual", "unrolled", 2), ("residual", "constant", 3), ("transform", "constant", 2)],
)
def test_unbiased_gradient_matches_finite_differences(family, memory, draws):
    """dL/dw for every phi weight and dL/dalpha of the U-statistic equal central finite
    differences (float64, fixed noise and DSA draws); the gradient flows through every draw."""
    model, theta0, target, xs, ys, slots = _setting(torch.float64)
    phi = _phi(family, torch.float64)
    dsa = DSA("color_crop_scale")  # differentiable after phi, replayed from the seeds
    plans = [slots.plan] + [
        redraw_plan(slots.plan, draw_generator(0, "t", draw=k)) for k in range(1, draws)
    ]
    noises = [phi.sample_noise(xs, torch.Generator().manual_seed(10 + k)) for k in range(draws)]
    objective = build_objective(f"matching-unbiased:draws={draws}")
    alpha = torch.tensor(0.1, dtype=torch.float64)

    def loss_value(a=alpha):
        with torch.no_grad():
            zs = [phi(xs, n, labels=ys) for n in noises]
        with torch.enable_grad():
            ends = [
                unroll_student(model, theta0, z, ys, a, p, dsa)
                for z, p in zip(zs, plans, strict=True)
            ]
        return float(objective.loss(ends, theta0, target))

    phi.zero_grad()
    res, _ = phi_match_objective(
        phi,
        model,
        theta0,
        target,
        xs,
        ys,
        None,
        noises,
        alpha,
        plans,
        dsa,
        memory,
        objective=objective,
    )
    assert float(res.loss) == pytest.approx(loss_value(), rel=1e-10)
    assert all(g.abs().max() > 0 for g in res.grad_images)  # every draw gets a gradient
    eps = 1e-6
    fd = (loss_value(alpha + eps) - loss_value(alpha - eps)) / (2 * eps)
    assert float(res.grad_alpha) == pytest.approx(fd, rel=1e-5, abs=1e-10)
    params = dict(phi.named_parameters())
    gen = torch.Generator().manual_seed(9)
    for name, p in params.items():
        assert p.grad is not None and p.grad.abs().max() > 0, name
        flat = int(torch.randint(p.numel(), (1,), generator=gen))
        with torch.no_grad():
            p.view(-1)[flat] += eps
            up = loss_value()
            p.view(-1)[flat] -= 2 * eps
            down = loss_value()
            p.view(-1)[flat] += eps
        assert p.grad.view(-1)[flat].item() == pytest.approx(
            (up - down) / (2 * eps), rel=1e-5, abs=1e-10
        ), name


def test_draws_must_share_the_batch_plan():
    model, theta0, target, xs, ys, slots = _setting(torch.float64)
    other = StudentPlan([b.flip(0) for b in slots.plan.batches], slots.plan.aug_seeds)
    with pytest.raises(LeanaugError, match="share the batch plan"):
        match_objective(
            "matching-unbiased",
            model,
            theta0,
            target,
            [xs, xs],
            ys,
            torch.tensor(0.1, dtype=torch.float64),
            [slots.plan, other],
        )
    with pytest.raises(LeanaugError, match="takes 2 draws"):
        match_objective(
            "matching-unbiased",
            model,
            theta0,
            target,
            [xs],
            ys,
            torch.tensor(0.1, dtype=torch.float64),
            [slots.plan],
        )


# --------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def tiny_experts(tmp_path_factory):
    """1 expert x 2 epochs on sklearn digits (8x8), width 8, depth 2, via the CLI."""
    out = tmp_path_factory.mktemp("experts")
    argv = ["distill", "experts", "--dataset", "digits", "--experts", "1", "--epochs", "2"]
    argv += ["--width", "8", "--depth", "2", "--batch-size", "128", "--lr", "0.05"]
    with pytest.raises(SystemExit) as info:
        main([*argv, "--out", str(out), "--device", "cpu"])
    assert info.value.code in (0, None)
    return out


def _augment(experts, out, *extra):
    argv = ["distill", "augment", "--experts", str(experts), "--out", str(out)]
    argv += ["--phi", "transform", "--phi-options", "{width: 4}", "--subset", "0.1"]
    argv += ["--syn-steps", "2", "--batch", "16", "--max-start-epoch", "2"]
    argv += ["--picture-every", "0", "--checkpoint-every", "1", "--device", "cpu", *extra]
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code


def test_cli_augment_with_the_unbiased_objective(tiny_experts, tmp_path, capsys):
    out = tmp_path / "unbiased"
    code = _augment(tiny_experts, out, "--objective", "matching-unbiased", "--iterations", "3")
    assert code in (0, None)
    printed = capsys.readouterr()
    assert "objective matching-unbiased" in " ".join(printed.err.split())  # rich wraps lines
    assert "iterations: matching-unbiased:draws=2 loss" in printed.out
    settings = json.loads((out / "augment_config.json").read_text())
    assert settings["objective"] == "matching-unbiased:draws=2"
    log = pd.read_parquet(out / "log.parquet")
    assert list(log["iteration"]) == [1, 2, 3]
    assert log["loss"].notna().all() and log["loss_identity"].notna().all()
    assert (log["grad_norm"] > 0).all()
    # the same iteration with MTT's loss: same expert, start epoch and batches, other loss
    plain = tmp_path / "plain"
    assert _augment(tiny_experts, plain, "--iterations", "1") in (0, None)
    first = pd.read_parquet(plain / "log.parquet").iloc[0]
    assert (first["expert"], first["start_epoch"]) == (log["expert"][0], log["start_epoch"][0])
    assert first["loss_identity"] != log["loss_identity"][0]
    # a resume with another objective is refused, in one line
    capsys.readouterr()
    assert _augment(tiny_experts, out, "--objective", "matching", "--iterations", "4") == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    want = "other settings (objective: 'matching-unbiased:draws=2' there, 'matching' now)"
    assert len(errors) == 1 and want in errors[0], errors
    # an old settings file without the key means "matching": it resumes as such
    path = plain / "augment_config.json"
    old = json.loads(path.read_text())
    del old["objective"]
    path.write_text(json.dumps(old))
    assert _augment(tiny_experts, plain, "--iterations", "2") in (0, None)
    assert list(pd.read_parquet(plain / "log.parquet")["iteration"]) == [1, 2]


@pytest.mark.parametrize(
    ("objective", "message"),
    [
        ("nosuch", "unknown objective 'nosuch'; valid names: matching, matching-unbiased"),
        ("matching-unbiased:draws=1", "draws must be at least 2"),
    ],
)
def test_cli_augment_bad_objective_is_one_line(tmp_path, capsys, objective, message):
    assert _augment(tmp_path / "no-experts", tmp_path / "out", "--objective", objective) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and message in err, err


def test_estimator_resumes_the_same_unbiased_run(tiny_experts, tmp_path):
    """Draws seeded from the iteration: 2 + 1 resumed iterations are 3 in one go."""
    kw = dict(
        phi="transform",
        phi_options={"width": 4},
        subset=0.1,
        syn_steps=2,
        batch=16,
        max_start_epoch=2,
        picture_every=0,
        checkpoint_every=1,
        device="cpu",
        objective="matching-unbiased:draws=3",
    )
    whole = AugmentDistillation(iterations=3, **kw).fit(
        tiny_experts, tmp_path / "a", progress=False
    )
    AugmentDistillation(iterations=2, **kw).fit(tiny_experts, tmp_path / "b", progress=False)
    split = AugmentDistillation(iterations=3, **kw).fit(
        tiny_experts, tmp_path / "b", progress=False
    )
    pd.testing.assert_frame_equal(
        whole.log_.drop(columns=["seconds"]), split.log_.drop(columns=["seconds"])
    )
