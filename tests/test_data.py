from __future__ import annotations

import gzip
import hashlib
import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import leanaug.data.cifar10 as cifar10_module
import leanaug.data.mnist as mnist_module
from leanaug.data import DATASETS, ImageDataset, load_dataset, select_classes
from leanaug.data.download import download, md5_file
from leanaug.data.formats import read_idx, read_norb_matrix
from leanaug.errors import DataError, LeanaugError, UnknownNameError
from leanaug.paths import cache_root

CIFAR10_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
MNIST_TRAIN_IMAGES_MD5 = "6bbc9ace898e44ae57da46a324031adb"  # the official decompressed file


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    # Session fixtures run before conftest's function-scoped cache isolation; point them at
    # the same folder explicitly so nothing lands in ~/.cache.
    root = tmp_path_factory.getbasetemp() / "leanaug-cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEANAUG_CACHE", str(root))
        mp.setenv("LEANAUG_DATA", str(root / "data"))
        yield root


@pytest.fixture(scope="session")
def mnist(real_data, session_cache: Path) -> ImageDataset:
    return load_dataset("mnist", data_dir=real_data("mnist"))


@pytest.fixture(scope="session")
def cifar_first_load(real_data, session_cache: Path) -> tuple[ImageDataset, float]:
    start = time.perf_counter()
    ds = load_dataset("cifar10", data_dir=real_data("cifar10-jpg"))
    return ds, time.perf_counter() - start


# --- MNIST ------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
def test_mnist_reads_synthetic_official_idx_files(official_files, gz: bool) -> None:
    folder, arrays = official_files.mnist(n_train=40, n_test=20, gz=gz)
    ds = load_dataset("mnist", data_dir=folder.parent, cache=False)  # found in its mnist/
    assert ds.train_images.shape == (40, 1, 28, 28) and ds.test_images.shape == (20, 1, 28, 28)
    assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int64
    assert np.array_equal(ds.train_images[:, 0], arrays["train-images-idx3-ubyte"])
    assert np.array_equal(ds.test_images[:, 0], arrays["t10k-images-idx3-ubyte"])
    assert np.array_equal(ds.train_labels, arrays["train-labels-idx1-ubyte"])
    assert np.array_equal(ds.test_labels, arrays["t10k-labels-idx1-ubyte"])
    assert ds.class_names == tuple("0123456789") and ds.source == "MNIST (official IDX files)"
    threes = load_dataset("mnist", data_dir=folder, classes=[3, 8], cache=False)
    assert threes.train_labels.tolist() == [0, 1] * 4  # labels 3, 8, 3, 8, ... remapped


def test_mnist_checks_the_official_md5_and_sizes(official_files, monkeypatch) -> None:
    import leanaug.data.mnist as mnist

    folder, arrays = official_files.mnist(n_train=30, n_test=10)
    flipped = arrays["t10k-labels-idx1-ubyte"].copy()
    flipped[0] = (flipped[0] + 1) % 10
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(official_files.idx_bytes(flipped))
    )
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: decompressed md5 .* differs"):
        load_dataset("mnist", data_dir=folder, cache=False)
    folder, _ = official_files.mnist(n_train=30, n_test=10, name="mnist-sizes")
    monkeypatch.setitem(mnist.SIZES, "train", 60000)
    with pytest.raises(DataError, match=r"expected 60000 x 28 x 28 images and 60000 labels"):
        load_dataset("mnist", data_dir=folder, cache=False)


def test_mnist_from_shared_idx_files(mnist: ImageDataset) -> None:
    assert mnist.train_images.shape == (60000, 1, 28, 28)
    assert mnist.test_images.shape == (10000, 1, 28, 28)
    assert mnist.train_images.dtype == np.uint8 and mnist.train_labels.dtype == np.int64
    assert mnist.class_names == tuple("0123456789")
    assert set(np.unique(mnist.train_labels)) == set(range(10))
    assert mnist.train_images.mean() / 255 == pytest.approx(
        0.1307, abs=1e-4
    )  # the well-known MNIST mean
    assert np.bincount(mnist.test_labels).sum() == 10000
    assert mnist.source == "MNIST (official IDX files)"


def test_mnist_decompressed_train_images_have_the_official_md5(
    real_data, mnist: ImageDataset
) -> None:
    raw = gzip.decompress((real_data("mnist") / "train-images-idx3-ubyte.gz").read_bytes())
    assert hashlib.md5(raw).hexdigest() == MNIST_TRAIN_IMAGES_MD5
    # and the loaded array is exactly those bytes after the 16-byte header
    assert np.array_equal(
        np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(60000, 1, 28, 28), mnist.train_images
    )


def test_idx_reader_checks_magic_length_and_md5(tmp_path: Path, official_files) -> None:
    _idx_bytes = official_files.idx_bytes
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    good = tmp_path / "x-idx3-ubyte"
    good.write_bytes(_idx_bytes(array))
    assert np.array_equal(read_idx(good, 3), array)
    gz = tmp_path / "x-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(_idx_bytes(array)))
    assert np.array_equal(read_idx(gz, 3, md5=hashlib.md5(_idx_bytes(array)).hexdigest()), array)
    with pytest.raises(DataError, match="decompressed md5 .* differs"):
        read_idx(gz, 3, md5="0" * 32)
    short = tmp_path / "short-idx3-ubyte"
    short.write_bytes(_idx_bytes(array)[:-5])
    with pytest.raises(
        DataError, match=r"short-idx3-ubyte is truncated: 35 bytes, expected 40 for a 2 x 3 x 4"
    ):
        read_idx(short, 3)
    with pytest.raises(DataError, match=r"IDX magic 0x00000803 is not .*\(expected 0x00000801\)"):
        read_idx(good, 1)
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04" + bytes(40))
    with pytest.raises(DataError, match="is not an IDX file"):
        read_idx(bad, 3)


def test_mnist_truncated_train_images_fail_clearly(official_files) -> None:
    folder, _ = official_files.mnist(n_train=50, n_test=10)
    gz = folder / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(gz.read_bytes())
    gz.unlink()
    (folder / "train-images-idx3-ubyte").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError) as info:
        load_dataset("mnist", data_dir=folder, cache=False)
    message = str(info.value)
    assert "train-images-idx3-ubyte is truncated" in message
    assert f"expected {16 + 50 * 28 * 28} for a 50 x 28 x 28" in message
    assert "\n" not in message


def test_mnist_cut_gzip_fails_clearly(official_files) -> None:
    folder, _ = official_files.mnist(n_train=50, n_test=10)
    gz = (folder / "train-images-idx3-ubyte.gz").read_bytes()
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz is not a complete gzip file"):
        load_dataset("mnist", data_dir=folder, cache=False)


def test_mnist_missing_directory_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"data directory {tmp_path / 'nope'} does not exist"):
        load_dataset("mnist", data_dir=tmp_path / "nope")
    with pytest.raises(DataError, match=r"has no train-images-idx3-ubyte\[.gz\]"):
        load_dataset("mnist", data_dir=tmp_path)


def test_download_checks_md5_and_tries_mirrors(tmp_path: Path) -> None:
    payload = b"some bytes" * 1000
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "file.bin").write_bytes(payload)
    good_md5 = hashlib.md5(payload).hexdigest()
    missing = (tmp_path / "nowhere" / "file.bin").as_uri()
    target = download(
        [missing, (tmp_path / "mirror" / "file.bin").as_uri()],
        tmp_path / "out" / "file.bin",
        good_md5,
    )
    assert target.read_bytes() == payload and md5_file(target) == good_md5
    with pytest.raises(
        DataError,
        match=r"checksum mismatch for other.bin .* md5 .*, expected 0{32} \(bad download deleted\)",
    ):
        download(
            [(tmp_path / "mirror" / "file.bin").as_uri()], tmp_path / "out" / "other.bin", "0" * 32
        )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "file.bin"
    ]  # no partial files left


def test_mnist_fake_download_with_bad_checksum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in mnist_module.FILES:
        (mirror / f"{name}.gz").write_bytes(gzip.compress(b"not mnist"))
    monkeypatch.setenv("LEANAUG_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(mnist_module, "MIRRORS", (mirror.as_uri() + "/",))
    with pytest.raises(DataError) as info:
        load_dataset("mnist")
    message = str(info.value)
    assert message.startswith("checksum mismatch for train-images-idx3-ubyte.gz")
    assert (mirror / "train-images-idx3-ubyte.gz").as_uri() in message
    assert "expected f68b3c2dcbeaaa9fbdd348bbdeb94873" in message and "pass --data-dir" in message
    assert list((tmp_path / "data" / "mnist").iterdir()) == []  # the bad file was deleted


def test_offline_without_local_copy_says_pass_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEANAUG_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(mnist_module, "MIRRORS", ((tmp_path / "offline").as_uri() + "/",))
    with pytest.raises(
        DataError, match="download failed for train-images-idx3-ubyte.gz .* pass --data-dir"
    ):
        load_dataset("mnist")
    with pytest.raises(DataError, match="downloads are off; pass --data-dir"):
        load_dataset("mnist", download=False)


# --- CIFAR-10 ---------------------------------------------------------------------


def test_cifar10_from_image_folder(cifar_first_load: tuple[ImageDataset, float]) -> None:
    ds, seconds = cifar_first_load
    print(f"CIFAR-10 JPEG export first load (decode): {seconds:.1f} s")
    assert ds.train_images.shape == (50000, 3, 32, 32)
    assert ds.test_images.shape == (10000, 3, 32, 32)
    assert ds.class_names == CIFAR10_NAMES
    assert np.bincount(ds.train_labels).tolist() == [5000] * 10
    assert np.bincount(ds.test_labels).tolist() == [1000] * 10
    assert ds.source == "CIFAR-10 (JPEG export)"
    # CIFAR-10's well-known channel means (0.491, 0.482, 0.447), up to JPEG loss
    means = ds.train_images.mean(axis=(0, 2, 3)) / 255
    np.testing.assert_allclose(means, [0.4914, 0.4822, 0.4465], atol=0.01)


def test_cifar10_second_load_comes_from_cache(
    real_data, cifar_first_load: tuple[ImageDataset, float]
) -> None:
    first, first_seconds = cifar_first_load
    start = time.perf_counter()
    again = load_dataset("cifar10", data_dir=real_data("cifar10-jpg"))
    seconds = time.perf_counter() - start
    print(f"CIFAR-10 JPEG export: first load {first_seconds:.1f} s, second {seconds:.2f} s")
    assert str(again.meta["cache"]).startswith(str(cache_root() / "datasets"))
    for key in ("train_images", "train_labels", "test_images", "test_labels"):
        assert np.array_equal(getattr(first, key), getattr(again, key))
    assert again.class_names == first.class_names and again.source == first.source
    # target < 2 s (see benchmarks/bench_data_cache.py); looser here for a busy CI machine
    assert seconds < min(5.0, first_seconds / 3)


def test_cifar10_select_by_names_keeps_given_order(official_files) -> None:
    # an image folder named like CIFAR-10's classes (as the JPEG export is): CIFAR-10's
    # official label order, not the sorted folder order
    counts = {name: 2 + i % 3 for i, name in enumerate(sorted(CIFAR10_NAMES))}
    folder = official_files.image_folder(counts, size=32, suffix=".jpg", name="cifar10-jpg")
    full = load_dataset("cifar10", data_dir=folder.parent, cache=False)
    assert full.class_names == CIFAR10_NAMES and full.source == "CIFAR-10 (JPEG export)"
    assert full.train_images.shape == (sum(counts.values()), 3, 32, 32)
    assert np.bincount(full.train_labels).tolist() == [counts[n] for n in CIFAR10_NAMES]
    ds = select_classes(full, ["automobile", "airplane"])
    assert ds.class_names == ("automobile", "airplane")
    n = counts["automobile"] + counts["airplane"]
    assert len(ds.train_labels) == n and len(ds.test_labels) == n
    first_airplane = int(np.flatnonzero(full.train_labels == 0)[0])
    position = int(np.flatnonzero(ds.meta["train_indices"] == first_airplane)[0])
    assert ds.train_labels[position] == 1
    assert np.array_equal(ds.train_images[position], full.train_images[first_airplane])


def test_image_folder_decodes_pngs_exactly_in_sorted_order(official_files) -> None:
    folder = official_files.image_folder({"zebra": 3, "ant": 2})
    ds = load_dataset("cifar10", data_dir=folder, cache=False)
    assert ds.class_names == ("ant", "zebra")  # not CIFAR-10's classes: sorted
    assert ds.source == "CIFAR-10 (image folder)"
    assert ds.train_labels.tolist() == [0, 0, 1, 1, 1]
    expected = np.asarray(Image.open(folder / "train" / "zebra" / "001.png")).transpose(2, 0, 1)
    assert np.array_equal(ds.train_images[3], expected)  # PNG is lossless


def test_image_folder_corrupt_file_and_size_mismatch(official_files) -> None:
    a = official_files.image_folder({"cat": 2, "dog": 2}, name="a")
    broken = a / "train" / "dog" / "001.png"
    broken.write_bytes(broken.read_bytes()[:30])
    with pytest.raises(DataError, match=f"cannot decode image {broken}"):
        load_dataset("cifar10", data_dir=a, cache=False)
    b = official_files.image_folder({"cat": 2}, name="b")
    odd = b / "test" / "cat" / "001.png"
    Image.new("RGB", (5, 4)).save(odd)
    with pytest.raises(DataError, match=f"{odd} is 5x4 pixels, expected 6x6"):
        load_dataset("cifar10", data_dir=b, cache=False)


def test_cifar10_python_batches_and_tarball(official_files) -> None:
    folder, arrays = official_files.cifar_batches(per_batch=3, n_test=4)
    ds = load_dataset("cifar10", data_dir=folder.parent, cache=False)
    assert ds.source == "CIFAR-10 (official python version)" and ds.class_names == CIFAR10_NAMES
    for key, array in arrays.items():
        assert np.array_equal(getattr(ds, key), array), key

    tar_dir = official_files.cifar_tarball(folder)
    from_tar = load_dataset("cifar10", data_dir=tar_dir, cache=False)
    assert np.array_equal(from_tar.train_images, ds.train_images)
    assert np.array_equal(from_tar.test_labels, ds.test_labels)
    cut = tar_dir / "cifar-10-python.tar.gz"
    cut.write_bytes(cut.read_bytes()[:-200])
    with pytest.raises(DataError, match="is not a complete CIFAR-10 tarball"):
        load_dataset("cifar10", data_dir=tar_dir, cache=False)


def test_cifar10_fake_download_with_bad_checksum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "cifar-10-python.tar.gz"
    fake.write_bytes(b"not a tarball")
    monkeypatch.setenv("LEANAUG_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(cifar10_module, "URL", fake.as_uri())
    with pytest.raises(
        DataError,
        match=r"checksum mismatch for cifar-10-python.tar.gz .*expected c58f30108f718f92721af3b95e74349a",
    ):
        load_dataset("cifar10")
    assert list((tmp_path / "data" / "cifar10").iterdir()) == []


# --- small NORB -------------------------------------------------------------------


@pytest.fixture
def norb_dir(official_files) -> tuple[Path, dict[str, np.ndarray]]:
    return official_files.smallnorb()  # training files gzipped, testing plain


def test_smallnorb_reader_on_tiny_files_in_the_real_format(
    norb_dir: tuple[Path, dict[str, np.ndarray]],
) -> None:
    folder, arrays = norb_dir
    ds = load_dataset("smallnorb", data_dir=folder)
    assert ds.class_names == ("animal", "human", "airplane", "truck", "car")
    assert ds.train_images.shape == (6, 1, 96, 96) and ds.test_images.shape == (4, 1, 96, 96)
    assert np.array_equal(
        ds.train_images[:, 0], arrays["train_pairs"][:, 0]
    )  # first image of each pair
    assert np.array_equal(ds.test_images[:, 0], arrays["test_pairs"][:, 0])
    assert ds.train_labels.tolist() == [0, 1, 2, 3, 4, 4] and ds.test_labels.dtype == np.int64
    assert np.array_equal(
        read_norb_matrix(folder / "smallnorb-5x01235x9x18x6x2x96x96-testing-dat.mat"),
        arrays["test_pairs"],
    )
    cars = load_dataset("smallnorb", data_dir=folder, classes=["car", "animal"])
    assert cars.train_labels.tolist() == [1, 0, 0] and cars.test_labels.tolist() == [0, 1]


def test_smallnorb_truncated_and_wrong_magic(norb_dir: tuple[Path, dict[str, np.ndarray]]) -> None:
    folder, _ = norb_dir
    dat = folder / "smallnorb-5x01235x9x18x6x2x96x96-testing-dat.mat"
    dat.write_bytes(dat.read_bytes()[:-10])
    with pytest.raises(
        DataError,
        match=f"{dat} is truncated: it ends inside the data \\(expected 4 x 2 x 96 x 96 uint8\\)",
    ):
        load_dataset("smallnorb", data_dir=folder, cache=False)
    dat.write_bytes(struct.pack("<ii", 0x12345678, 4) + bytes(64))
    with pytest.raises(DataError, match="is not a NORB binary matrix .*magic 0x12345678"):
        load_dataset("smallnorb", data_dir=folder, cache=False)


def test_smallnorb_bad_labels(norb_dir: tuple[Path, dict[str, np.ndarray]], official_files) -> None:
    folder, _ = norb_dir
    official_files.write_norb(
        folder / "smallnorb-5x01235x9x18x6x2x96x96-testing-cat.mat",
        np.array([0, 1, 7, 2], dtype=np.int32),
    )
    with pytest.raises(DataError, match=r"labels must be 0..4, found 0..7"):
        load_dataset("smallnorb", data_dir=folder, cache=False)


def test_cache_follows_source_changes(
    norb_dir: tuple[Path, dict[str, np.ndarray]], official_files
) -> None:
    folder, arrays = norb_dir
    first = load_dataset("smallnorb", data_dir=folder)
    second = load_dataset("smallnorb", data_dir=folder)
    assert second.meta["cache"] == first.meta["cache"]
    assert np.array_equal(second.train_images, first.train_images)
    cat = folder / "smallnorb-5x01235x9x18x6x2x96x96-testing-cat.mat"
    official_files.write_norb(cat, np.array([1, 1, 1, 1], dtype=np.int32))
    os.utime(cat, ns=(time.time_ns(), time.time_ns() + 10**9))  # a new mtime even on coarse clocks
    third = load_dataset("smallnorb", data_dir=folder)
    assert third.test_labels.tolist() == [1, 1, 1, 1]
    assert third.meta["cache"] != second.meta["cache"]


# --- digits and selection -----------------------------------------------------------


def test_digits_fixed_stratified_split() -> None:
    ds = load_dataset("digits")
    assert ds.train_images.shape == (1347, 1, 8, 8) and ds.test_images.shape == (450, 1, 8, 8)
    assert ds.train_images.max() == 255 and ds.train_images.dtype == np.uint8
    fractions = np.bincount(ds.test_labels) / (
        np.bincount(ds.test_labels) + np.bincount(ds.train_labels)
    )
    np.testing.assert_allclose(fractions, 0.25, atol=0.01)
    assert np.array_equal(load_dataset("digits").train_labels, ds.train_labels)


def test_select_classes_remaps_labels_in_given_order() -> None:
    full = load_dataset("digits")
    ds = load_dataset("digits", classes=[8, "3"])
    assert ds.class_names == ("8", "3")
    assert (ds.train_labels == 0).sum() == (full.train_labels == 8).sum()
    assert (ds.test_labels == 1).sum() == (full.test_labels == 3).sum()
    assert np.array_equal(
        ds.train_images[ds.train_labels == 0], full.train_images[full.train_labels == 8]
    )
    assert load_dataset("digits", classes="8,3").class_names == ("8", "3")


def test_subset_first_and_random() -> None:
    full = load_dataset("digits", classes=[1, 7])
    first = load_dataset("digits", classes=[1, 7], n_train=50, subset="first")
    assert np.array_equal(first.train_images, full.train_images[:50])
    assert np.array_equal(first.test_labels, full.test_labels)  # test split untouched
    a = load_dataset("digits", classes=[1, 7], n_train=50, seed=1)
    b = load_dataset("digits", classes=[1, 7], n_train=50, seed=1)
    c = load_dataset("digits", classes=[1, 7], n_train=50, seed=2)
    assert np.array_equal(a.train_images, b.train_images)
    assert not np.array_equal(a.meta["train_indices"], c.meta["train_indices"])
    base = load_dataset("digits")
    assert np.array_equal(base.train_images[a.meta["train_indices"]], a.train_images)
    assert set(base.train_labels[a.meta["train_indices"]]) <= {1, 7}


def test_selection_errors() -> None:
    with pytest.raises(
        DataError, match=r"unknown class 'cat'; valid classes: 0, 1, 2, .*9 \(or indices 0..9\)"
    ):
        load_dataset("digits", classes=["cat"])
    with pytest.raises(DataError, match="class list is empty"):
        load_dataset("digits", classes=[])
    with pytest.raises(
        DataError, match=r"n_train=400 is larger than the 270 training images of digits \(1, 7\)"
    ):
        load_dataset("digits", classes=[1, 7], n_train=400)
    with pytest.raises(DataError, match="listed twice"):
        load_dataset("digits", classes=[1, "1"])
    with pytest.raises(DataError, match="unknown subset 'best'"):
        load_dataset("digits", n_train=5, subset="best")
    with pytest.raises(
        UnknownNameError,
        match="unknown data set 'imagenet'; valid names: cifar10, digits, mnist, smallnorb",
    ):
        load_dataset("imagenet")
    assert isinstance(DataError("x"), LeanaugError)
    assert DATASETS.names() == ["cifar10", "digits", "mnist", "smallnorb"]
