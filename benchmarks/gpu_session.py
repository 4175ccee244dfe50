"""One time-boxed GPU session: issue #8's GPU figures, then CIFAR-10 MTT and phi at reduced scale.

The project's GPU time comes in short leases (about 10 minutes of compute for a whole task),
far below the reference's CIFAR-10 recipe (50 expert epochs x 20-100 experts, 5000
distillation iterations: GPU-hours). This script spends a fixed wall-clock budget
(``--budget`` seconds) on, in order, the phases named by ``--phases`` (default: all six;
distill needs experts, evaluate needs distill, augdistill needs experts):

0. ``graphs``: eager vs CUDA-graphed unrolled iterations at N = 10 and 30 in strict
   float32, then at N=30 with TF32 (``benchmarks/bench_cuda_graph.py``; a failure is
   recorded and the session goes on).
1. ``perf``: the matching iteration of ``benchmarks/bench_matching_memory.py`` on the GPU
   setting of issue #8 (CIFAR-10 ConvNet width 128, IPC 10, all 100 images in every
   student step, DSA): time per iteration and peak CUDA memory vs N in {10, 20, 40, 80},
   unrolled vs constant; then at N=30 the fast paths (strict float32, TF32, bf16 autocast,
   channels-last) with their gradient error against strict float32.
2. ``experts``: CIFAR-10 experts (ConvNet width 128, instance norm, ZCA, DSA, SGD lr 0.01,
   batch 256), as many as the budget share allows; 22 epochs each (the published
   T+=20, M=2 needs 22) when at least 4 such experts fit, else 12 epochs and T+=10.
3. ``distill``: ``configs/mtt/cifar10_ipc10.yaml`` (N=30, M=2, lr_img 100 in ZCA space,
   lr_lr 1e-5, alpha_0 0.001) for as many iterations as the budget share allows.
4. ``evaluate``: the MTT protocol (1000 epochs, learned alpha, DSA) on the distilled
   images and on random real images of the same size, runs alternated until time is up.
5. ``augdistill``: phi (``configs/augdistill/cifar10-residual-gpu.yaml``) learned on 10 %
   of CIFAR-10 against the experts above, then (b) DSA vs (d) phi+DSA at p=10 %, paired
   runs alternated until the budget ends.

Every phase writes into ``results.json`` as soon as it ends, so a cut-short session still
returns what it measured. Figures and the commands are in ``docs/performance.md``,
``docs/results-distillation.md`` and ``docs/results-augmentation-by-distillation.md``.

    python benchmarks/gpu_session.py --out OUT --data-dir DIR/cifar10-jpg --budget 540
    python benchmarks/gpu_session.py --out OUT --data-dir DIR/cifar10-jpg --budget 120 --phases perf

The phases run are recorded in ``results.json`` (``machine.phases``). CPU smoke test (tiny, minutes): ``--device cpu --n-train 600 --width 16 --budget 240
--perf-steps 2 4``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
T0 = time.perf_counter()
PHASES = ("graphs", "perf", "experts", "distill", "evaluate", "augdistill")  # run order
NEEDS = {"distill": "experts", "evaluate": "distill", "augdistill": "experts"}


class TimeUp(Exception):
    """Raised from a progress callback when a phase's share of the budget is spent."""


def elapsed() -> float:
    return time.perf_counter() - T0


def say(msg: str) -> None:
    print(f"[{elapsed():6.1f} s] {msg}", flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Session:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out
        self.out.mkdir(parents=True, exist_ok=True)
        self.work: Path = args.work
        self.work.mkdir(parents=True, exist_ok=True)
        self.results: dict = {}
        self.deadline = args.budget

    def left(self) -> float:
        return self.deadline - elapsed()

    def save(self) -> None:
        (self.out / "results.json").write_text(json.dumps(self.results, indent=1, default=str))


# --------------------------------------------------------------------------- 1. perf
def _problem(width: int, image_size: int, ipc: int, device: torch.device):
    from leanaug.distill.dsa import DSA
    from leanaug.distill.networks import ConvNet, FlatModel

    torch.manual_seed(0)
    module = ConvNet(3, 10, (image_size, image_size), width=width, depth=3).to(device)
    start = FlatModel(module).flat_parameters()
    target = start + 0.01 * torch.randn_like(start)
    images = torch.randn(10 * ipc, 3, image_size, image_size, device=device)
    labels = torch.arange(10, device=device).repeat_interleave(ipc)
    return module, start, target, images, labels, torch.tensor(0.01, device=device), DSA()


def _time_match(
    model, prob, steps: int, mode: str, repeats: int, device, theta_store: str = "device"
) -> tuple[float, float]:
    """Median seconds per matching iteration and peak CUDA MB above the set-up baseline."""
    from leanaug.distill.matching import match_gradients, plan_student

    _, start, target, images, labels, alpha, dsa = prob
    times = []
    if device.type == "cuda":
        sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    for r in range(repeats + 1):
        plan = plan_student(images.shape[0], steps, None, torch.Generator().manual_seed(r))
        sync(device)
        tic = time.perf_counter()
        res = match_gradients(
            model, start, target, images, labels, alpha, plan, dsa, mode, theta_store
        )
        sync(device)
        if r > 0:
            times.append(time.perf_counter() - tic)
        del res
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20 if device.type == "cuda" else 0
    return sorted(times)[len(times) // 2], peak


def phase_graphs(s: Session, device: torch.device) -> None:
    """Eager vs CUDA-graphed unrolled iterations (``benchmarks/bench_cuda_graph.py``).

    Written without a GPU: a failure is recorded with its message and the session goes on.
    """
    import traceback

    from bench_cuda_graph import measure  # a sibling script: this folder is on sys.path

    say("graphs: eager vs CUDA-graphed unrolled iteration, strict float32")
    try:
        rows = measure(device, s.args.width, (10, 30), s.args.perf_repeats, say=say)
        s.results["graphs"] = rows
        s.save()
        rows += measure(device, s.args.width, (30,), s.args.perf_repeats, say=say, tf32=True)
        s.results["graphs"] = rows
    except Exception as exc:  # noqa: BLE001 (recorded, not hidden: the figures say so)
        say(f"graphs: FAILED: {exc!r}")
        s.results["graphs"] = {"error": repr(exc), "traceback": traceback.format_exc()}
    torch.backends.cudnn.allow_tf32 = True  # torch's defaults again
    torch.backends.cuda.matmul.allow_tf32 = False
    s.save()


def phase_perf(s: Session, device: torch.device) -> None:
    import torch.nn.functional as F

    from leanaug.distill.matching import match_gradients, plan_student
    from leanaug.distill.networks import FlatModel

    a = s.args
    prob = _problem(a.width, 32, 10, device)
    module = prob[0]
    rows = []
    say(f"perf: ConvNet width {a.width}, IPC 10 (100 images, all in every step), DSA")
    # constant mode twice: theta_i on the device, and in pinned host memory (flat in N)
    for steps in a.perf_steps:
        for mode, store in (("unrolled", "device"), ("constant", "device"), ("constant", "host")):
            sec, peak = _time_match(
                FlatModel(module), prob, steps, mode, a.perf_repeats, device, store
            )
            rows.append(dict(mode=mode, theta_store=store, steps=steps, seconds=sec, peak_mb=peak))
            say(
                f"  {mode:>9} thetas on {store:<6} N={steps:>3}: {sec * 1000:8.1f} ms/it "
                f"({1 / sec:6.2f} it/s), peak {peak:8.0f} MB"
            )
    s.results["perf_vs_n"] = rows
    s.save()

    # Fast paths at N=30 (the GPU target setting), gradients against strict float32.
    n = a.fast_steps
    variants = [
        ("float32, no TF32", dict(), False),
        ("TF32 (default)", dict(), True),
        ("bf16 autocast", dict(precision="bfloat16"), True),
        ("channels-last", dict(channels_last=True), True),
        ("bf16 + channels-last", dict(precision="bfloat16", channels_last=True), True),
    ]
    _, start, target, images, labels, alpha, dsa = prob
    plan = plan_student(images.shape[0], n, None, torch.Generator().manual_seed(123))
    ref = None
    fast = []
    for mode in ("unrolled", "constant"):
        for name, opts, tf32 in variants:
            torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
            model = FlatModel(module, **opts)
            res = match_gradients(model, start, target, images, labels, alpha, plan, dsa, mode)
            if ref is None:
                ref = res
            g, g0 = res.grad_images.flatten(), ref.grad_images.flatten()
            rel = float((g - g0).norm() / g0.norm())
            cos = float(F.cosine_similarity(g, g0, dim=0))
            loss_rel = float(abs(res.loss - ref.loss) / ref.loss)
            alpha_rel = float(abs(res.grad_alpha - ref.grad_alpha) / abs(ref.grad_alpha))
            sec, peak = _time_match(model, prob, n, mode, a.perf_repeats, device)
            fast.append(
                dict(
                    mode=mode,
                    variant=name,
                    steps=n,
                    seconds=sec,
                    it_per_s=1 / sec,
                    peak_mb=peak,
                    grad_images_rel_err=rel,
                    grad_images_cos=cos,
                    grad_alpha_rel_err=alpha_rel,
                    loss_rel_err=loss_rel,
                )
            )
            say(
                f"  N={n} {mode:>9} {name:<22} {sec * 1000:7.1f} ms/it ({1 / sec:5.2f} it/s) "
                f"peak {peak:6.0f} MB | grad rel err {rel:.2e} cos {cos:.5f} alpha {alpha_rel:.1e}"
            )
    torch.backends.cudnn.allow_tf32 = True  # torch's defaults again
    torch.backends.cuda.matmul.allow_tf32 = False
    s.results["perf_fast_paths"] = fast
    s.save()


# --------------------------------------------------------------------------- 2. experts
def phase_experts(s: Session, ds, device: torch.device, share: float) -> dict:
    from leanaug.distill.experts import train_experts

    a = s.args
    end = elapsed() + share
    exp_dir = s.work / "experts"
    from mtt_cifar10_gpu import EXPERT_RECIPE  # benchmarks/ is this script's folder

    common = dict(
        EXPERT_RECIPE,
        width=a.width,
        device=device,
        dataset_spec={"name": "cifar10", "data_dir": str(a.data_dir), "n_train": a.n_train},
        progress=False,
    )
    tic = time.perf_counter()
    train_experts(ds, exp_dir, experts=1, epochs=1, **common)
    setup = time.perf_counter() - tic
    tic = time.perf_counter()
    train_experts(ds, exp_dir, experts=1, epochs=2, **common)
    per_epoch = time.perf_counter() - tic  # an upper bound: includes the data transform
    say(f"experts: first call (ZCA fit + 1 epoch) {setup:.1f} s, one more epoch {per_epoch:.1f} s")
    left = end - elapsed()
    if a.expert_epochs:
        epochs, max_start = a.expert_epochs, a.expert_epochs - 2
    elif left >= 4 * 22 * per_epoch - 2 * per_epoch:
        epochs, max_start = 22, 20
    else:
        epochs, max_start = 12, 10
    k = 1
    while True:
        need = (epochs - (2 if k == 1 else 0)) * per_epoch
        if k > 1 and elapsed() + need > end:
            break
        tic = time.perf_counter()
        trajs = train_experts(ds, exp_dir, experts=k, epochs=epochs, **common)
        say(
            f"  expert {k}: {epochs} epochs, final test acc {100 * trajs[-1].test_accuracy[-1]:.2f} %, "
            f"{time.perf_counter() - tic:.0f} s"
        )
        k += 1
        if k > a.max_experts:
            break
    info = dict(
        experts=len(trajs),
        epochs=epochs,
        max_start_epoch=max_start,
        seconds_per_epoch=per_epoch,
        final_test_accuracy=[t.test_accuracy[-1] for t in trajs],
        test_accuracy_curves=[list(t.test_accuracy) for t in trajs],
        dir=str(exp_dir),
    )
    s.results["experts"] = info
    s.save()
    return info


# --------------------------------------------------------------------------- 3. distill
def phase_distill(s: Session, info: dict, device: torch.device, share: float) -> dict:
    from leanaug.distill.matching import TrajectoryMatching, read_settings_file

    a = s.args
    end = elapsed() + share
    settings = read_settings_file(ROOT / "configs" / "mtt" / "cifar10_ipc10.yaml")
    settings.update(
        max_start_epoch=info["max_start_epoch"],
        eval_every=0,
        checkpoint_every=10,
        device=str(device),
    )
    out = s.work / "mtt-ipc10"
    stamps: list[float] = []

    def guard(it: int) -> None:
        stamps.append(time.perf_counter())
        if it % 100 == 0:
            say(f"  distill iteration {it}")
        if it > probe and elapsed() > end:  # the probe always finishes (its checkpoint)
            raise TimeUp

    probe = 10
    est = TrajectoryMatching.from_config({**settings, "iterations": probe}, "gpu session")
    est.fit(info["dir"], out, data_dir=a.data_dir, progress=False, on_iteration=guard)
    sec_it = (stamps[-1] - stamps[1]) / max(1, len(stamps) - 2)
    left = end - elapsed()
    iterations = int(min(a.max_iterations, max(probe, probe + 0.9 * left / sec_it)))
    say(f"distill: {sec_it * 1000:.0f} ms/iteration -> {iterations} iterations")
    est = TrajectoryMatching.from_config({**settings, "iterations": iterations}, "gpu session")
    tic = time.perf_counter()
    try:
        est.fit(info["dir"], out, data_dir=a.data_dir, progress=False, on_iteration=guard)
        images, labels, lr, done = est.images_, est.labels_, est.lr_, iterations
    except TimeUp:  # the last checkpoint (every 10 iterations) is the result
        from leanaug.distill.synthetic import Checkpoint

        ck = Checkpoint.load(out / "checkpoint.safetensors")
        images, lr, done = ck.images, float(ck.log_alpha.exp()), ck.iteration
        labels = torch.arange(10).repeat_interleave(settings["ipc"])
        say(f"distill: time up, using the checkpoint of iteration {done}")
    wall = time.perf_counter() - tic
    log = est.log_ if hasattr(est, "log_") else None
    res = dict(
        settings={**settings, "iterations": done},
        seconds_per_iteration=sec_it,
        iterations_per_second=1 / sec_it,
        iterations=done,
        wall_seconds=wall,
        learned_alpha=lr,
    )
    if log is not None and len(log):
        res["loss_first_50"] = float(log["loss"].iloc[1:51].mean())
        res["loss_last_50"] = float(log["loss"].iloc[-50:].mean())
    s.results["distill"] = res
    s.save()
    for name in ("images.png", "log.parquet"):
        if (out / name).exists():
            shutil.copy(out / name, s.out / f"mtt_{name}")
    torch.save({"images": images, "labels": labels, "lr": lr}, s.out / "mtt_images.pt")
    return dict(images=images, labels=labels, lr=lr)


# --------------------------------------------------------------------------- 4. evaluate
def test_data(info: dict, ds, device):
    """``(experts config, preprocessor, test images on device, test labels)``, read once for
    the evaluate and augdistill phases."""
    from leanaug.distill.experts import load_config, load_preprocessor

    pre = load_preprocessor(info["dir"])
    return (
        load_config(info["dir"]),
        pre,
        pre.transform(ds.test_images, device=device),
        torch.as_tensor(ds.test_labels),
    )


def phase_evaluate(s: Session, test, distilled: dict, ds, device, share: float) -> None:
    from leanaug.distill.evaluate import EvalResult, evaluate_images, evaluate_random_real

    a = s.args
    end = elapsed() + share
    cfg, pre, test_x, test_y = test
    ipc = distilled["images"].shape[0] // 10
    got: dict[str, list] = {"distilled": [], "random_real": []}
    longest = 0.0
    for r in range(a.eval_runs):
        if r >= 2 and elapsed() + 2 * longest > end:
            break
        tic = time.perf_counter()
        got["distilled"].append(
            evaluate_images(
                distilled["images"].to(device),
                distilled["labels"],
                test_x,
                test_y,
                cfg["network"],
                distilled["lr"],
                epochs=a.eval_epochs,
                runs=1,
                run_offset=r,
                seed=0,
                device=device,
            )
        )
        got["random_real"].append(
            evaluate_random_real(
                ds.train_images,
                ds.train_labels,
                lambda x: pre.transform(x, device=device),
                ipc,
                test_x,
                test_y,
                cfg["network"],
                float(cfg["training"]["lr"]),
                runs=1,
                run_offset=r,
                epochs=a.eval_epochs,
                device=device,
            )
        )
        longest = max(longest, (time.perf_counter() - tic) / 2)
        say(
            f"evaluate run {r}: distilled {100 * got['distilled'][-1].final_mean:.2f} %, "
            f"random real {100 * got['random_real'][-1].final_mean:.2f} % ({2 * longest:.0f} s/pair)"
        )
    merged = {k: EvalResult.merge(v) for k, v in got.items()}
    for k, v in merged.items():
        say(f"  {k}: {v.summary()}")
    s.results["evaluate"] = {
        "epochs": a.eval_epochs,
        "seconds_per_run": longest,
        **{k: v.to_dict() for k, v in merged.items()},
    }
    s.save()


# --------------------------------------------------------------------------- 5. augdistill
def phase_augdistill(s: Session, info: dict, test, ds, device, share: float) -> None:
    import yaml

    from leanaug.distill.augment_training import (
        AugmentDistillation,
        subset_indices,
        train_on_augmented,
    )
    from leanaug.distill.transforms import train_transform

    a = s.args
    end = elapsed() + share
    cfg = yaml.safe_load(
        (ROOT / "configs" / "augdistill" / "cifar10-residual-gpu.yaml").read_text()
    )
    if isinstance(cfg.get("phi_options"), str):
        cfg["phi_options"] = yaml.safe_load(cfg["phi_options"]) or {}
    cfg.update(
        subset=a.phi_subset,
        max_start_epoch=info["max_start_epoch"],
        checkpoint_every=10,
        picture_every=100_000,  # the start and the end picture only
        device=str(device),
    )
    out = s.work / "phi"
    stamps: list[float] = []

    def guard(it: int) -> None:
        stamps.append(time.perf_counter())
        if it > probe and elapsed() > phi_end:  # the probe always finishes
            raise TimeUp

    phi_end = elapsed() + 0.45 * share
    probe = 5
    est = AugmentDistillation.from_config({**cfg, "iterations": probe}, "gpu session")
    est.fit(info["dir"], out, data_dir=a.data_dir, progress=False, on_iteration=guard)
    sec_it = (stamps[-1] - stamps[0]) / max(1, len(stamps) - 1)
    iterations = int(max(probe, probe + 0.9 * (phi_end - elapsed()) / sec_it))
    iterations = (iterations // 10) * 10 or probe
    say(f"phi: {sec_it * 1000:.0f} ms/iteration -> {iterations} iterations")
    est = AugmentDistillation.from_config({**cfg, "iterations": iterations}, "gpu session")
    try:
        est.fit(info["dir"], out, data_dir=a.data_dir, progress=False, on_iteration=guard)
        phi, alpha = est.phi_, est.alpha_
        done = iterations
    except TimeUp:
        from leanaug.distill.augment_training import load_checkpoint_phi

        phi, alpha, done = load_checkpoint_phi(out)
    log = est.log_ if hasattr(est, "log_") else None
    res = dict(iterations=done, seconds_per_iteration=sec_it, alpha=alpha, subset=a.phi_subset)
    if log is not None and len(log):
        tail = log.tail(max(1, len(log) // 4))
        res["loss_last_quarter"] = float(tail["loss"].mean())
        res["loss_identity_last_quarter"] = float(tail["loss_identity"].mean())
        say(
            f"phi: {done} iterations; last quarter loss {res['loss_last_quarter']:.4f} "
            f"vs identity {res['loss_identity_last_quarter']:.4f}; alpha {alpha:.4g}"
        )
    for name in ("phi.png", "curves.png"):
        if (out / name).exists():
            shutil.copy(out / name, s.out / f"phi_{name}")
    s.results["augdistill_phi"] = res
    s.save()

    exp_cfg, pre, test_x, test_y = test
    idx = subset_indices(ds.train_labels, a.phi_subset, 0)
    x = pre.transform(ds.train_images[idx], device=device)
    y = torch.as_tensor(ds.train_labels[idx])
    phi = phi.to(device)
    dsa_cfg = exp_cfg["training"]["dsa"]
    conditions = {
        "dsa": train_transform("dsa", dsa_config=dsa_cfg),
        "phi+dsa": train_transform("dsa", phi=phi, dsa_config=dsa_cfg),
    }
    got: dict[str, list[float]] = {k: [] for k in conditions}
    longest = 0.0
    for r in range(a.eval_runs):
        if r >= 1 and elapsed() + 2 * longest > end:
            break
        for name, transform in conditions.items():
            tic = time.perf_counter()
            out_r = train_on_augmented(
                x,
                y,
                test_x,
                test_y,
                exp_cfg["network"],
                transform=transform,
                steps=a.phi_eval_steps,
                batch_size=256,
                lr=0.01,
                runs=1,
                seed=1000 + r,
                device=device,
            )
            got[name].append(float(out_r.final_accuracy[0]))
            longest = max(longest, time.perf_counter() - tic)
        say(f"augdistill run {r}: " + ", ".join(f"{k} {100 * v[-1]:.2f} %" for k, v in got.items()))
    s.results["augdistill_eval"] = dict(
        subset=a.phi_subset,
        steps=a.phi_eval_steps,
        batch=256,
        lr=0.01,
        seconds_per_run=longest,
        accuracy=got,
    )
    s.save()


# --------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, required=True, help="results.json, pictures, log")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "gpu-session")
    ap.add_argument("--data-dir", type=Path, required=True, help="CIFAR-10 folder")
    ap.add_argument("--budget", type=float, default=540.0, help="wall seconds in all")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--n-train", type=int, default=None, help="CIFAR-10 training subset (tests)")
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--perf-steps", type=int, nargs="+", default=[10, 20, 40, 80])
    ap.add_argument("--fast-steps", type=int, default=30)
    ap.add_argument("--perf-repeats", type=int, default=3)
    ap.add_argument("--max-experts", type=int, default=20)
    ap.add_argument(
        "--expert-epochs", type=int, default=0, help="fix it (T+ = it - 2); 0: chosen by time"
    )
    ap.add_argument(
        "--phases",
        nargs="+",
        choices=PHASES,
        default=list(PHASES),
        help="phases to run (always in the order above); default: all",
    )
    ap.add_argument("--skip-perf", action="store_true", help="the same as leaving perf out")
    ap.add_argument("--skip-graphs", action="store_true", help="the same as leaving graphs out")
    ap.add_argument("--skip-augdistill", action="store_true", help="leave augdistill out")
    ap.add_argument("--max-iterations", type=int, default=5000)
    ap.add_argument("--eval-runs", type=int, default=5)
    ap.add_argument("--eval-epochs", type=int, default=1000)
    ap.add_argument("--phi-subset", type=float, default=0.1)
    ap.add_argument("--phi-eval-steps", type=int, default=2000)
    ap.add_argument(
        "--shares",
        type=float,
        nargs=4,
        default=[0.34, 0.34, 0.12, 0.20],
        metavar=("EXPERTS", "DISTILL", "EVALUATE", "AUGDISTILL"),
        help="fractions of the budget left after the perf phase",
    )
    args = ap.parse_args()
    skipped = {p for p in PHASES if getattr(args, f"skip_{p}", False)}
    phases = [p for p in PHASES if p in args.phases and p not in skipped]
    for phase, needed in NEEDS.items():
        if phase in phases and needed not in phases:
            ap.error(f"phase {phase} needs phase {needed}: add it to --phases")

    from leanaug.data import load_dataset
    from leanaug.device import resolve_device

    device = resolve_device(args.device)
    s = Session(args)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    s.results["machine"] = dict(
        device=str(device), name=name, torch=torch.__version__, budget=args.budget, phases=phases
    )
    say(f"device {device} ({name}), torch {torch.__version__}; phases {' '.join(phases)}")
    s.save()

    if "graphs" in phases:
        phase_graphs(s, device)
    if "perf" in phases:
        phase_perf(s, device)
    s.results["timing"] = {"perf_end": elapsed()}
    if "experts" not in phases:
        s.results["timing"]["end"] = elapsed()
        s.save()
        say("done")
        return
    tic = time.perf_counter()
    ds = load_dataset("cifar10", data_dir=args.data_dir, n_train=args.n_train)
    say(
        f"CIFAR-10 loaded: {len(ds.train_labels)} train, {len(ds.test_labels)} test, {time.perf_counter() - tic:.0f} s"
    )
    # each phase ends at its cumulative share of what is left, so time one phase leaves
    # unused goes to the next
    rest, now = s.left(), elapsed()
    ends = [now + rest * sum(args.shares[: k + 1]) for k in range(4)]
    info = phase_experts(s, ds, device, ends[0] - elapsed())
    s.results["timing"]["experts_end"] = elapsed()
    if "distill" in phases:
        distilled = phase_distill(s, info, device, ends[1] - elapsed())
        s.results["timing"]["distill_end"] = elapsed()
    test = test_data(info, ds, device) if {"evaluate", "augdistill"} & set(phases) else None
    if "evaluate" in phases:
        phase_evaluate(s, test, distilled, ds, device, ends[2] - elapsed())
        s.results["timing"]["evaluate_end"] = elapsed()
    s.save()
    if s.left() > 60 and "augdistill" in phases:
        phase_augdistill(s, info, test, ds, device, s.left() - 10)
    s.results["timing"]["end"] = elapsed()
    s.save()
    say("done")


if __name__ == "__main__":
    main()
