"""GPU fast paths of the student network (issue #8): channels-last and bf16 autocast.

They run on the CPU too, which is where these tests check them: channels-last must give
the same logits and matching gradients as the default layout, bf16 autocast logits close
to float32 ones and matching gradients pointing the same way.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

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


@pytest.mark.parametrize("memory", ["unrolled", "constant", "tesla"])
def test_inner_loop_reads_nothing_back_from_the_device(memory, monkeypatch):
    """On the meta device every ``.item()``, ``int()`` or ``bool()`` of a tensor raises, so
    running the N student steps (and the reverse pass) there proves that the inner loop
    never waits on the device: no GPU synchronisation per step. Every DSA op group is on
    (``mode="all"``): crop and cutout used to read their draws back."""
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
