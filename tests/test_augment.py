from __future__ import annotations

import numpy as np
import pytest
import torch

import leanaug.augment.base as augment_base
from leanaug.augment import (
    AUGMENTATIONS,
    PRESETS,
    Crop,
    Flip,
    Rotate,
    Translate,
    preset,
    preset_names,
    to_float,
    to_uint8,
)
from leanaug.errors import LeanaugError, UnknownNameError


def edge_shift(x: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Content moved dx right and dy down, edges replicated (independent reference)."""
    h, w = x.shape[-2:]
    pad = max(abs(dx), abs(dy), 1)
    padded = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(pad, pad), (pad, pad)], mode="edge")
    return padded[..., pad - dy : pad - dy + h, pad - dx : pad - dx + w]


@pytest.fixture
def image() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(3, 2, 7, 11, generator=g)  # non-square on purpose


def test_translate_equals_edge_padded_shift_exactly(image: torch.Tensor) -> None:
    offsets = [(2, 2), (2, -2), (-3, 1), (0, 4), (5, -1), (0, 0)]
    copies = Translate(offsets=offsets).copies(image)
    assert copies.shape == (3, len(offsets), 2, 7, 11)
    for k, (dx, dy) in enumerate(offsets):
        expected = edge_shift(image.numpy(), dx, dy)
        assert np.array_equal(copies[:, k].numpy(), expected), (dx, dy)


def test_translate_default_copies_are_the_four_diagonals() -> None:
    aug = Translate(max_shift=3)
    assert aug.offsets == ((3, 3), (3, -3), (-3, 3), (-3, -3))


def test_translate_sample_is_a_whole_pixel_shift_within_range(image: torch.Tensor) -> None:
    k = 2
    x = image.repeat(20, 1, 1, 1)
    out = Translate(max_shift=k).sample(x, torch.Generator().manual_seed(1))
    candidates = {
        (dx, dy): edge_shift(x.numpy(), dx, dy)
        for dx in range(-k, k + 1)
        for dy in range(-k, k + 1)
    }
    seen = set()
    for i in range(len(x)):
        matches = [s for s, ref in candidates.items() if np.array_equal(out[i].numpy(), ref[i])]
        assert matches, f"draw {i} is not an edge-padded shift within +-{k}"
        seen.add(matches[0])
    assert len(seen) > 5  # the draws vary
    again = Translate(max_shift=k).sample(x, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)


def test_rotate_90_matches_rot90_counter_clockwise() -> None:
    x = torch.rand(2, 3, 9, 9, generator=torch.Generator().manual_seed(2))
    aug = Rotate(angles=[90.0, -90.0, 180.0])
    out = aug.copies(x).numpy()
    np.testing.assert_allclose(out[:, 0], np.rot90(x.numpy(), k=1, axes=(2, 3)), atol=1e-5)
    np.testing.assert_allclose(out[:, 1], np.rot90(x.numpy(), k=-1, axes=(2, 3)), atol=1e-5)
    np.testing.assert_allclose(out[:, 2], np.rot90(x.numpy(), k=2, axes=(2, 3)), atol=1e-5)


def test_rotate_keeps_a_constant_image_and_zero_range_is_identity() -> None:
    x = torch.full((4, 1, 12, 12), 0.25)
    out = Rotate(max_angle=30.0, n_angles=15).copies(x)
    assert torch.allclose(
        out, torch.full_like(out, 0.25), atol=1e-6
    )  # edge padding, no black corners
    y = torch.rand(5, 3, 10, 10, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(
        Rotate(max_angle=0.0).sample(y, torch.Generator().manual_seed(0)), y, atol=1e-5
    )


def test_crop_keeps_shape_and_resizes_linearly() -> None:
    h, w = 10, 16
    ramp = torch.arange(w, dtype=torch.float32).expand(1, 1, h, w).clone()  # value = column index
    aug = Crop(sizes=(0, 1, 3))
    out = aug.copies(ramp)
    assert out.shape == (1, 3, 1, h, w)
    for k, c in enumerate(aug.sizes):
        # output column j samples input column c + j * (w - 1 - 2c) / (w - 1); bilinear is exact on a ramp
        expected = c + torch.arange(w, dtype=torch.float32) * (w - 1 - 2 * c) / (w - 1)
        torch.testing.assert_close(out[0, k, 0], expected.expand(h, w), atol=1e-4, rtol=0)
    x = torch.rand(6, 3, 28, 28)
    assert Crop(max_crop=6).sample(x, torch.Generator().manual_seed(0)).shape == x.shape


def test_crop_too_large_for_image_is_a_clear_error() -> None:
    with pytest.raises(LeanaugError, match="leaves less than 2 x 2"):
        Crop(sizes=(4,)).copies(torch.rand(1, 1, 8, 8))


def test_flip_copies_and_sample_frequency() -> None:
    x = torch.rand(2000, 1, 4, 5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(Flip().copies(x)[:, 0], torch.flip(x, dims=[-1]))
    assert torch.equal(Flip(p=0.0).sample(x), x)
    assert torch.equal(Flip(p=1.0).sample(x), torch.flip(x, dims=[-1]))
    out = Flip(p=0.5).sample(x, torch.Generator().manual_seed(4))
    flipped = (out == torch.flip(x, dims=[-1])).flatten(1).all(1).float().mean().item()
    assert abs(flipped - 0.5) < 0.05  # 2000 draws: sd 0.011


@pytest.mark.parametrize(
    ("dataset", "counts"),
    [
        ("mnist", {"translate": 4, "rotate": 14, "crop": 6}),
        ("cifar10", {"translate": 4, "rotate": 4, "crop": 1, "flip": 1}),
        ("smallnorb", {"translate": 4, "rotate": 4, "crop": 1}),
        ("digits", {"translate": 4, "rotate": 4, "crop": 1}),
    ],
)
def test_preset_copy_counts(dataset: str, counts: dict[str, int]) -> None:
    assert preset_names(dataset) == sorted(counts)
    for name, k in counts.items():
        aug = preset(dataset, name)
        assert aug.n_copies == k
        assert len(aug.copy_labels()) == k


def test_preset_values_from_the_paper() -> None:
    np.testing.assert_allclose(
        preset("mnist", "rotate").angles, [a for a in np.linspace(-30, 30, 15) if abs(a) > 1e-9]
    )
    np.testing.assert_allclose(preset("cifar10", "rotate").angles, [-5, -5 / 3, 5 / 3, 5])
    assert preset("mnist", "crop").sizes == (1, 2, 3, 4, 5, 6)
    assert preset("cifar10", "crop").sizes == (2,)
    assert preset("mnist", "translate").max_shift == 2
    assert preset("cifar10", "translate").max_shift == 3
    assert preset("smallnorb", "translate").max_shift == 6
    assert set(PRESETS) == {"mnist", "cifar10", "smallnorb", "digits"}


def test_unknown_preset_and_dataset_list_valid_names() -> None:
    with pytest.raises(UnknownNameError, match="valid presets: crop, rotate, translate"):
        preset("mnist", "flip")
    with pytest.raises(
        UnknownNameError, match="valid data sets: cifar10, digits, mnist, smallnorb"
    ):
        preset("imagenet", "translate")


def test_registry_names() -> None:
    assert AUGMENTATIONS.names() == ["crop", "flip", "rotate", "translate"]
    assert AUGMENTATIONS.get("translate") is Translate


def test_to_float_to_uint8_round_trip() -> None:
    x = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
    f = to_float(x)
    assert f.dtype == torch.float32 and float(f.max()) == 1.0 and float(f.min()) == 0.0
    assert np.array_equal(to_uint8(f).numpy(), x)
    assert np.array_equal(to_uint8(f.numpy()), x)
    assert to_uint8(torch.tensor([-0.5, 0.5, 1.5])).tolist() == [0, 128, 255]
    with pytest.raises(LeanaugError, match="uint8 or float"):
        to_float(torch.zeros(1, 1, 2, 2, dtype=torch.int32))


def test_augmentations_reject_uint8_input_with_a_clear_error() -> None:
    with pytest.raises(LeanaugError, match="see to_float"):
        Translate().copies(torch.zeros(1, 1, 8, 8, dtype=torch.uint8))


def test_copies_in_chunks_equal_one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.rand(10, 1, 12, 12, generator=torch.Generator().manual_seed(5))
    aug = Rotate(max_angle=10, n_angles=3)
    whole = aug.copies(x)
    monkeypatch.setattr(augment_base, "CHUNK", 3)
    assert torch.equal(aug.copies(x), whole)
