"""Featurizers: pixels, and the trained-once, frozen, cached smallcnn and resnet."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from leanaug.data import load_dataset
from leanaug.errors import LeanaugError
from leanaug.features import FEATURIZERS, ResNetFeaturizer, SmallCNNFeaturizer
from leanaug.features.trained import TrainedNetFeaturizer
from leanaug.paths import cache_root


@pytest.fixture(scope="module")
def digits38():
    ds = load_dataset("digits", classes=[3, 8])
    return ds.train_images, ds.train_labels


def test_registry_names():
    assert {"pixels", "smallcnn", "resnet"} <= set(FEATURIZERS.names())
    with pytest.raises(LeanaugError, match="valid names: .*pixels"):
        FEATURIZERS.get("vgg")


def test_pixels_scaled_flattened_and_standardised(digits38):
    images, labels = digits38
    f = FEATURIZERS.get("pixels")().fit(images, labels)
    x = f.transform(images)
    assert x.shape == (len(images), 64) and x.dtype == np.float32
    np.testing.assert_allclose(x, images.reshape(len(images), -1) / 255.0, atol=1e-7)
    # float input in [0, 1] (an augmentation's output) takes the same path as uint8
    np.testing.assert_array_equal(f.transform(torch.from_numpy(images).float() / 255.0), x)
    z = FEATURIZERS.get("pixels")(standardize=True).fit(images, labels).transform(images)
    varying = images.reshape(len(images), -1).std(0) > 0
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(0)[varying], 1.0, atol=1e-4)
    with pytest.raises(LeanaugError, match="shape"):
        f.transform(np.zeros((2, 1, 4, 4), np.uint8))


def test_smallcnn_trains_512d_and_cache_hit_skips_training(digits38, monkeypatch):
    images, labels = digits38
    f = SmallCNNFeaturizer(epochs=3, batch_size=32, progress=False, device="cpu").fit(
        images, labels
    )
    assert not f.loaded_from_cache_
    assert f.cache_path_.is_file() and f.cache_path_.parent == cache_root() / "featurizers"
    feats = f.transform(images)
    assert feats.shape == (len(images), 512)
    assert np.all(np.isfinite(feats)) and feats.min() >= 0.0  # after the dense layer's ReLU
    # it learned: last-epoch training loss well below the chance level log(2) = 0.69
    assert f.train_loss_ < 0.5, f.train_loss_
    # frozen: eval mode, no gradients, transform is deterministic (no dropout)
    assert not f.net_.training and not any(p.requires_grad for p in f.net_.parameters())
    np.testing.assert_array_equal(f.transform(images), feats)

    def no_training(*args, **kwargs):
        raise AssertionError("retrained although the cache holds this featurizer")

    monkeypatch.setattr(TrainedNetFeaturizer, "_train", no_training)
    g = SmallCNNFeaturizer(epochs=3, batch_size=32, progress=False, device="cpu").fit(
        images, labels
    )
    assert g.loaded_from_cache_ and g.cache_path_ == f.cache_path_
    np.testing.assert_array_equal(g.transform(images), feats)
    # the key covers config, seed and data: any change means a different file
    keys = {
        SmallCNNFeaturizer(epochs=3, batch_size=32).cache_key(images, labels),
        SmallCNNFeaturizer(epochs=4, batch_size=32).cache_key(images, labels),
        SmallCNNFeaturizer(epochs=3, batch_size=32, seed=1).cache_key(images, labels),
        SmallCNNFeaturizer(epochs=3, batch_size=32).cache_key(images[1:], labels[1:]),
    }
    assert len(keys) == 4
    # device / progress do not change which net it is
    assert SmallCNNFeaturizer(epochs=3, batch_size=32, device="cpu", progress=False).cache_key(
        images, labels
    ) == SmallCNNFeaturizer(epochs=3, batch_size=32).cache_key(images, labels)


def test_resnet_pretrains_on_another_dataset_all_classes(digits38):
    images, labels = digits38  # the task: digits 3 vs 8
    f = ResNetFeaturizer(
        depth=8,
        width=4,
        pretrain_dataset="digits",
        pretrain_n_train=300,
        epochs=1,
        batch_size=100,
        progress=False,
        device="cpu",
    ).fit(images, labels)
    assert f.net_.head.out_features == 10  # trained on all ten digits, not the task's two
    feats = f.transform(images[:50])
    assert feats.shape == (50, 16)  # 4 * width after global average pooling
    assert np.all(np.isfinite(feats))


def test_resnet_bad_depth_and_shape_mismatch(digits38):
    with pytest.raises(LeanaugError, match="6n\\+2"):
        ResNetFeaturizer(depth=21)
    rgb = np.random.default_rng(0).integers(0, 256, (20, 3, 8, 8), dtype=np.uint8)
    with pytest.raises(LeanaugError, match="shape"):
        ResNetFeaturizer(depth=8, pretrain_dataset="digits", epochs=1, progress=False).fit(
            rgb, np.arange(20) % 2
        )


def test_weights_file_round_trip_checks_and_skips_training(digits38, tmp_path, monkeypatch):
    images, labels = digits38
    f = ResNetFeaturizer(
        depth=8, width=4, epochs=1, batch_size=64, cache=False, progress=False, device="cpu"
    ).fit(images, labels)
    feats = f.transform(images[:40])
    path = tmp_path / "resnet.safetensors"
    digest = f.save_weights(path)  # float16 parameters, float32 buffers
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as st:
        assert st.get_tensor("stem.weight").dtype == torch.float16
        assert st.get_tensor("bn.running_var").dtype == torch.float32

    def no_training(*args, **kwargs):
        raise AssertionError("a featurizer with weights must not train or load its data")

    monkeypatch.setattr(TrainedNetFeaturizer, "_train", no_training)
    monkeypatch.setattr(ResNetFeaturizer, "_training_data", no_training)
    g = ResNetFeaturizer(
        depth=8, width=4, pretrain_dataset="cifar10", weights=str(path), weights_sha256=digest,
        device="cpu",
    ).fit(images, labels)  # fmt: skip
    assert g.loaded_from_cache_
    # the same net up to float16 rounding of its weights
    np.testing.assert_allclose(g.transform(images[:40]), feats, rtol=2e-2, atol=2e-2)
    assert not np.array_equal(g.transform(images[:40]), feats)

    with pytest.raises(LeanaugError, match="sha256"):
        ResNetFeaturizer(depth=8, width=4, weights=str(path), weights_sha256="0" * 64).fit(
            images, labels
        )
    with pytest.raises(LeanaugError, match="'width': 4.*'width': 8"):
        ResNetFeaturizer(depth=8, width=8, weights=str(path)).fit(images, labels)
    with pytest.raises(LeanaugError, match="featurizer 'resnet'"):
        SmallCNNFeaturizer(weights=str(path)).fit(images, labels)
    rgb = np.zeros((4, 3, 8, 8), np.uint8)
    with pytest.raises(LeanaugError, match="shape"):
        ResNetFeaturizer(depth=8, width=4, weights=str(path)).fit(rgb, np.arange(4) % 2)
    with pytest.raises(LeanaugError, match="does not exist"):
        ResNetFeaturizer(depth=8, width=4, weights=str(tmp_path / "no.safetensors")).fit(
            images, labels
        )
    (tmp_path / "torn.safetensors").write_bytes(path.read_bytes()[:100])
    with pytest.raises(LeanaugError, match="torn.safetensors"):
        ResNetFeaturizer(depth=8, width=4, weights=str(tmp_path / "torn.safetensors")).fit(
            images, labels
        )


def test_onecycle_sgd_schedule_and_options(digits38):
    f = SmallCNNFeaturizer(optimizer="sgd", schedule="onecycle", lr=0.5, momentum=0.9)
    net = torch.nn.Linear(2, 2)
    opt, schedule = f._optimizer(net, total_steps=10)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["nesterov"]
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    # warm-up over 2 steps to the peak, then linear decay to 0 after the last step
    np.testing.assert_allclose(lrs, [0.25, 0.5, 0.4375, 0.375, 0.3125, 0.25, 0.1875, 0.125,
                                     0.0625, 0.0])  # fmt: skip
    for bad in ({"optimizer": "rmsprop"}, {"schedule": "cosine"}, {"precision": "fp8"}):
        with pytest.raises(LeanaugError, match="valid"):
            SmallCNNFeaturizer(**bad)
    # options at their defaults leave the cache key as it was before they existed
    images, labels = digits38
    base = SmallCNNFeaturizer(epochs=3).cache_key(images, labels)
    assert SmallCNNFeaturizer(epochs=3, optimizer="adam").cache_key(images, labels) == base
    assert SmallCNNFeaturizer(epochs=3, optimizer="sgd").cache_key(images, labels) != base
    # an SGD + onecycle net trains on digits (loss well below chance)
    g = SmallCNNFeaturizer(
        epochs=6, batch_size=32, optimizer="sgd", schedule="onecycle", lr=0.1,
        label_smoothing=0.1, cache=False, progress=False, device="cpu",
    ).fit(images, labels)  # fmt: skip
    assert g.train_loss_ < 0.5 and g.train_accuracy_ > 0.9, (g.train_loss_, g.train_accuracy_)


def test_float_images_and_sample_weights(digits38):
    """``fit`` takes float images in [0, 1] and per-row weights of the training loss."""
    from leanaug.augment import to_float
    from leanaug.features.trained import batch_loss

    images, labels = digits38
    kw = dict(epochs=1, batch_size=64, cache=False, progress=False, device="cpu")
    feats = SmallCNNFeaturizer(**kw).fit(images, labels).transform(images)
    # float images train exactly the net of their uint8 originals
    floats = to_float(images).numpy()
    np.testing.assert_array_equal(
        SmallCNNFeaturizer(**kw).fit(floats, labels).transform(images), feats
    )
    # weights all 1 (or all equal): the unweighted net bit for bit, and its cache key
    for w in (np.ones(len(labels)), np.full(len(labels), 0.2)):
        g = SmallCNNFeaturizer(**kw).fit(images, labels, sample_weight=w)
        np.testing.assert_array_equal(g.transform(images), feats)
    weights = np.where(labels == 0, 3.0, 1.0)
    other = SmallCNNFeaturizer(**kw).fit(images, labels, sample_weight=weights)
    assert not np.allclose(other.transform(images), feats)
    f = SmallCNNFeaturizer(epochs=1)
    assert f.cache_key(images, labels) == f.cache_key(images, labels, None)
    assert f.cache_key(images, labels, weights) != f.cache_key(images, labels)
    # the loss: a weighted mean, where a weight of 2 counts a row twice
    logits, y = torch.randn(5, 2, generator=torch.Generator().manual_seed(0)), labels[:5]
    y = torch.from_numpy(y)
    w = torch.tensor([2.0, 1.0, 0.0, 1.0, 1.0])
    rows = torch.tensor([0, 0, 1, 3, 4])
    torch.testing.assert_close(batch_loss(logits, y, w), batch_loss(logits[rows], y[rows]))
    assert batch_loss(logits, y, torch.zeros(5)) == 0.0  # a batch of weight 0: no gradient


def _alternating(value: float):
    return lambda n: np.arange(n) % 2 * value  # not all equal: a weighted fit


@pytest.mark.parametrize(
    ("featurizer", "images", "weights", "message"),
    [
        ("smallcnn", lambda x: np.full(x.shape, 1.5, np.float32), None, "must lie in \\[0, 1\\]"),
        ("smallcnn", lambda x: x.astype(np.int16), None, "uint8 images or float"),
        ("smallcnn", None, lambda n: np.ones(3), "shape \\(268,\\)"),
        ("smallcnn", None, _alternating(-1.0), "finite, >= 0"),
        ("pretrained", None, _alternating(2.0), "pretrain_dataset=digits trains on that data"),
        ("weights", None, _alternating(2.0), "weights= loads a fixed net"),
    ],
)
def test_bad_fit_inputs(digits38, featurizer, images, weights, message):
    x, labels = digits38
    f = {
        "smallcnn": SmallCNNFeaturizer(epochs=1),
        "pretrained": ResNetFeaturizer(depth=8, pretrain_dataset="digits"),
        "weights": SmallCNNFeaturizer(weights="net.safetensors"),
    }[featurizer]
    x = x if images is None else images(x)
    w = None if weights is None else weights(len(labels))
    with pytest.raises(LeanaugError, match=message):
        f.fit(x, labels, sample_weight=w)
