"""GPU fast paths of the student network (issue #8): channels-last and bf16 autocast.

They run on the CPU too, which is where these tests check them: channels-last must give
the same logits and matching gradients as the default layout, bf16 autocast logits close
to float32 ones and matching gradients pointing the same way.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from leanaug.distill.dsa import DSA
from leanaug.distill.matching import (
    TrajectoryMatching,
    match_gradients,
    matching_loss,
    plan_student,
)
from leanaug.distill.networks import ConvNet, FlatModel
from leanaug.errors import LeanaugError


def _problem(**model_options):
    torch.manual_seed(0)
    module = ConvNet(3, 4, (16, 16), width=8, depth=2)
    model = FlatModel(module, **model_options)
    start = model.flat_parameters()
    target = start + 0.01 * torch.randn_like(start)
    images = torch.randn(8, 3, 16, 16)
    labels = torch.arange(4).repeat_interleave(2)
    return model, start, target, images, labels


def _grads(model, start, target, images, labels, memory: str):
    plan = plan_student(images.shape[0], 4, 4, torch.Generator().manual_seed(1))
    return match_gradients(
        model, start, target, images, labels, torch.tensor(0.05), plan, DSA(), memory
    )


def test_channels_last_same_logits_and_gradients():
    model, start, target, images, labels = _problem()
    fast = FlatModel(model.module, channels_last=True)
    torch.testing.assert_close(fast(start, images), model(start, images), rtol=1e-5, atol=1e-5)
    ref = _grads(model, start, target, images, labels, "unrolled")
    for memory in ("unrolled", "constant"):
        got = _grads(fast, start, target, images, labels, memory)
        torch.testing.assert_close(got.loss, ref.loss, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(got.grad_images, ref.grad_images, rtol=1e-3, atol=1e-6)
        torch.testing.assert_close(got.grad_alpha, ref.grad_alpha, rtol=1e-3, atol=1e-6)


def test_bfloat16_autocast_close_to_float32():
    """bf16 logits, loss and matching gradients close to float32: the gradients by
    direction (cosine) AND by size (norm ratio). Planted bug it catches: the bf16 path
    scaling the gradient reaching the images by 2 (``x = 2 * x - x.detach()`` before the
    autocast forward: same values, doubled gradient), which the cosine alone passes."""
    model, start, target, images, labels = _problem()
    fast = FlatModel(model.module, precision="bfloat16")
    out, ref_out = fast(start, images), model(start, images)
    assert out.dtype == torch.float32  # the logits come back in float32
    assert (out - ref_out).norm() / ref_out.norm() < 0.05
    assert not torch.equal(out, ref_out)  # autocast really ran in bf16
    ref = _grads(model, start, target, images, labels, "unrolled")
    got = _grads(fast, start, target, images, labels, "constant")
    cos = F.cosine_similarity(got.grad_images.flatten(), ref.grad_images.flatten(), dim=0)
    assert cos > 0.95
    ratio = float(got.grad_images.norm() / ref.grad_images.norm())
    assert 0.9 < ratio < 1.1, ratio
    alpha_ratio = float(got.grad_alpha / ref.grad_alpha)
    assert 0.9 < alpha_ratio < 1.1, alpha_ratio
    assert abs(float(got.loss) - float(ref.loss)) / float(ref.loss) < 0.05


def test_unknown_precision_lists_the_valid_ones():
    module = ConvNet(1, 2, (8, 8), width=4, depth=1)
    with pytest.raises(LeanaugError, match="bfloat16.*float32"):
        FlatModel(module, precision="float16")
    with pytest.raises(LeanaugError, match="precision must be one of"):
        TrajectoryMatching(precision="fp8")._validate()


def _checkless_loss(theta_n, theta_start, theta_target):
    # without its once-per-iteration finiteness check (a host read by design)
    return matching_loss(theta_n, theta_start, theta_target, check=False)


class _HostToDevice(TorchDispatchMode):
    """Records every operation that moves data from the CPU to another device: explicit
    copies (``aten._to_copy`` / ``copy_``, with their ``non_blocking`` flag) and implicit
    ones (an op mixing a CPU tensor of more than a scalar with tensors elsewhere, e.g.
    indexing a device tensor with CPU indices, which copies the indices)."""

    def __init__(self) -> None:
        super().__init__()
        self.copies: list[tuple[str, bool]] = []
        self.implicit: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        ins = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        host_in = any(t.device.type == "cpu" and t.dim() > 0 for t in ins)
        elsewhere = any(t.device.type != "cpu" for t in [*ins, *outs])
        name = str(func)
        if host_in and elsewhere:
            if "_to_copy" in name or "copy_" in name:
                self.copies.append((name, bool(kwargs.get("non_blocking", False))))
            else:
                self.implicit.append(name)
        return out


@pytest.mark.parametrize("memory", ["unrolled", "constant", "tesla"])
def test_host_to_device_copies_are_once_per_iteration_and_non_blocking(memory, monkeypatch):
    """The batch indices and DSA draws of all N steps reach the device in a fixed number
    of non-blocking copies per iteration (one per dtype), whatever N: a blocking copy from
    pageable memory makes the host wait for the GPU, and there used to be several per
    step (the indices of ``images[idx]``, ``labels[idx]``, ``index_add_`` and every DSA
    draw). Planted bug it catches: ``stage_plan`` not called in ``match_gradients`` (the
    per-step implicit copies come back and grow with N)."""
    monkeypatch.setattr("leanaug.distill.matching.matching_loss", _checkless_loss)
    model, start, target, images, labels = _problem()
    meta = torch.device("meta")
    counts = []
    for steps in (3, 6):
        plan = plan_student(images.shape[0], steps, 4, torch.Generator().manual_seed(1))
        args = [t.to(meta) for t in (start, target, images, labels)]
        alpha = torch.tensor(0.05, device=meta)
        with _HostToDevice() as seen:
            match_gradients(model, *args[:2], *args[2:], alpha, plan, DSA(mode="all"), memory)
        assert seen.implicit == []
        assert all(non_blocking for _, non_blocking in seen.copies), seen.copies
        counts.append(len(seen.copies))
    assert counts[0] == counts[1] <= 3  # int64, float32 and bool buffers


@pytest.mark.parametrize("memory", ["unrolled", "constant", "tesla"])
def test_inner_loop_reads_nothing_back_from_the_device(memory, monkeypatch):
    """On the meta device every ``.item()``, ``int()`` or ``bool()`` of a tensor raises, so
    running the N student steps (and the reverse pass) there proves that the inner loop
    never reads a value back from the device. It cannot see host-to-device copies (the
    test above counts those). Every DSA op group is on (``mode="all"``): crop and cutout
    used to read their draws back."""
    monkeypatch.setattr("leanaug.distill.matching.matching_loss", _checkless_loss)
    model, start, target, images, labels = _problem()
    meta = torch.device("meta")
    plan = plan_student(images.shape[0], 3, 4, torch.Generator().manual_seed(1))
    result = match_gradients(
        model,
        start.to(meta),
        target.to(meta),
        images.to(meta),
        labels.to(meta),
        torch.tensor(0.05, device=meta),
        plan,
        DSA(mode="all"),
        memory,
    )
    assert result.grad_images.shape == images.shape
    assert result.grad_images.device == meta
