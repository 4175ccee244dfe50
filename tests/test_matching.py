"""Trajectory matching: the student, the loss and its gradient (issue #6)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from leanaug.distill.dsa import DSA
from leanaug.distill.matching import (
    match_gradients,
    matching_loss,
    plan_student,
    unroll_student,
)
from leanaug.distill.networks import ConvNet, FlatModel
from leanaug.errors import LeanaugError


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny networks: a second intra-op thread only adds synchronisation, which costs ~10x
    # on a loaded 2-core machine. Results do not depend on the thread count.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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
    """The matching gradient through DSA against central differences. DSA is imported
    plainly at the top (it used to be ``pytest.importorskip``): planted bug it catches,
    an ImportError in ``leanaug.distill.dsa``, which turned this test into a skip."""
    dsa = DSA()
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


# --------------------------------------------------------------------------- the loop
DIGITS = {"name": "digits", "n_train": 300, "subset": "random", "seed": 0}


@pytest.fixture(scope="module")
def digits_experts(tmp_path_factory):
    """2 tiny experts x 3 epochs on 300 sklearn digits (8x8), ConvNet width 6, depth 2."""
    from leanaug.data import load_dataset
    from leanaug.distill.experts import train_experts

    ds = load_dataset("digits", n_train=300, subset="random", seed=0)
    out = tmp_path_factory.mktemp("experts")
    train_experts(
        ds,
        out,
        experts=2,
        epochs=3,
        width=6,
        depth=2,
        batch_size=64,
        lr=0.01,
        dataset_spec=DIGITS,
        progress=False,
        device="cpu",
    )
    return out


def _fast(**overrides):
    from leanaug.distill.matching import TrajectoryMatching

    params = dict(
        ipc=2,
        syn_steps=4,
        expert_epochs=1,
        max_start_epoch=2,
        iterations=8,
        lr_img=10.0,
        lr_lr=1e-5,
        lr_teacher=0.01,
        eval_every=0,
        checkpoint_every=3,
        device="cpu",
    )
    params.update(overrides)
    return TrajectoryMatching(**params)


def _comparable(frame):
    return frame.drop(columns=["seconds"]).reset_index(drop=True)


def test_resume_after_kill_gives_the_same_run(digits_experts, tmp_path):
    """Not a real kill, despite the name: a KeyboardInterrupt raised from the
    ``on_iteration`` callback stops the run in this process (Python unwinds normally);
    the rerun in the same folder must equal an uninterrupted run. Real SIGKILLs of the
    distillation commands, rerun in a fresh process: ``tests/test_kill_resume.py``."""
    import pandas as pd

    from leanaug.distill.evaluate import load_image_set

    whole = _fast(eval_every=4, eval_runs=1, eval_epochs=2).fit(
        digits_experts, tmp_path / "whole", progress=False
    )

    def kill(it):
        if it == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _fast(eval_every=4, eval_runs=1, eval_epochs=2).fit(
            digits_experts, tmp_path / "split", progress=False, on_iteration=kill
        )
    assert not (tmp_path / "split" / "images.safetensors").exists()
    resumed = _fast(eval_every=4, eval_runs=1, eval_epochs=2).fit(
        digits_experts, tmp_path / "split", progress=False
    )

    pd.testing.assert_frame_equal(_comparable(resumed.log_), _comparable(whole.log_))
    pd.testing.assert_frame_equal(
        _comparable(pd.read_parquet(tmp_path / "split" / "log.parquet")), _comparable(whole.log_)
    )
    assert list(whole.log_["iteration"]) == list(range(9))
    assert whole.log_["eval_accuracy"].notna().tolist() == [
        True,
        False,
        False,
        False,
        True,
        False,
        False,
        False,
        True,
    ]
    assert torch.equal(resumed.images_, whole.images_)
    assert resumed.lr_ == whole.lr_
    saved = load_image_set(tmp_path / "split" / "images.safetensors")
    assert torch.equal(saved.images, whole.images_)
    assert saved.lr == pytest.approx(whole.lr_, rel=1e-6)
    assert (tmp_path / "split" / "grids" / "iter_000008.png").is_file()
    # other settings in the same folder are refused, longer runs extend it
    with pytest.raises(LeanaugError, match="lr_img"):
        _fast(lr_img=11.0).fit(digits_experts, tmp_path / "split", progress=False)


def test_exploding_loss_stops_and_keeps_last_checkpoint(digits_experts, tmp_path):
    import pandas as pd

    from leanaug.distill.matching import DistillationDiverged
    from leanaug.distill.synthetic import Checkpoint

    # a far too large student step and unbounded pixel steps (the reference's): the loss is
    # ~480 at iteration 1, ~890 at iteration 2
    est = _fast(lr_teacher=0.3, checkpoint_every=1, loss_limit=800.0, max_image_step=0.0)
    with pytest.raises(DistillationDiverged) as info:
        est.fit(digits_experts, tmp_path, progress=False)
    message = str(info.value)
    assert "stopped at iteration 2: matching loss" in message and "above the limit 800" in message
    assert (
        f"last good checkpoint (iteration 1) is kept in {tmp_path / 'checkpoint.safetensors'}"
        in message
    )
    kept = Checkpoint.load(tmp_path / "checkpoint.safetensors")
    assert kept.iteration == 1 and torch.isfinite(kept.images).all()
    assert not (tmp_path / "images.safetensors").exists()
    log = pd.read_parquet(tmp_path / "log.parquet")
    assert log["iteration"].tolist() == [0, 1, 2] and log["loss"].iloc[-1] > 800.0
    # the CLI shows it as a one-line user error (exit 2)
    assert isinstance(info.value, LeanaugError)


def test_nan_loss_stops_with_a_clear_message(digits_experts, tmp_path, monkeypatch):
    import leanaug.distill.matching as matching

    real = matching.match_gradients
    calls = []

    def flaky(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 5:
            result.loss = torch.tensor(float("nan"))
        return result

    monkeypatch.setattr(matching, "match_gradients", flaky)
    with pytest.raises(
        matching.DistillationDiverged,
        match=r"iteration 5: matching loss nan is not finite.*checkpoint \(iteration 3\)",
    ):
        _fast().fit(digits_experts, tmp_path, progress=False)


def test_alpha_stays_positive_under_a_large_step_size_learning_rate(digits_experts, tmp_path):
    est = _fast(lr_lr=3e-4, iterations=12, syn_steps=6).fit(
        digits_experts, tmp_path, progress=False
    )
    alphas = est.log_["alpha"].to_numpy()
    assert (alphas > 0).all() and est.lr_ > 0
    # the learning rate is large enough that alpha moves as far as the bound lets it (5 % an
    # iteration: an additive update of the same first-order size would have crossed zero)
    assert alphas.max() / min(alphas.min(), est.lr_) > 1.4


def test_settings_are_checked(digits_experts, tmp_path):
    from leanaug.distill.matching import TrajectoryMatching

    with pytest.raises(LeanaugError, match="unknown setting.*lr_images"):
        TrajectoryMatching.from_config({"lr_images": 1.0})
    with pytest.raises(LeanaugError, match="needs experts of at least 4 epochs"):
        _fast(max_start_epoch=3, expert_epochs=2).fit(digits_experts, tmp_path, progress=False)
    with pytest.raises(LeanaugError, match="memory must be one of"):
        _fast(memory="low").fit(digits_experts, tmp_path, progress=False)
    with pytest.raises(LeanaugError, match="theta_store must be one of device, host"):
        _fast(memory="constant", theta_store="gpu").fit(digits_experts, tmp_path, progress=False)
    with pytest.raises(LeanaugError, match="theta_store 'host' needs memory 'constant' or"):
        _fast(theta_store="host").fit(digits_experts, tmp_path, progress=False)


def _cli(argv: list[str]) -> int:
    """Run ``leanaug ARGV`` in this process; its exit status (0 when it returns)."""
    from leanaug.cli.main import main

    try:
        main(argv)
    except SystemExit as exc:
        return 0 if exc.code is None else int(exc.code)
    return 0


def test_cli_experts_then_images_then_evaluate(tmp_path, capsys):
    """`leanaug distill experts` -> `leanaug distill images` -> `leanaug evaluate`."""
    import json

    experts, out = tmp_path / "experts", tmp_path / "distilled"
    # --zca: the images are learned in ZCA space and the grids go through its inverse
    argv = (
        "distill experts --dataset digits --n-train 300 --experts 2 --epochs 3 --width 6 --depth 2"
    )
    argv += " --batch-size 64 --zca --device cpu --out"
    assert _cli([*argv.split(), str(experts)]) == 0
    config = tmp_path / "mtt.yaml"
    config.write_text(
        "syn_steps: 4\nexpert_epochs: 1\nmax_start_epoch: 2\niterations: 4\nlr_img: 10\n"
        "eval_every: 2\neval_runs: 1\neval_epochs: 2\nmemory: unrolled\n"
    )
    argv = f"distill images --experts {experts} --ipc 2 --out {out} --config {config} --memory constant"
    assert _cli([*argv.split(), "--theta-store", "host", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "learned step size alpha" in printed and "iteration 4: final test accuracy" in printed
    settings = json.loads((out / "distill_config.json").read_text())
    assert settings["memory"] == "constant"  # the flag beats the file
    assert settings["theta_store"] == "host"  # a no-op on the CPU, accepted
    assert settings["syn_steps"] == 4  # the file beats the default
    assert (out / "grids" / "iter_000004.png").is_file() and (out / "images.png").is_file()

    argv = f"evaluate {out / 'images.safetensors'} --experts {experts} --runs 1 --epochs 2 --device cpu"
    assert _cli(argv.split()) == 0
    assert "from file" in capsys.readouterr().out
    result = json.loads((out / "images.eval.json").read_text())
    assert result["lr_source"] == "file"
    # the CLI's figures are evaluate_images' on the file's images and learned lr, the
    # experts' network and their real test set: re-run here with the same seed, the same
    # numbers. Planted bugs this catches (a range check cannot): the CLI training with the
    # experts' lr while saying "file", or without DSA (``dsa=False`` in its options).
    from leanaug.distill.evaluate import evaluate_images, load_image_set
    from leanaug.distill.experts import load_config, load_dataset_for, load_preprocessor

    image_set = load_image_set(out / "images.safetensors")
    cfg, pre = load_config(experts), load_preprocessor(experts)
    ds = load_dataset_for(cfg)
    test_x, test_y = pre.transform(ds.test_images), torch.as_tensor(ds.test_labels)
    direct = evaluate_images(
        image_set.images, image_set.labels, test_x, test_y, cfg["network"], image_set.lr,
        epochs=2, runs=1, device="cpu",
    )  # fmt: skip
    assert result["lr"] == pytest.approx(image_set.lr, rel=1e-6)
    assert result["final_accuracy"] == direct.final_accuracy
    assert result["final_mean"] == pytest.approx(direct.final_mean)
    correct = result["final_mean"] * len(test_y)  # a fraction of the test images
    assert abs(correct - round(correct)) < 1e-6

    # a user error: one line on stderr, exit status 2
    argv = (
        f"distill images --experts {experts} --ipc 2 --out {tmp_path / 'bad'} --max-start-epoch 3"
    )
    assert _cli([*argv.split(), "--expert-epochs", "2"]) == 2
    assert "needs experts of at least 4 epochs" in capsys.readouterr().err


def test_alpha_update_is_the_references_step_at_any_alpha():
    """SGD (lr_lr, momentum 0.5) on log(alpha) through step_log_alpha_ moves alpha by MTT's
    -lr_lr * dL/dalpha to first order also far from alpha_0, and a step larger than alpha
    itself divides alpha by MAX_ALPHA_FACTOR (1.05) instead of crossing zero."""
    from leanaug.distill.matching import step_log_alpha_

    lr_lr = 1e-5

    def one_step(alpha0: float, g: float) -> float:
        log_alpha = torch.tensor(math.log(alpha0), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.SGD([log_alpha], lr=lr_lr, momentum=0.5)
        step_log_alpha_(opt, log_alpha, torch.tensor(g, dtype=torch.float64))
        assert log_alpha.grad is None
        return float(log_alpha.detach().exp())

    for alpha0, g in [(0.05, 30.0), (0.001, -3.0), (0.2, 100.0)]:
        step = one_step(alpha0, g) - alpha0
        # first order: relative error ~ step / 2 alpha
        assert step == pytest.approx(-lr_lr * g, rel=2e-2)
    # a huge gradient: the reference's step would make alpha negative; here it shrinks by 5 %
    assert one_step(1e-4, 1e3) == pytest.approx(1e-4 / 1.05, rel=1e-9)


# --------------------------------------------------------------------------- issue 18
def test_alpha_momentum_cannot_carry_one_huge_gradient():
    """One huge first gradient (digits: dL/dlog alpha 3e6, 40x the bound at lr_lr 1e-5) used to
    stay in the momentum buffer and halve alpha at every later step whatever the gradient
    said; now the buffer holds only the step taken, so a reversed gradient turns alpha
    around at once. Planted bug it catches: the clipped step without resetting the buffer."""
    from leanaug.distill.matching import step_log_alpha_

    log_alpha = torch.tensor(math.log(0.01), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([log_alpha], lr=1e-5, momentum=0.5)
    step_log_alpha_(opt, log_alpha, torch.tensor(3e4, dtype=torch.float64))  # 0.01 / 1.05
    first = float(log_alpha.detach().exp())
    assert first == pytest.approx(0.01 / 1.05, rel=1e-9)
    step_log_alpha_(opt, log_alpha, torch.tensor(-30.0, dtype=torch.float64))  # wants larger
    # the buffer holds (log 1.05) / lr_lr = 4.9e3, not 3e6: half of it is outweighed by the new
    # gradient (-30 / alpha = -3.2e3), so alpha grows at once; with the old buffer it would
    # have shrunk by the full bound for 9 more iterations
    after = float(log_alpha.detach().exp())
    assert first < after < first * 1.05


def test_loss_growth_reason():
    from leanaug.distill.matching import loss_growth_reason

    assert loss_growth_reason([5.9, 19, 45], 5.0) is None  # too few to compare
    assert loss_growth_reason([5.9, 19, 45, 111], 5.0) is None  # median 45 / 19
    message = loss_growth_reason([5.9, 19, 45, 111, 207], 5.0)  # the digits run
    assert message is not None and "grown 5.84-fold" in message
    assert loss_growth_reason([5.9, 19, 45, 111, 207], 0.0) is None  # off
    assert loss_growth_reason([1.0, 0.9, 0.8, 40.0, 0.7], 5.0) is None  # one outlier


def test_growing_loss_stops_and_keeps_last_good_checkpoint(digits_experts, tmp_path, monkeypatch):
    """A run built to diverge (its loss multiplied by 3 each iteration) stops once the loss has
    grown 5-fold over its start, before the absolute limit, and keeps the checkpoint."""
    import leanaug.distill.matching as matching
    from leanaug.distill.synthetic import Checkpoint

    real = matching.match_gradients
    calls = []

    def growing(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append(1)
        result.loss = result.loss * 3.0 ** len(calls)
        return result

    monkeypatch.setattr(matching, "match_gradients", growing)
    with pytest.raises(matching.DistillationDiverged) as info:
        _fast(checkpoint_every=1, loss_limit=1e9).fit(digits_experts, tmp_path, progress=False)
    message = str(info.value)
    # losses ~ L*3, L*9, L*27, L*81, L*243: the median of the last 3 is 9x the first 3's at 5
    assert "stopped at iteration 5" in message and "grown" in message, message
    assert "checkpoint (iteration 4) is kept" in message
    kept = Checkpoint.load(tmp_path / "checkpoint.safetensors")
    assert kept.iteration == 4 and torch.isfinite(kept.images).all()
    assert not (tmp_path / "images.safetensors").exists()


def test_digits_defaults_end_at_least_as_good_as_the_initial_images(digits_experts, tmp_path):
    """The defaults (lr_img, max_image_step, the alpha rule, T+ = all) on digits: after a short
    run the images train fresh networks at least as well as the initial real images (same
    seeds; at alpha_0, and at the learned alpha within a run's spread). Before the fix the
    first pixel step alone moved the images by 1.8e4 RMS and they ended at chance."""
    from leanaug.distill.evaluate import evaluate_images, load_image_set
    from leanaug.distill.experts import load_config, load_dataset_for, load_preprocessor
    from leanaug.distill.matching import BEST_IMAGES_NAME, TrajectoryMatching, tracking_summary
    from leanaug.distill.synthetic import initial_images

    est = TrajectoryMatching(
        ipc=1, iterations=6, eval_every=3, eval_runs=1, eval_epochs=20, device="cpu"
    ).fit(digits_experts, tmp_path, progress=False)
    settings = json.loads((tmp_path / "distill_config.json").read_text())
    assert settings["max_start_epoch"] == 2  # 3 expert epochs, M = 2: T+ resolved to all
    steps = est.log_["image_step"].dropna()
    assert (steps <= 2 * 0.01 + 1e-6).all()  # bounded (momentum 0.5: at most twice the bound)
    alphas = est.log_["alpha"].to_numpy()
    assert (alphas[1:] / alphas[:-1]).max() <= 1.05 + 1e-9
    assert (alphas[:-1] / alphas[1:]).max() <= 1.05 + 1e-9
    track = tracking_summary(est.log_)
    best = load_image_set(tmp_path / BEST_IMAGES_NAME)
    assert best.metadata["iteration"] == track.best_iteration

    cfg, pre = load_config(digits_experts), load_preprocessor(digits_experts)
    ds = load_dataset_for(cfg)
    x, y = pre.transform(ds.train_images), torch.as_tensor(ds.train_labels)
    test_x, test_y = pre.transform(ds.test_images), torch.as_tensor(ds.test_labels)
    init, _ = initial_images(x, y, 10, 1, "real", 0)

    def acc(images, lr):
        return evaluate_images(
            images, est.labels_, test_x, test_y, cfg["network"], lr, epochs=200, runs=3,
            device="cpu", seed=1,
        ).final_mean  # fmt: skip

    initial = acc(init, 0.01)
    assert acc(est.images_, 0.01) >= initial
    assert acc(est.images_, est.lr_) >= initial - 0.02


def test_cli_warns_when_the_images_get_worse(digits_experts, tmp_path, capsys):
    """A run built to get worse (unbounded pixel steps at lr_img 1e5, the guards off) ends with
    one WARNING line on stderr, and the summary prints the initial, final and best figures."""
    out = tmp_path / "worse"
    argv = (
        f"distill images --experts {digits_experts} --ipc 2 --out {out} --syn-steps 4 "
        "--expert-epochs 1 --iterations 4 --lr-img 1e5 --max-image-step 0 --loss-growth 0 "
        "--loss-limit 1e12 --eval-every 4 --eval-runs 1 --eval-epochs 60 --device cpu"
    )
    assert _cli(argv.split()) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "WARNING" in line]
    assert len(warnings) == 1, captured.err
    assert "made the images worse" in warnings[0] and "best_images.safetensors" in warnings[0]
    assert "initial images (iteration 0): tracking test accuracy" in captured.out
    assert "iteration 4: final test accuracy" in captured.out
    assert "best checkpoint: iteration 0" in captured.out
    assert (out / "best_images.safetensors").is_file()
