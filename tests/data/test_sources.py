"""Tests for the dataset sources (selfsup/data/*.py, by name in selfsup.data.sources): every source is fed
small files in its real format."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.data import DATASETS, DatasetError, ImageDataset, list_datasets, load_dataset
from selfsup.data import cifar, fashion_mnist

REAL_FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No env data dir, no downloads, an empty cache and no system Fashion-MNIST."""
    monkeypatch.delenv("SELFSUP_DATA", raising=False)
    monkeypatch.setenv("SELFSUP_ALLOW_DOWNLOAD", "0")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_SYSTEM_DIRS", [tmp_path / "no-system-dir"])


# ---------------------------------------------------------------------------
# helpers that write the real on-disk formats
# ---------------------------------------------------------------------------


def write_idx(path: Path, arr: np.ndarray, gz: bool = False, magic_type: int = 0x08) -> Path:
    """Write a uint8 idx file (big-endian header) optionally gzipped."""
    header = bytes([0, 0, magic_type, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    payload = header + arr.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def make_fmnist(folder: Path, n_train: int = 6, n_test: int = 4, gz_train: bool = True) -> dict:
    """Random Fashion-MNIST idx files in ``folder``; returns the arrays written."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    data = {}
    for split, stem, n, gz in (("train", "train", n_train, gz_train), ("test", "t10k", n_test, not gz_train)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(folder / f"{stem}-images-idx3-ubyte", x, gz)
        write_idx(folder / f"{stem}-labels-idx1-ubyte", y, gz)
        data[split] = (x, y)
    return data


def write_pickle(path: Path, obj: object, protocol: int = 2) -> None:
    """Pickle with protocol 2 by default, as the original (python 2) CIFAR files are."""
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


def make_cifar10(parent: Path, per_batch: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A tiny cifar-10-batches-py folder; returns (train data, train labels, test data)."""
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    xs, ys = [], []
    for i in range(1, 6):
        x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, per_batch)]
        write_pickle(folder / f"data_batch_{i}", {b"batch_label": b"x", b"data": x, b"labels": y})
        xs.append(x)
        ys += y
    xt = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
    write_pickle(folder / "test_batch", {b"data": xt, b"labels": [1, 2, 3]})
    names = [n.encode() for n in cifar.CIFAR10_CLASSES]
    write_pickle(folder / "batches.meta", {b"label_names": names, b"num_vis": 3072})
    return np.concatenate(xs), np.array(ys), xt


def save_png(path: Path, arr: np.ndarray) -> None:
    """Save a uint8 HxW or HxWx3 array as PNG (lossless)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


class Evil:
    """A pickle payload that would run a shell command when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ---------------------------------------------------------------------------
# registry / container
# ---------------------------------------------------------------------------


def test_registry_names() -> None:
    assert list_datasets() == [
        "fashion-mnist",
        "digits",
        "cifar10",
        "cifar100",
        "imagefolder",
        "array",
        "signals",
        "color-fashion-mnist",
        "color-digits",
        "tinted-fashion-mnist",
        "tinted-digits",
        "captioned-fashion-mnist",
        "captioned-digits",
        "moving-shapes",
    ]
    assert set(DATASETS) == set(list_datasets())


def test_unknown_name_suggests_and_lists() -> None:
    with pytest.raises(DatasetError) as exc:
        load_dataset("cifar-10")
    msg = str(exc.value)
    assert "did you mean 'cifar10'" in msg
    assert "fashion-mnist" in msg and "imagefolder" in msg


def test_bad_split_rejected() -> None:
    with pytest.raises(DatasetError, match="train, test"):
        load_dataset("digits", split="val")


def test_container_properties_and_subset() -> None:
    images = torch.arange(5 * 3 * 4 * 4, dtype=torch.int64).remainder(256).to(torch.uint8).view(5, 3, 4, 4)
    ds = ImageDataset(images, torch.tensor([0, 1, 2, 0, 1]), ["a", "b", "c"], "toy")
    assert len(ds) == 5 and ds.channels == 3 and ds.image_size == 4
    sub = ds.subset(torch.tensor([4, 0]))
    assert torch.equal(sub.images, images[[4, 0]]) and sub.labels.tolist() == [1, 0]
    assert sub.classes == ["a", "b", "c"] and sub.name == "toy"
    with pytest.raises(ValueError, match="not square"):
        _ = ImageDataset(torch.zeros(1, 1, 4, 5, dtype=torch.uint8), None, None, "x").image_size
    with pytest.raises(ValueError):
        ImageDataset(torch.zeros(1, 1, 4, 4), None, None, "float")


# ---------------------------------------------------------------------------
# labelled_subset
# ---------------------------------------------------------------------------


def _imbalanced(n_per_class: list[int]) -> ImageDataset:
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(n_per_class)])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(5))]
    images = torch.arange(len(labels)).remainder(256).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 2, 2)
    return ImageDataset(images.clone(), labels, [str(c) for c in range(len(n_per_class))], "toy")


def test_labelled_subset_balanced_deterministic() -> None:
    ds = _imbalanced([150, 90, 120, 200, 101, 80, 99, 130, 60, 70])  # 1100 images
    a = ds.labelled_subset(0.1, seed=3)
    b = ds.labelled_subset(0.1, seed=3)
    c = ds.labelled_subset(0.1, seed=4)
    assert len(a) == 110
    counts = torch.bincount(a.labels, minlength=10)
    assert counts.max() - counts.min() <= 1 and counts.min() >= 10
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)


def test_labelled_subset_at_least_one_per_class_and_small_classes() -> None:
    ds = _imbalanced([500, 3, 400, 300])
    tiny = ds.labelled_subset(0.001)
    assert sorted(tiny.labels.tolist()) == [0, 1, 2, 3]
    half = ds.labelled_subset(0.5)  # 602 wanted; class 1 only has 3
    counts = torch.bincount(half.labels, minlength=4)
    assert len(half) == round(0.5 * 1203)
    assert counts[1] == 3 and counts[[0, 2, 3]].max() - counts[[0, 2, 3]].min() <= 1


def test_labelled_subset_needs_labels() -> None:
    ds = ImageDataset(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), None, None, "u")
    with pytest.raises(ValueError, match="labels"):
        ds.labelled_subset(0.5)


# ---------------------------------------------------------------------------
# Fashion-MNIST
# ---------------------------------------------------------------------------


def test_fmnist_from_root_torchvision_layout_gz_and_plain(tmp_path: Path) -> None:
    data = make_fmnist(tmp_path / "d" / "FashionMNIST" / "raw")
    for split in ("train", "test"):
        ds = load_dataset("fashion-mnist", split, root=tmp_path / "d")
        x, y = data[split]
        assert ds.images.shape == (len(x), 1, 28, 28) and ds.images.dtype == torch.uint8
        assert np.array_equal(ds.images[:, 0].numpy(), x)
        assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == y.tolist()
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot" and ds.name == "fashion-mnist"


def test_fmnist_from_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_fmnist(tmp_path / "env" / "fashion-mnist", gz_train=False)
    monkeypatch.setenv("SELFSUP_DATA", str(tmp_path / "env"))
    ds = load_dataset("fashion-mnist", "train")
    assert np.array_equal(ds.images[:, 0].numpy(), data["train"][0])


def test_fmnist_image_size_resizes(tmp_path: Path) -> None:
    make_fmnist(tmp_path)
    ds = load_dataset("fashion-mnist", "train", root=tmp_path, image_size=32)
    assert ds.images.shape == (6, 1, 32, 32) and ds.images.dtype == torch.uint8


def test_fmnist_bad_magic_names_file(tmp_path: Path) -> None:
    make_fmnist(tmp_path)
    zeros = np.zeros((2, 28, 28), np.uint8)
    bad = write_idx(tmp_path / "train-images-idx3-ubyte", zeros, gz=True, magic_type=0x0D)
    with pytest.raises(DatasetError, match="magic") as exc:
        load_dataset("fashion-mnist", "train", root=tmp_path)
    assert str(bad) in str(exc.value)


def test_fmnist_truncated_names_file(tmp_path: Path) -> None:
    make_fmnist(tmp_path, gz_train=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DatasetError, match="truncated") as exc:
        load_dataset("fashion-mnist", "train", root=tmp_path)
    assert str(path) in str(exc.value)


def test_fmnist_missing_names_all_fixes(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as exc:
        load_dataset("fashion-mnist", "train", root=tmp_path / "empty")
    msg = str(exc.value)
    for fix in ("--data-dir", "SELFSUP_DATA", "apt-get install dataset-fashion-mnist", "internet"):
        assert fix in msg
    assert str(tmp_path / "empty") in msg and "SELFSUP_ALLOW_DOWNLOAD=0" in msg


@pytest.mark.skipif(not REAL_FMNIST.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_fmnist_real_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_SYSTEM_DIRS", [REAL_FMNIST])
    train = load_dataset("fashion-mnist", "train")  # its speed is measured by benchmarks, not asserted here
    test = load_dataset("fashion-mnist", "test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10


# ---------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------


def test_digits_split() -> None:
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert train.images.shape[1:] == (1, 8, 8) and test.images.shape[1:] == (1, 8, 8)
    assert len(train) + len(test) == 1797
    assert abs(len(train) - 0.8 * 1797) < 10
    assert train.classes == [str(d) for d in range(10)]
    assert set(train.labels.tolist()) == set(range(10)) == set(test.labels.tolist())
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    again = load_dataset("digits", "train")
    assert torch.equal(train.images, again.images) and torch.equal(train.labels, again.labels)
    # stratified: each class is split ~80/20
    ratio = torch.bincount(train.labels) / (torch.bincount(train.labels) + torch.bincount(test.labels))
    assert torch.all((ratio - 0.8).abs() < 0.01)


# ---------------------------------------------------------------------------
# CIFAR
# ---------------------------------------------------------------------------


def test_cifar10_folder_or_parent(tmp_path: Path) -> None:
    x, y, xt = make_cifar10(tmp_path)
    for root in (tmp_path, tmp_path / "cifar-10-batches-py"):
        ds = load_dataset("cifar10", "train", root=root)
        assert ds.images.shape == (10, 3, 32, 32)
        assert np.array_equal(ds.images.numpy(), x.reshape(-1, 3, 32, 32))
        assert ds.labels.tolist() == y.tolist() and ds.classes == cifar.CIFAR10_CLASSES
    test = load_dataset("cifar10", "test", root=tmp_path)
    assert np.array_equal(test.images.numpy(), xt.reshape(-1, 3, 32, 32))
    assert test.labels.tolist() == [1, 2, 3]
    # the channel layout is R-plane, G-plane, B-plane
    assert np.array_equal(test.images[0, 1].flatten().numpy(), xt[0, 1024:2048])


def test_cifar100(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    x = np.random.default_rng(3).integers(0, 256, (4, 3072), dtype=np.uint8)
    proto = pickle.HIGHEST_PROTOCOL  # also cover modern pickles (no _codecs needed)
    train = {b"data": x, b"fine_labels": [0, 99, 5, 7], b"coarse_labels": [0, 1, 2, 3]}
    write_pickle(folder / "train", train, proto)
    write_pickle(folder / "test", {b"data": x[:2], b"fine_labels": [3, 4], b"coarse_labels": [0, 0]}, proto)
    names = [f"class{i}".encode() for i in range(100)]
    write_pickle(folder / "meta", {b"fine_label_names": names, b"coarse_label_names": names[:20]}, proto)
    ds = load_dataset("cifar100", "train", root=tmp_path, image_size=16)
    assert ds.images.shape == (4, 3, 16, 16) and ds.labels.tolist() == [0, 99, 5, 7]
    assert len(ds.classes) == 100 and ds.classes[99] == "class99"
    test = load_dataset("cifar100", "test", root=folder)
    assert np.array_equal(test.images.numpy(), x[:2].reshape(-1, 3, 32, 32))


def test_cifar_missing_names_data_dir(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="--data-dir"):
        load_dataset("cifar10", root=tmp_path)
    with pytest.raises(DatasetError, match="SELFSUP_DATA"):
        load_dataset("cifar100")


def test_malicious_pickle_refused_and_not_run(tmp_path: Path) -> None:
    make_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    write_pickle(tmp_path / "cifar-10-batches-py" / "data_batch_3", {b"data": Evil(marker), b"labels": [0]})
    with pytest.raises(DatasetError, match="refused") as exc:
        load_dataset("cifar10", root=tmp_path)
    assert "system" in str(exc.value) and "data_batch_3" in str(exc.value)
    assert not marker.exists()


def test_codecs_only_latin1(tmp_path: Path) -> None:
    """The one non-numpy global allowed (_codecs.encode) cannot be used with other codecs."""
    import _codecs

    class Sneaky:
        def __reduce__(self):
            return (_codecs.encode, ("abc", "rot13"))

    path = tmp_path / "sneaky"
    write_pickle(path, {b"x": Sneaky()})
    with pytest.raises(DatasetError, match="rot13"):
        cifar.safe_unpickle(path)


# ---------------------------------------------------------------------------
# image folder
# ---------------------------------------------------------------------------


def _rng_image(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_imagefolder_labelled_mixed_with_bad_files(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    rgb = _rng_image(0, (32, 32, 3))
    gray = _rng_image(1, (32, 32))
    smooth = np.tile(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], (32, 1, 3))
    save_png(root / "cat" / "a.png", rgb)
    Image.fromarray(smooth).save(root / "cat" / "b.jpg", quality=95)
    (root / "cat" / "notes.txt").write_text("not an image")
    save_png(root / "dog" / "c.png", gray)
    (root / "dog" / "bad.png").write_bytes(np.random.default_rng(9).bytes(500))
    (root / "dog" / "empty.jpg").write_bytes(b"")
    with pytest.warns(UserWarning) as rec:
        ds = load_dataset("imagefolder", root=root)
    msg = str(rec[0].message)
    assert "skipped 2 unreadable files" in msg and len(rec) == 2
    assert "bad.png" in msg and "empty.jpg" in msg and "notes.txt" not in msg
    assert "ignored 1 non-image file" in str(rec[1].message) and "notes.txt" in str(rec[1].message)
    assert ds.classes == ["cat", "dog"] and ds.labels.tolist() == [0, 0, 1]
    assert ds.images.shape == (3, 3, 32, 32) and ds.channels == 3  # mixed gray/RGB -> RGB
    assert np.array_equal(ds.images[0].permute(1, 2, 0).numpy(), rgb)
    assert np.abs(ds.images[1].permute(1, 2, 0).numpy().astype(int) - smooth).mean() < 3
    assert all(np.array_equal(ds.images[2, c].numpy(), gray) for c in range(3))


def test_imagefolder_unlabelled_gray_stays_one_channel(tmp_path: Path) -> None:
    imgs = [_rng_image(i, (16, 16)) for i in range(3)]
    save_png(tmp_path / "u" / "x0.png", imgs[0])
    save_png(tmp_path / "u" / "x1.png", imgs[1])
    save_png(tmp_path / "u" / "deep" / "er" / "x2.png", imgs[2])
    ds = load_dataset("imagefolder", root=tmp_path / "u", image_size=16)
    assert ds.labels is None and ds.classes is None and ds.channels == 1
    assert ds.images.shape == (3, 1, 16, 16)
    # sorted paths: deep/er/x2.png, x0.png, x1.png
    for got, want in zip(ds.images[:, 0].numpy(), [imgs[2], imgs[0], imgs[1]]):
        assert np.array_equal(got, want)


def test_imagefolder_shorter_side_resize_and_centre_crop(tmp_path: Path) -> None:
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, :10] = (255, 0, 0)
    wide[:, 10:30] = (0, 255, 0)
    wide[:, 30:] = (0, 0, 255)
    save_png(tmp_path / "w" / "wide.png", wide)
    ds = load_dataset("imagefolder", root=tmp_path / "w", image_size=20)
    assert ds.images.shape == (1, 3, 20, 20)
    assert (ds.images[0, 1] == 255).all() and (ds.images[0, [0, 2]] == 0).all()  # only the green middle
    small = load_dataset("imagefolder", root=tmp_path / "w", image_size=10)
    assert small.images.shape == (1, 3, 10, 10)


def test_imagefolder_train_test_layout(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("a", "b"):
            for i in range(n):
                save_png(tmp_path / split / cls / f"{i}.png", _rng_image(i, (8, 8, 3)))
    train = load_dataset("imagefolder", "train", root=tmp_path, image_size=8)
    test = load_dataset("imagefolder", "test", root=tmp_path, image_size=8)
    assert len(train) == 6 and len(test) == 4 and test.classes == ["a", "b"]
    assert test.labels.tolist() == [0, 0, 1, 1]


def test_imagefolder_errors(tmp_path: Path) -> None:
    save_png(tmp_path / "flat" / "a.png", _rng_image(0, (8, 8)))
    with pytest.raises(DatasetError) as exc:
        load_dataset("imagefolder", "test", root=tmp_path / "flat")
    assert "no test split" in str(exc.value) and "train/" in str(exc.value) and "test/" in str(exc.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no image files"):
        load_dataset("imagefolder", root=tmp_path / "empty")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="skipped 1"), pytest.raises(DatasetError, match="could be decoded"):
        load_dataset("imagefolder", root=tmp_path / "broken")
    with pytest.raises(DatasetError, match="--data-dir"):
        load_dataset("imagefolder")


# ---------------------------------------------------------------------------
# arrays
# ---------------------------------------------------------------------------


def test_array_npy_nhw_uint8(tmp_path: Path) -> None:
    x = _rng_image(0, (5, 6, 6))
    np.save(tmp_path / "x.npy", x)
    ds = load_dataset("array", root=tmp_path / "x.npy")
    assert ds.images.shape == (5, 1, 6, 6) and ds.labels is None
    assert np.array_equal(ds.images[:, 0].numpy(), x)


def test_array_npz_nhwc_float_with_labels_and_test_split(tmp_path: Path) -> None:
    x = _rng_image(1, (4, 5, 5, 3))
    xt = _rng_image(2, (2, 5, 5, 3))
    np.savez(tmp_path / "d.npz", x=x.astype(np.float32) / 255, y=np.array([0, 2, 1, 2]),
             x_test=xt, y_test=np.array([1, 0]))  # fmt: skip
    ds = load_dataset("array", root=tmp_path / "d.npz")
    assert ds.images.shape == (4, 3, 5, 5)
    assert np.array_equal(ds.images.permute(0, 2, 3, 1).numpy(), x)
    assert ds.labels.tolist() == [0, 2, 1, 2] and ds.classes == ["0", "1", "2"]
    test = load_dataset("array", "test", root=tmp_path / "d.npz")
    assert np.array_equal(test.images.permute(0, 2, 3, 1).numpy(), xt) and test.labels.tolist() == [1, 0]


def test_array_npz_nchw_images_labels_and_resize(tmp_path: Path) -> None:
    x = _rng_image(3, (3, 1, 4, 4))
    x[2] = 77  # a constant image must stay exactly constant after resizing
    np.savez(tmp_path / "d.npz", images=x, labels=np.array([1, 1, 0]))
    ds = load_dataset("array", root=tmp_path / "d.npz")
    assert np.array_equal(ds.images.numpy(), x) and ds.labels.tolist() == [1, 1, 0]
    big = load_dataset("array", root=tmp_path / "d.npz", image_size=8)
    assert big.images.shape == (3, 1, 8, 8) and big.images.dtype == torch.uint8
    assert (big.images[2] == 77).all()
    with pytest.raises(DatasetError, match="x_test"):
        load_dataset("array", "test", root=tmp_path / "d.npz")


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"x": np.full((2, 4, 4), np.nan, np.float32)}, "2 of 2 images contain NaN"),
        ({"x": np.full((2, 4, 4), -2.0)}, r"\[0, 1\] or \[0, 255\]"),
        ({"x": np.zeros((2, 16), np.uint8)}, r"\[N, H, W\]"),
        ({"x": np.zeros((2, 4, 4), np.uint8), "y": np.array([0, -1])}, "negative"),
        ({"z": np.zeros((2, 4, 4), np.uint8)}, "images, x, X"),
    ],
)
def test_array_errors(tmp_path: Path, arrays: dict, match: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DatasetError, match=match):
        load_dataset("array", root=tmp_path / "bad.npz")


def test_array_missing_path_names_data_dir(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="--data-dir"):
        load_dataset("array", root=tmp_path / "nope.npz")
