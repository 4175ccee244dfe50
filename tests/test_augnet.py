"""Augmentation by distillation (issue #7): phi families, gradients through the unroll, CLI."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from leanaug.cli.main import main
from leanaug.distill.augment_training import (
    AugmentDistillation,
    PhiTransform,
    phi_match_gradients,
    plan_slots,
    subset_indices,
    train_on_augmented,
)
from leanaug.distill.augnet import PHI_FAMILIES, build_phi, load_phi, save_phi
from leanaug.distill.matching import match_gradients, matching_loss, unroll_student
from leanaug.distill.networks import ConvNet, FlatModel
from leanaug.errors import LeanaugError

IDENTITY_FAMILIES = ["free", "residual", "transform", "hallucinator"]


def _batch(n=6, c=1, size=8, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, size, size, generator=g, dtype=dtype)
    y = torch.arange(n) % 3
    return x, y, torch.arange(n)


# --------------------------------------------------------------------------- identity at init
def test_registry_lists_every_family():
    assert PHI_FAMILIES.names() == sorted(IDENTITY_FAMILIES + ["courseproject"])
    with pytest.raises(LeanaugError, match="valid names: courseproject, free"):
        build_phi("nosuch", 1, (8, 8), 3)


@pytest.mark.parametrize("family", IDENTITY_FAMILIES)
@pytest.mark.parametrize("channels", [1, 3])
def test_families_are_the_identity_at_init(family, channels):
    x, y, idx = _batch(c=channels, size=12)
    torch.manual_seed(1)
    phi = build_phi(family, channels, (12, 12), 3, num_images=6)
    for draw in range(3):  # whatever the noise
        out = phi.augment(x, y, idx, generator=torch.Generator().manual_seed(draw))
        assert out.shape == x.shape
        assert (out - x).abs().max().item() <= 1e-6


def test_course_project_is_not_the_identity_and_its_fixes_switch_on():
    x, y, idx = _batch(c=3, size=12)
    torch.manual_seed(0)
    plain = build_phi("courseproject", 3, (12, 12), 3)
    assert sum(p.numel() for p in plain.parameters()) == 1647  # ~1.65k weights, as reported
    gen = torch.Generator().manual_seed(0)
    assert (plain.augment(x, generator=gen) - x).abs().max() > 1e-3
    fixed = build_phi("courseproject", 3, (12, 12), 3, options={"identity_init": True})
    assert (fixed.augment(x, generator=gen) - x).abs().max() == 0
    bounded = build_phi("courseproject", 3, (12, 12), 3, options={"bounded": True, "bound": 0.01})
    assert (bounded.augment(x, generator=gen) - x).abs().max() <= 0.01


def test_phi_is_stochastic_after_training_moves_it(tmp_path):
    x, y, idx = _batch(size=12)
    torch.manual_seed(0)
    phi = build_phi("residual", 1, (12, 12), 3, options={"width": 4})
    torch.nn.init.normal_(phi.out.weight, std=0.5)
    a = phi.augment(x, y, generator=torch.Generator().manual_seed(0))
    b = phi.augment(x, y, generator=torch.Generator().manual_seed(1))
    assert (a - b).abs().max() > 1e-3  # two noise draws differ
    assert (a - x).abs().max() <= phi.scale + 1e-6  # bounded by s
    save_phi(tmp_path / "phi.safetensors", phi, metadata={"alpha": 0.5})
    again, meta = load_phi(tmp_path / "phi.safetensors")
    assert meta == {"alpha": 0.5}
    c = again.augment(x, y, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(c, a, rtol=0, atol=0)


# --------------------------------------------------------------------------- gradients
def _setting(seed=3):
    torch.manual_seed(seed)
    net = ConvNet(1, 3, (8, 8), width=4, depth=2).double()
    model = FlatModel(net)
    theta0 = model.flat_parameters()
    target = theta0 + 0.05 * torch.randn(
        theta0.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64
    )
    x, y, idx = _batch(n=6, size=8, seed=5, dtype=torch.float64)
    slots = plan_slots(6, 3, 4, torch.Generator().manual_seed(6))
    return model, theta0, target, x, y, slots


@pytest.mark.parametrize(
    ("family", "memory"),
    [("residual", "unrolled"), ("residual", "constant"), ("transform", "unrolled")],
)
def test_gradient_reaches_phi_weights_through_the_unroll(family, memory):
    """dL/dw of phi's weights equals central finite differences (float64)."""
    from leanaug.distill.dsa import DSA

    model, theta0, target, x, y, slots = _setting()
    options = {"width": 2, "noise_channels": 1} if family == "residual" else {"width": 2}
    torch.manual_seed(7)
    phi = build_phi(family, 1, (8, 8), 3, options=options).double()
    with torch.no_grad():  # move off the identity so every layer gets a gradient
        for p in phi.parameters():
            p.add_(0.3 * torch.randn_like(p))
    dsa = DSA("color_crop_scale")  # differentiable ops after phi, replayed by the seeds
    pos = slots.images
    xs, ys = x[pos], y[pos]
    noise = phi.sample_noise(xs, torch.Generator().manual_seed(8))
    alpha = torch.tensor(0.1, dtype=torch.float64)

    def loss_value():
        with torch.no_grad():
            z = phi(xs, noise, labels=ys)
        with torch.enable_grad():
            theta_n = unroll_student(model, theta0, z, ys, alpha, slots.plan, dsa)
        return float(matching_loss(theta_n, theta0, target))

    phi.zero_grad()
    res, _ = phi_match_gradients(
        phi, model, theta0, target, xs, ys, None, noise, alpha, slots.plan, dsa, memory
    )
    assert float(res.loss) == pytest.approx(loss_value(), rel=1e-12)
    params = dict(phi.named_parameters())
    names = [n for n in params if params[n].grad is not None and params[n].grad.abs().max() > 0]
    assert len(names) == len(params)  # every weight gets a gradient
    eps = 1e-6
    gen = torch.Generator().manual_seed(9)
    for name in names:
        p = params[name]
        for flat in torch.randint(p.numel(), (1,), generator=gen).tolist():
            with torch.no_grad():
                p.view(-1)[flat] += eps
                up = loss_value()
                p.view(-1)[flat] -= 2 * eps
                down = loss_value()
                p.view(-1)[flat] += eps
            fd = (up - down) / (2 * eps)
            assert p.grad.view(-1)[flat].item() == pytest.approx(fd, rel=1e-5, abs=1e-10), name


def test_free_phi_on_an_ipc_subset_is_mtt_pixel_learning():
    """free phi (sigma 0): same loss, and dL/dr equals MTT's dL/dimages at x + r."""
    from leanaug.distill.dsa import DSA

    model, theta0, target, x, y, _ = _setting()
    gen = torch.Generator().manual_seed(6)
    slots = plan_slots(6, 4, 3, gen)  # 4 steps of 3: every image is used twice
    phi = build_phi("free", 1, (8, 8), 3, num_images=6).double()
    with torch.no_grad():
        phi.residual.normal_(0, 0.2)
    dsa = DSA()
    pos = slots.images
    noise = phi.sample_noise(x[pos], torch.Generator().manual_seed(1))
    alpha = torch.tensor(0.05, dtype=torch.float64)
    res, _ = phi_match_gradients(
        phi, model, theta0, target, x[pos], y[pos], pos, noise, alpha, slots.plan, dsa
    )
    # MTT: learnable pixels x + r, the same minibatches (indices into the 6 images)
    inner = plan_slots(6, 4, 3, torch.Generator().manual_seed(6))
    mtt_plan = type(slots.plan)(
        batches=[inner.images[b] for b in inner.plan.batches], aug_seeds=inner.plan.aug_seeds
    )
    pixels = (x + phi.residual).detach()
    ref = match_gradients(model, theta0, target, pixels, y, alpha, mtt_plan, dsa, "unrolled")
    assert float(res.loss) == pytest.approx(float(ref.loss), rel=1e-12)
    torch.testing.assert_close(phi.residual.grad, ref.grad_images, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(res.grad_alpha, ref.grad_alpha, rtol=1e-9, atol=1e-12)


def test_subsets_are_stratified_nested_and_checked():
    labels = torch.arange(10).repeat_interleave(100).numpy()
    one, ten = subset_indices(labels, 0.01, 0), subset_indices(labels, 0.1, 0)
    assert len(one) == 10 and len(ten) == 100
    assert set(one) <= set(ten)
    assert sorted(labels[ten].tolist()) == sorted(list(range(10)) * 10)
    assert len(subset_indices(labels, 1.0)) == 1000
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(LeanaugError, match=r"\(0, 1\]"):
            subset_indices(labels, bad)


def test_train_on_augmented_applies_the_transform_to_every_batch():
    """An easy task (a bright band whose row gives the class): trained on the transform's
    output of every batch, the network reaches 100 %; a transform that blanks the images
    leaves it near chance. Planted bug it catches: the transform called but its output
    not used for training (``transform(x, ...)`` without ``x =``), which the spy's call
    count alone passes."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(30) % 3
    x = 0.3 * torch.randn(30, 1, 8, 8, generator=g)
    for c in range(3):
        x[y == c, :, 2 * c : 2 * c + 3, 1:7] += 2.0
    seen = []

    def spy(xb, yb, index, gen):
        seen.append(index.clone())
        torch.testing.assert_close(xb, x[index])  # the batch really is train_x[index]
        return xb

    def blank(xb, yb, index, gen):
        return torch.zeros_like(xb)

    network = dict(
        name="convnet", in_channels=1, num_classes=3, image_size=[8, 8], width=4, depth=2
    )
    kw = dict(steps=10, batch_size=8, lr=0.05, runs=1, device="cpu")
    res = train_on_augmented(x, y, x, y, network, transform=spy, **kw)
    assert len(seen) == 10 and all(len(s) <= 8 for s in seen)
    assert res.final_accuracy == [1.0]
    blanked = train_on_augmented(x, y, x, y, network, transform=blank, **kw)
    assert blanked.final_accuracy[0] < 0.5
    again = train_on_augmented(x, y, x, y, network, transform=spy, **kw)
    assert again.final_accuracy == res.final_accuracy  # seeded


# --------------------------------------------------------------------------- end to end
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


def _augment_argv(experts, out, *extra):
    return [
        "distill",
        "augment",
        "--experts",
        str(experts),
        "--out",
        str(out),
        "--phi",
        "residual",
        "--phi-options",
        "{width: 4, noise_channels: 2}",
        "--subset",
        "0.1",
        "--syn-steps",
        "2",
        "--batch",
        "16",
        "--expert-epochs",
        "1",
        "--max-start-epoch",
        "2",
        "--lr-phi",
        "0.01",
        "--picture-every",
        "2",
        "--checkpoint-every",
        "1",
        "--device",
        "cpu",
        *extra,
    ]


def test_cli_augment_end_to_end_and_resume(tiny_experts, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(_augment_argv(tiny_experts, tmp_path / "whole", "--iterations", "4"))
    assert info.value.code in (0, None)
    out = capsys.readouterr().out
    assert "learned step size alpha" in out and "phi.safetensors" in out
    whole = tmp_path / "whole"
    for name in ("phi.safetensors", "log.parquet", "curves.png", "phi.png", "augment_config.json"):
        assert (whole / name).is_file(), name
    assert (whole / "pictures" / "iter_000004.png").is_file()
    log = pd.read_parquet(whole / "log.parquet")
    assert list(log["iteration"]) == [1, 2, 3, 4]
    assert log["loss"].notna().all() and log["loss_identity"].notna().all()
    assert (log["alpha"] > 0).all()
    phi, meta = load_phi(whole / "phi.safetensors")
    assert meta["subset"] == 0.1 and meta["alpha"] > 0 and meta["subset_size"] > 0
    assert phi.config()["options"]["width"] == 4

    # a run stopped after 2 iterations and resumed is the uninterrupted run
    AugmentDistillation(iterations=2, **_fast()).fit(
        tiny_experts, tmp_path / "split", progress=False
    )
    resumed = AugmentDistillation(iterations=4, **_fast()).fit(
        tiny_experts, tmp_path / "split", progress=False
    )
    pd.testing.assert_frame_equal(
        resumed.log_.drop(columns=["seconds"]), log.drop(columns=["seconds"])
    )
    phi2, _ = load_phi(tmp_path / "split" / "phi.safetensors")
    for (n1, a), (_, b) in zip(phi.state_dict().items(), phi2.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=n1)
    # phi applies to any images of the right shape, e.g. a whole training set
    x = torch.randn(5, 1, 8, 8)
    assert (
        PhiTransform(phi)(x, torch.zeros(5).long(), torch.arange(5), torch.Generator()).shape
        == x.shape
    )
    # other settings in the same folder are refused
    with pytest.raises(LeanaugError, match="other settings"):
        AugmentDistillation(iterations=4, **{**_fast(), "lr_phi": 0.5}).fit(
            tiny_experts, tmp_path / "split", progress=False
        )


def _fast():
    return dict(
        phi="residual",
        phi_options={"width": 4, "noise_channels": 2},
        subset=0.1,
        syn_steps=2,
        batch=16,
        expert_epochs=1,
        max_start_epoch=2,
        lr_phi=0.01,
        picture_every=2,
        checkpoint_every=1,
        device="cpu",
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--phi", "nosuch"],
            "valid names: courseproject, free, hallucinator, residual, transform",
        ),
        (["--subset", "0"], "(0, 1]"),
        (["--subset", "1.5"], "(0, 1]"),
        (["--optimizer", "lbfgs"], "adam, sgd"),
        (["--phi-options", "[1, 2]"], "expected a mapping"),
    ],
)
def test_cli_augment_bad_input_exits_2_with_one_line(tmp_path, capsys, extra, message):
    argv = _augment_argv(tmp_path / "no-experts", tmp_path / "out", *extra)
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and message in err, err


def test_cli_augment_missing_experts_is_a_user_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(_augment_argv(tmp_path / "missing", tmp_path / "out", "--iterations", "1"))
    assert info.value.code == 2
    assert "does not exist" in capsys.readouterr().err


MNIST_PHI_CONFIGS = sorted(
    (Path(__file__).resolve().parents[1] / "configs" / "augdistill").glob("mnist-*.yaml")
)


@pytest.mark.parametrize("config", MNIST_PHI_CONFIGS, ids=lambda p: p.stem)
def test_shipped_mnist_phi_configs_run(tiny_experts, tmp_path, config):
    """Every MNIST phi config of the benchmark is valid and learns its family (1 iteration on
    the tiny digits experts, which have MNIST's single channel)."""
    out = tmp_path / "phi"
    argv = ["distill", "augment", "--experts", str(tiny_experts), "--out", str(out)]
    argv += ["--config", str(config), "--iterations", "1", "--picture-every", "0"]
    with pytest.raises(SystemExit) as info:
        main([*argv, "--device", "cpu"])
    assert info.value.code in (0, None)
    phi, meta = load_phi(out / "phi.safetensors")
    assert phi.family == yaml.safe_load(config.read_text())["phi"]
    assert meta["alpha"] > 0
    assert len(pd.read_parquet(out / "log.parquet")) == 1


# --------------------------------------------------------------------------- evaluate PHI_DIR
EVAL_FAST = ["--runs", "2", "--epochs", "3", "--eval-every", "1", "--batch-size", "64"]


@pytest.fixture
def one_thread():
    # tiny networks: a second intra-op thread costs more than it gives on a loaded 2-core
    # machine (as in test_evaluate.py); the results do not depend on the thread count
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _evaluate(*argv):
    with pytest.raises(SystemExit) as info:
        main(["evaluate", *argv, *EVAL_FAST, "--device", "cpu"])
    return info.value.code


def _digest(indices):
    import hashlib

    import numpy as np

    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny_phis(tiny_experts, tmp_path_factory):
    """phi runs on the 20 % subset of seed 3 (not the CLI defaults 10 % / seed 0): the
    identity phi of 0 iterations (through the CLI) and one moved by 3 iterations."""
    root = tmp_path_factory.mktemp("phis")
    argv = _augment_argv(tiny_experts, root / "p0", "--iterations", "0", "--picture-every", "0")
    with pytest.raises(SystemExit) as info:
        main([*argv, "--subset", "0.2", "--subset-seed", "3"])
    assert info.value.code in (0, None)
    settings = {**_fast(), "subset": 0.2, "subset_seed": 3, "picture_every": 0, "lr_phi": 0.05}
    est = AugmentDistillation(iterations=3, **settings).fit(
        tiny_experts, root / "p3", progress=False
    )
    assert est.log_["phi_change"].iloc[-1] > 0  # phi has moved away from the identity
    return root / "p0", root / "p3", est.subset_indices_


def test_cli_evaluate_phi_dir_trains_on_phi_of_the_runs_subset(
    tiny_experts, one_thread, tiny_phis, tmp_path, capsys
):
    import json

    from leanaug.data import load_dataset

    p0, p3, run_subset = tiny_phis
    assert _evaluate(str(p0), "--augment", "none") in (0, None)
    out = capsys.readouterr().out
    assert "phi@0.2: final test accuracy" in out and "phi@0.2: best-epoch test accuracy" in out
    ident = json.loads((p0 / "eval-phi-p0.2.json").read_text())  # next to phi by default
    # the subset is the run's own (20 %, seed 3), not the default seed's
    assert ident["subset"]["sha256"] == _digest(run_subset)
    labels = load_dataset("digits").train_labels
    assert _digest(subset_indices(labels, 0.2, 0)) != _digest(run_subset)
    assert ident["subset"]["size"] == len(run_subset) == ident["config"]["n_train"]
    assert ident["phi"]["family"] == "residual" and ident["phi"]["iterations"] == 0
    assert len(ident["final_accuracy"]) == 2 and 0 < ident["final_mean"] <= 1
    assert "best_epoch_mean" in ident and ident["lr_source"] == "experts"

    # the identity phi trains exactly as the real subset without phi (same seeds)
    plain_json = tmp_path / "plain.json"
    argv = ["--experts", str(tiny_experts), "--subset", "0.2", "--subset-seed", "3"]
    assert _evaluate(*argv, "--augment", "none", "--out", str(plain_json)) in (0, None)
    plain = json.loads(plain_json.read_text())
    assert plain["subset"] == ident["subset"] and plain["phi"] is None
    assert plain["curves"] == ident["curves"]
    assert plain["final_accuracy"] == ident["final_accuracy"]
    # a phi that has moved changes the training (same seeds, same subset)
    assert _evaluate(str(p3), "--augment", "none", "--out", str(tmp_path)) in (0, None)
    moved = json.loads((tmp_path / "eval-phi-p0.2.json").read_text())
    assert moved["subset"] == ident["subset"] and moved["curves"] != ident["curves"]

    # phi + DSA (the default augmentation) and the phi file itself as the argument
    capsys.readouterr()
    assert _evaluate(str(p3 / "phi.safetensors")) in (0, None)
    assert "phi+dsa@0.2: final test accuracy" in capsys.readouterr().out
    both = json.loads((p3 / "eval-phi+dsa-p0.2.json").read_text())
    assert both["augment"] == "dsa" and both["config"]["transform"]["dsa"]["strategy"]
    assert both["config"]["transform"]["phi"]["family"] == "residual"
    assert both["curves"] != moved["curves"]


def test_evaluate_subset_baselines_from_python(tiny_experts, one_thread, tiny_phis):
    from leanaug.distill.evaluate import evaluate_subset

    p0, _, run_subset = tiny_phis
    common = dict(runs=1, epochs=2, batch_size=64, device="cpu")
    noflip = evaluate_subset(p0, augment="dsa-noflip", **common)
    strategy = noflip.config["transform"]["dsa"]["strategy"]
    assert "flip" not in strategy and "rotate" in strategy
    assert noflip.config["subset"]["sha256"] == _digest(run_subset)
    ta = evaluate_subset(
        experts=tiny_experts, subset=0.2, subset_seed=3, augment="trivialaugment", **common
    )
    assert ta.config["phi"] is None and ta.config["transform"]["augment"] == "trivialaugment"
    assert ta.config["n_train"] == len(run_subset)
    # a larger subset of the same seed holds phi's (nested), at its own size
    wider = evaluate_subset(p0, subset=0.4, augment="none", **common)
    assert wider.config["subset"]["size"] > len(run_subset)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["{p0}", "--augment", "nosuch"],
            "unknown train-time augmentation 'nosuch'; valid names: dsa, dsa-noflip, none, "
            "randaugment, trivialaugment",
        ),
        (["--experts", "{experts}", "--subset", "0.1", "--augment", "flip"], "valid names: dsa,"),
        (["{p0}", "--augment", "dsa", "--no-dsa"], "not both"),
        (["{p0}", "--subset", "0"], "(0, 1]"),
        (["--subset", "0.1"], "--subset needs --experts"),
        (["--experts", "{experts}"], "give IMAGES"),
        (["random:2", "--experts", "{experts}", "--augment", "dsa"], "--augment: only with"),
        (["{p0}", "--experts", "{other}"], "not the experts phi"),
        (["{unfinished}"], "has not finished"),
    ],
)
def test_cli_evaluate_phi_bad_input_exits_2_with_one_line(
    tiny_experts, one_thread, tiny_phis, tmp_path, capsys, args, message
):
    other = tmp_path / "other"
    if "{other}" in args:  # experts of another data set size: not phi's
        argv = ["distill", "experts", "--dataset", "digits", "--n-train", "300", "--experts"]
        argv += ["1", "--epochs", "1", "--width", "8", "--depth", "2", "--out", str(other)]
        with pytest.raises(SystemExit):
            main([*argv, "--device", "cpu"])
        capsys.readouterr()
    unfinished = tmp_path / "unfinished"  # a phi run killed before its end: no phi file
    unfinished.mkdir()
    (unfinished / "augment_config.json").write_text("{}")
    subs = {"{p0}": str(tiny_phis[0]), "{experts}": str(tiny_experts), "{other}": str(other)}
    subs["{unfinished}"] = str(unfinished)
    assert _evaluate(*[subs.get(a, a) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and message in err, err


def test_free_phi_is_tied_to_its_subset(tiny_experts, one_thread, tmp_path):
    from leanaug.distill.evaluate import evaluate_subset

    settings = {**_fast(), "phi": "free", "phi_options": {}, "picture_every": 0}
    AugmentDistillation(iterations=0, **settings).fit(tiny_experts, tmp_path, progress=False)
    with pytest.raises(LeanaugError, match="cannot be applied to subset 0.5"):
        evaluate_subset(tmp_path, subset=0.5, runs=1, epochs=1, device="cpu")
    own = evaluate_subset(tmp_path, augment="none", runs=1, epochs=1, device="cpu")
    assert own.config["phi"]["family"] == "free"
