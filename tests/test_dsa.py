"""DSA: replay, gradients (finite differences), known transformations, parameter ranges."""

from __future__ import annotations

import math

import pytest
import torch

from leanaug.distill.dsa import DEFAULT_STRATEGY, DSA, GROUPS, DSAParams
from leanaug.errors import LeanaugError, UnknownNameError


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny networks: a second intra-op thread only adds synchronisation, which costs ~10x
    # on a loaded 2-core machine. Results do not depend on the thread count.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("strategy", [*GROUPS, DEFAULT_STRATEGY])
def test_replay_gives_identical_output(strategy: str) -> None:
    dsa = DSA(strategy)
    x = torch.rand(6, 3, 12, 12, generator=_gen(1))
    for seed in range(5):
        y, params = dsa(x, generator=_gen(seed))
        y2, params2 = dsa(x.clone(), params=params)
        assert params2 is params
        assert torch.equal(y, y2)
        # the same seed draws the same parameters
        assert torch.equal(dsa(x, generator=_gen(seed))[0], y)


def test_siamese_same_params_on_two_batches() -> None:
    dsa = DSA()
    a = torch.rand(5, 3, 10, 10, generator=_gen(2))
    b = torch.cat([a[:3], torch.rand(2, 3, 10, 10, generator=_gen(3))])
    for seed in range(12):  # covers every group
        ya, params = dsa(a, generator=_gen(seed))
        yb, _ = dsa(b, params=params)
        # per-sample draws: identical inputs at the same position give identical outputs
        assert torch.equal(ya[:3], yb[:3]), params.groups


def test_shared_params_replay_on_another_batch_size() -> None:
    dsa = DSA(per_sample=False)
    x = torch.rand(7, 1, 9, 9, generator=_gen(4))
    for seed in range(12):
        y, params = dsa(x, generator=_gen(seed))
        assert params.batch_size is None
        y3, _ = dsa(x[:3], params=params)
        assert torch.equal(y3, y[:3])


def test_replay_on_wrong_batch_size_is_an_error() -> None:
    dsa = DSA("rotate")
    _, params = dsa(torch.rand(4, 1, 8, 8), generator=_gen(0))
    with pytest.raises(LeanaugError, match="batch of 4"):
        dsa(torch.rand(3, 1, 8, 8), params=params)
    with pytest.raises(LeanaugError, match="not both"):
        dsa(torch.rand(4, 1, 8, 8), params=params, generator=_gen(0))


def test_unknown_group_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError, match="valid names: color, crop"):
        DSA("color_blur")


def test_none_strategy_is_identity() -> None:
    x = torch.rand(2, 3, 8, 8)
    y, params = DSA("none")(x, generator=_gen(0))
    assert torch.equal(x, y) and params.groups == ()


@pytest.mark.parametrize("group", GROUPS)
def test_gradients_reach_the_pixels(group: str) -> None:
    dsa = DSA(group)
    x = torch.rand(4, 3, 12, 12, generator=_gen(5), requires_grad=True)
    weights = torch.rand(4, 3, 12, 12, generator=_gen(6))
    y, _ = dsa(x, generator=_gen(7))
    (y * weights).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert (x.grad != 0).float().mean() > 0.3  # cutout zeroes at most a quarter (+ crop's border)


@pytest.mark.parametrize("group", GROUPS)
def test_gradient_matches_finite_differences(group: str) -> None:
    dsa = DSA(group)
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64, generator=_gen(8), requires_grad=True)
    _, params = dsa(x, generator=_gen(9))
    assert torch.autograd.gradcheck(lambda t: dsa.apply(t, params), (x,), eps=1e-6, atol=1e-5)


def test_flip_with_known_params() -> None:
    x = torch.rand(2, 3, 5, 7, generator=_gen(10))
    params = DSAParams(("flip",), {"flip.flip": torch.tensor([True, False])})
    y = DSA("flip").apply(x, params)
    assert torch.equal(y[0], x[0].flip(-1))
    assert torch.equal(y[1], x[1])


def test_translate_with_known_params() -> None:
    x = torch.rand(2, 1, 6, 8, generator=_gen(11)) + 1.0  # no zeros in the input
    params = DSAParams(
        ("crop",), {"crop.dy": torch.tensor([0, -2]), "crop.dx": torch.tensor([1, 3])}
    )
    y = DSA("crop").apply(x, params)
    # sample 0: content moves one pixel right, zeros enter on the left
    assert torch.equal(y[0, :, :, 1:], x[0, :, :, :-1])
    assert torch.equal(y[0, :, :, 0], torch.zeros_like(y[0, :, :, 0]))
    # sample 1: two pixels up and three right
    assert torch.equal(y[1, :, :-2, 3:], x[1, :, 2:, :-3])
    assert (y[1, :, -2:, :] == 0).all() and (y[1, :, :, :3] == 0).all()


def test_cutout_with_known_params() -> None:
    x = torch.rand(1, 2, 8, 8, generator=_gen(12)) + 1.0
    v = {
        "cutout.cy": torch.tensor([3]),
        "cutout.cx": torch.tensor([7]),
        "cutout.size_y": torch.tensor([4]),
        "cutout.size_x": torch.tensor([4]),
    }
    y = DSA("cutout").apply(x, DSAParams(("cutout",), v))
    hole = torch.zeros(8, 8, dtype=torch.bool)
    hole[1:5, 5:8] = True  # rows 3-2 .. 3+1, columns 7-2 .. 8 (clipped at the border)
    assert (y[0][:, hole] == 0).all()
    assert torch.equal(y[0][:, ~hole], x[0][:, ~hole])


def test_colour_scale_rotate_with_known_params() -> None:
    x = torch.rand(1, 3, 6, 6, generator=_gen(13))
    color = {
        "brightness.shift": torch.tensor([0.3]),
        "saturation.factor": torch.tensor([1.0]),
        "contrast.factor": torch.tensor([1.0]),
    }
    y = DSA("color").apply(x, DSAParams(("color",), color))
    torch.testing.assert_close(y, x + 0.3)
    # saturation 0: every channel becomes the per-pixel channel mean
    y = DSA("color").apply(
        x, DSAParams(("color",), {**color, "saturation.factor": torch.tensor([0.0])})
    )
    torch.testing.assert_close(y, (x + 0.3).mean(1, keepdim=True).expand_as(x))
    # contrast 0: every pixel becomes the image mean
    y = DSA("color").apply(
        x, DSAParams(("color",), {**color, "contrast.factor": torch.tensor([0.0])})
    )
    torch.testing.assert_close(y, (x + 0.3).mean().expand_as(x))
    one = torch.tensor([1.0])
    y = DSA("scale").apply(x, DSAParams(("scale",), {"scale.sx": one, "scale.sy": one}))
    torch.testing.assert_close(y, x)
    y = DSA("rotate").apply(x, DSAParams(("rotate",), {"rotate.degrees": torch.tensor([90.0])}))
    torch.testing.assert_close(y, torch.rot90(x, 1, (2, 3)), atol=1e-5, rtol=0)


def test_one_group_per_call_and_parameter_ranges() -> None:
    dsa = DSA()
    x = torch.zeros(64, 3, 32, 32)
    gen = _gen(14)
    counts = dict.fromkeys(GROUPS, 0)
    seen: dict[str, list[torch.Tensor]] = {}
    calls = 600
    for _ in range(calls):
        params = dsa.sample(x, gen)
        assert len(params.groups) == 1
        counts[params.groups[0]] += 1
        for k, v in params.values.items():
            seen.setdefault(k, []).append(v.float())
    for group, n in counts.items():  # uniform over 6 groups: 100 +- 9 expected
        assert 60 < n < 140, (group, n)
    v = {k: torch.cat(t) for k, t in seen.items()}
    assert -0.5 <= v["brightness.shift"].min() and v["brightness.shift"].max() <= 0.5
    assert 0.0 <= v["saturation.factor"].min() and v["saturation.factor"].max() <= 2.0
    assert 0.5 <= v["contrast.factor"].min() and v["contrast.factor"].max() <= 1.5
    assert v["crop.dx"].abs().max() == 4 and v["crop.dy"].abs().max() == 4  # round(0.125 * 32)
    assert (v["cutout.size_x"] == 16).all()  # half the side
    assert 1 / 1.2 <= v["scale.sx"].min() and v["scale.sx"].max() <= 1.2
    assert v["rotate.degrees"].abs().max() <= 15.0 and v["rotate.degrees"].abs().max() > 14.0
    assert abs(v["flip.flip"].mean().item() - 0.5) < 0.05
    assert abs(v["brightness.shift"].std().item() - 1 / math.sqrt(12)) < 0.02  # uniform width 1


def test_mode_all_applies_every_group() -> None:
    params = DSA(mode="all").sample(torch.zeros(2, 3, 8, 8), _gen(15))
    assert params.groups == GROUPS


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_generator_gives_same_result_on_cuda() -> None:  # pragma: no cover - GPU only
    dsa = DSA()
    x = torch.rand(8, 3, 16, 16, generator=_gen(16))
    for seed in range(12):
        y_cpu, _ = dsa(x, generator=_gen(seed))
        y_gpu, _ = dsa(x.cuda(), generator=_gen(seed))
        torch.testing.assert_close(y_gpu.cpu(), y_cpu, atol=1e-5, rtol=1e-5)
