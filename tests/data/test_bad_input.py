"""Bad input to the dataset sources (issue 9): every case either loads what is good and counts what
was skipped in one warning, or fails with a DatasetError that names the fix."""

from __future__ import annotations

import io
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.transforms.views import ViewConfig
from selfsup.data import DatasetError, load_dataset
from selfsup.data import cifar
from selfsup.transforms import Views


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SELFSUP_DATA", raising=False)
    monkeypatch.setenv("SELFSUP_ALLOW_DOWNLOAD", "0")


def noise(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def encoded(arr: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(arr) if mode is None else Image.fromarray(arr, mode)
    img.save(buf, format=fmt)
    return buf.getvalue()


def put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def load_folder(root: Path, **kw):
    """load_dataset('imagefolder') and the messages of the warnings it gave."""
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ds = load_dataset("imagefolder", root=root, **kw)
    return ds, [str(w.message) for w in rec]


def good_images(root: Path, n: int = 3, side: int = 16) -> list[np.ndarray]:
    imgs = [noise(i, (side, side, 3)) for i in range(n)]
    for i, a in enumerate(imgs):
        put(root / f"good{i}.png", encoded(a))
    return imgs


# ---------------------------------------------------------------------------
# image folders: skipped files are counted
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image_is_skipped_counted_and_named(tmp_path: Path, fmt: str) -> None:
    imgs = good_images(tmp_path, 3)
    whole = encoded(noise(9, (32, 32, 3)), fmt)
    put(tmp_path / f"cut.{fmt.lower()}", whole[: len(whole) // 2])
    ds, msgs = load_folder(tmp_path, image_size=16)
    assert len(msgs) == 1 and "skipped 1 unreadable file:" in msgs[0] and f"cut.{fmt.lower()}" in msgs[0]
    assert "truncated" in msgs[0] and "delete or re-export" in msgs[0]
    assert len(ds) == 3  # the good images, exactly as written
    for got, want in zip(ds.images, imgs):
        assert np.array_equal(got.permute(1, 2, 0).numpy(), want)


def test_zero_byte_files_are_skipped_and_counted(tmp_path: Path) -> None:
    good_images(tmp_path, 2)
    put(tmp_path / "empty1.png", b"")
    put(tmp_path / "empty2.jpg", b"")
    ds, msgs = load_folder(tmp_path, image_size=16)
    assert len(ds) == 2
    assert len(msgs) == 1 and "skipped 2 unreadable files" in msgs[0]
    assert "empty1.png" in msgs[0] and "empty2.jpg" in msgs[0]


def test_non_image_files_are_ignored_and_counted_apart_from_unreadable_ones(tmp_path: Path) -> None:
    imgs = good_images(tmp_path, 3)
    put(tmp_path / "notes.txt", b"shot on a sunny day")
    put(tmp_path / ".DS_Store", b"\x00\x00\x00\x01Bud1")
    put(tmp_path / "sub" / "README", b"no extension")
    put(tmp_path / "bad.png", b"\x89PNG\r\n\x1a\n not really")
    put(tmp_path / ".git" / "config", b"[core]")  # inside a hidden folder: nobody's images, not counted
    put(
        tmp_path / "captions.tsv", b"".join(b"good%d.png\tpicture %d\n" % (i, i) for i in range(3))
    )  # read, not counted
    ds, msgs = load_folder(tmp_path, image_size=16)
    assert len(ds) == 3 and ds.captions == ["picture 0", "picture 1", "picture 2"]
    unreadable = [m for m in msgs if "unreadable" in m]
    ignored = [m for m in msgs if "non-image" in m]
    assert len(msgs) == 2 and len(unreadable) == 1 and len(ignored) == 1
    assert "skipped 1 unreadable file:" in unreadable[0] and "bad.png" in unreadable[0]
    assert "ignored 3 non-image files" in ignored[0]
    for name in ("notes.txt", ".DS_Store", "sub/README"):
        assert name in ignored[0]
    assert ".git" not in ignored[0] and "captions.tsv" not in ignored[0]
    good = {a.tobytes() for a in imgs}
    assert {x.permute(1, 2, 0).numpy().tobytes() for x in ds.images} == good


def test_many_unreadable_files_are_counted_exactly_and_only_the_first_named(tmp_path: Path) -> None:
    good_images(tmp_path, 2)
    for i in range(7):
        put(tmp_path / f"z{i}.png", bytes([i]) * 10)
    ds, msgs = load_folder(tmp_path, image_size=16)
    assert len(ds) == 2 and len(msgs) == 1
    assert "skipped 7 unreadable files" in msgs[0] and msgs[0].count(".png") == 5 and ", ..." in msgs[0]


# ---------------------------------------------------------------------------
# image folders: channels
# ---------------------------------------------------------------------------


def test_gray_rgb_rgba_and_palette_become_three_channels(tmp_path: Path) -> None:
    rgb = noise(0, (8, 8, 3))
    gray = noise(1, (8, 8))
    rgba = np.concatenate([rgb, np.full((8, 8, 1), 255, np.uint8)], axis=2)
    rgba[:4, :, 3] = 0  # top half transparent: composited onto black, whatever colour lies beneath
    palette = Image.fromarray(noise(2, (8, 8, 3))).quantize(colors=16)
    put(tmp_path / "a_rgb.png", encoded(rgb))
    put(tmp_path / "b_gray.png", encoded(gray))
    put(tmp_path / "c_rgba.png", encoded(rgba))
    palette.save(tmp_path / "d_palette.png")
    ds, msgs = load_folder(tmp_path, image_size=8)
    assert msgs == [] and ds.images.shape == (4, 3, 8, 8) and ds.channels == 3
    assert np.array_equal(ds.images[0].permute(1, 2, 0).numpy(), rgb)
    assert all(np.array_equal(ds.images[1, c].numpy(), gray) for c in range(3))  # gray replicated
    assert (ds.images[2, :, :4] == 0).all()
    assert np.array_equal(ds.images[2, :, 4:].permute(1, 2, 0).numpy(), rgb[4:])
    assert np.array_equal(ds.images[3].permute(1, 2, 0).numpy(), np.asarray(palette.convert("RGB")))


def test_all_gray_folder_stays_one_channel_including_16_bit_and_alpha(tmp_path: Path) -> None:
    gray = noise(3, (8, 8))
    deep = np.full((8, 8), 65535, np.uint16)
    deep[4:] = 32896  # 128 * 257: mid gray in 16 bits
    la = np.stack([gray, np.full((8, 8), 255, np.uint8)], axis=2)
    put(tmp_path / "a.png", encoded(gray))
    put(tmp_path / "b16.png", encoded(deep))  # Pillow's convert("L") would clip this to white
    put(tmp_path / "c_la.png", encoded(la, mode="LA"))
    Image.fromarray(np.where(gray > 127, 255, 0).astype(np.uint8)).convert("1").save(tmp_path / "d_bits.png")
    ds, msgs = load_folder(tmp_path, image_size=8)
    assert msgs == [] and ds.images.shape == (4, 1, 8, 8)
    assert np.array_equal(ds.images[0, 0].numpy(), gray)
    assert (ds.images[1, 0, :4] == 255).all() and (ds.images[1, 0, 4:] == 128).all()
    assert np.array_equal(ds.images[2, 0].numpy(), gray)
    assert set(np.unique(ds.images[3].numpy())) <= {0, 255}


# ---------------------------------------------------------------------------
# image folders: nothing to load
# ---------------------------------------------------------------------------


def test_empty_folder_names_the_fix(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError) as e:
        load_dataset("imagefolder", root=tmp_path / "empty")
    msg = str(e.value)
    assert "no image files" in msg and "it is empty" in msg and "--data-dir" in msg and ".png" in msg


def test_folder_of_only_non_images_says_what_it_holds(tmp_path: Path) -> None:
    put(tmp_path / "docs" / "notes.txt", b"x")
    put(tmp_path / "docs" / "table.csv", b"a,b")
    with pytest.raises(DatasetError) as e:
        load_dataset("imagefolder", root=tmp_path / "docs")
    msg = str(e.value)
    assert "no image files" in msg and "2 other files" in msg and "notes.txt" in msg and "table.csv" in msg
    assert "--data-dir" in msg


def test_folder_of_only_unreadable_images_counts_them_and_names_the_fix(tmp_path: Path) -> None:
    put(tmp_path / "a.png", b"")
    put(tmp_path / "b.jpg", b"\xff\xd8\xff garbage")
    with pytest.warns(UserWarning, match="skipped 2 unreadable files"):
        with pytest.raises(DatasetError) as e:
            load_dataset("imagefolder", root=tmp_path)
    assert "none of the 2 image files" in str(e.value) and "--data-dir" in str(e.value)


# ---------------------------------------------------------------------------
# image folders: sizes
# ---------------------------------------------------------------------------


def test_images_smaller_than_the_image_size_are_scaled_up(tmp_path: Path) -> None:
    put(tmp_path / "a_tiny.png", encoded(np.full((4, 4, 3), (200, 10, 90), np.uint8)))
    put(tmp_path / "b_dot.png", encoded(np.full((1, 1, 3), 77, np.uint8)))
    halves = np.zeros((4, 6, 3), np.uint8)
    halves[:, 3:] = 255  # dark left half, bright right half, wider than tall
    put(tmp_path / "c_halves.png", encoded(halves))
    ds, msgs = load_folder(tmp_path, image_size=32)
    assert msgs == [] and ds.images.shape == (3, 3, 32, 32)
    assert (ds.images[0].permute(1, 2, 0) == torch.tensor([200, 10, 90], dtype=torch.uint8)).all()
    assert (ds.images[1] == 77).all()
    row = ds.images[2, 0, 16].float()  # shorter side to 32 (48 wide), centre crop: left dark, right bright
    assert row[:4].max() < 60 and row[-4:].min() > 195


def test_views_larger_than_the_images_scale_the_crops_up() -> None:
    images = torch.from_numpy(noise(4, (3, 1, 8, 8)))
    cfg = ViewConfig(size=20, blur_p=(0.5, 0.5), num_local=2, local_size=6)
    views = Views(cfg, [0.5], [0.25], image_size=8)(images, torch.Generator().manual_seed(0))
    assert [tuple(v.shape) for v in views] == [(3, 1, 20, 20)] * 2 + [(3, 1, 6, 6)] * 2
    assert all(torch.isfinite(v).all() for v in views)


# ---------------------------------------------------------------------------
# image folders: classes
# ---------------------------------------------------------------------------


def test_an_empty_class_folder_keeps_its_label_with_a_warning(tmp_path: Path) -> None:
    for cls, n in (("cat", 2), ("dog", 0), ("eel", 1)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            put(tmp_path / cls / f"{i}.png", encoded(noise(i, (8, 8))))
    ds, msgs = load_folder(tmp_path, image_size=8)
    assert ds.classes == ["cat", "dog", "eel"] and ds.labels.tolist() == [0, 0, 2]
    assert len(msgs) == 1 and "1 of 3 classes have no readable images" in msgs[0] and "dog" in msgs[0]


def test_a_class_missing_from_test_keeps_train_and_test_labels_aligned(tmp_path: Path) -> None:
    for split, classes in (("train", ("a", "b", "c")), ("test", ("a", "c"))):
        for cls in classes:
            put(tmp_path / split / cls / "0.png", encoded(noise(len(cls), (8, 8))))
    put(tmp_path / "test" / "c" / "1.png", b"")  # unreadable: counted, the class still has one image
    train, _ = load_folder(tmp_path, image_size=8)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        test = load_dataset("imagefolder", "test", root=tmp_path, image_size=8)
    msgs = [str(w.message) for w in rec]
    assert train.classes == test.classes == ["a", "b", "c"]
    assert train.labels.tolist() == [0, 1, 2] and test.labels.tolist() == [0, 2]  # 'c' is 2 in both splits
    assert any("skipped 1 unreadable file" in m for m in msgs)
    assert any("1 of 3 classes have no readable images" in m and ": b;" in m for m in msgs)


# ---------------------------------------------------------------------------
# arrays
# ---------------------------------------------------------------------------


def npz(tmp_path: Path, **arrays) -> Path:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


def array_error(path: Path, split: str = "train") -> str:
    with pytest.raises(DatasetError) as e:
        load_dataset("array", split, root=path)
    return str(e.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_names_the_first_bad_row_and_how_to_drop_it(tmp_path: Path, bad: float) -> None:
    x = np.random.default_rng(0).random((6, 4, 4)).astype(np.float32)
    x[3, 1, 2] = bad
    x[5, 0, 0] = bad
    msg = array_error(npz(tmp_path, x=x, y=np.arange(6) % 2))
    assert "2 of 6 images contain NaN or inf" in msg and "images 3, 5" in msg
    assert "np.isfinite" in msg and "y[keep]" in msg


def test_uint8_float01_float255_and_int_images_load_the_same(tmp_path: Path) -> None:
    x = noise(5, (4, 6, 6))
    ref = load_dataset("array", root=npz(tmp_path, x=x)).images
    for variant in (x / 255.0, (x / 255.0).astype(np.float32), x.astype(np.float32), x.astype(np.int64)):
        got = load_dataset("array", root=npz(tmp_path, x=variant)).images
        assert got.dtype == torch.uint8 and torch.equal(got, ref), variant.dtype


@pytest.mark.parametrize(
    ("x", "needles"),
    [
        (np.full((2, 4, 4), -0.5, np.float32), ["[0, 1] or [0, 255]", "image", "undo any normalisation"]),
        (np.full((2, 4, 4), 300.0), ["[0, 1] or [0, 255]", "300"]),
        (np.linspace(0, 1.5, 32).reshape(2, 4, 4), ["neither [0, 1] nor [0, 255]", "np.clip"]),
        (np.full((2, 4, 4), 4000, np.uint16), ["0..255", "16-bit", "// 257"]),
        (np.zeros((2, 4, 4), bool), ["unsupported image dtype bool", "uint8"]),
    ],
)
def test_values_out_of_range_name_the_fix(tmp_path: Path, x: np.ndarray, needles: list[str]) -> None:
    msg = array_error(npz(tmp_path, x=x))
    for n in needles:
        assert n in msg, (n, msg)


@pytest.mark.parametrize(
    ("shape", "needles"),
    [
        ((0, 8, 8), ["images array is empty", "(0, 8, 8)", "at least one image"]),
        ((), ["images array is empty", "at least one image"]),
        ((3, 16), ["(3, 16)", "[N, H, W]", "reshape"]),
        ((3, 8, 8, 4), ["(3, 8, 8, 4)", "alpha", "x[..., :3]"]),
        ((3, 2, 8, 8, 1), ["accepted shapes"]),
        ((3, 5, 8, 8), ["accepted shapes", "C in {1, 3}"]),
    ],
)
def test_wrong_shapes_name_the_accepted_ones(tmp_path: Path, shape: tuple, needles: list[str]) -> None:
    msg = array_error(npz(tmp_path, x=np.zeros(shape, np.uint8)))
    for n in needles:
        assert n in msg, (n, msg)


X4 = np.zeros((4, 4, 4), np.uint8)


@pytest.mark.parametrize(
    ("y", "needles"),
    [
        (np.array([0, 1, -1, -2]), ["non-negative", "2 negative", "y[2] = -1"]),
        (np.array([0.0, 1.5, 1.0, 0.25]), ["whole numbers", "2 of 4 are not", "y[1] = 1.5"]),
        (np.array([0.0, np.nan, 1.0, 0.0]), ["whole numbers", "y[1] = nan"]),
        (np.array([0, 1, 1]), ["4 images but 3 y", "one label per image"]),
        (np.eye(4, 3, dtype=np.int64), ["shape [N]", "(4, 3)", "argmax"]),
        (np.array(["cat", "dog", "cat", "dog"]), ["must be integers", "class names", "'classes'"]),
    ],
)
def test_bad_labels_name_the_index_and_the_fix(tmp_path: Path, y: np.ndarray, needles: list[str]) -> None:
    msg = array_error(npz(tmp_path, x=X4, y=y))
    for n in needles:
        assert n in msg, (n, msg)


def test_whole_float_labels_and_a_column_of_labels_are_accepted(tmp_path: Path) -> None:
    ds = load_dataset("array", root=npz(tmp_path, x=X4, y=np.array([0.0, 2.0, 1.0, 2.0], np.float32)))
    assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == [0, 2, 1, 2] and ds.classes == ["0", "1", "2"]
    ds = load_dataset("array", root=npz(tmp_path, x=X4, y=np.array([[1], [0], [1], [1]])))
    assert ds.labels.tolist() == [1, 0, 1, 1]


def test_labels_beyond_the_class_names_are_refused(tmp_path: Path) -> None:
    msg = array_error(npz(tmp_path, x=X4, y=np.array([0, 1, 3, 2]), classes=np.array(["a", "b", "c"])))
    assert "y[2] = 3 is out of range for the 3 names in 'classes'" in msg and "0..2" in msg


def test_labels_that_are_not_0_to_k_are_remapped_the_same_way_in_both_splits(tmp_path: Path) -> None:
    path = npz(tmp_path, x=X4, y=np.array([10, 30, 10, 20]), x_test=X4[:3], y_test=np.array([40, 30, 10]))
    with pytest.warns(UserWarning, match=r"not 0..K-1 \(4 distinct values from 10 to 40\); remapped to 0..3"):
        train = load_dataset("array", root=path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per file, not again for the test split
        test = load_dataset("array", "test", root=path)
    assert train.classes == test.classes == ["10", "20", "30", "40"]
    assert train.labels.tolist() == [0, 2, 0, 1] and test.labels.tolist() == [3, 2, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # labels already 0..K-1: used as they are, silently
        ok = load_dataset("array", root=npz(tmp_path, x=X4, y=np.array([2, 0, 1, 1])))
    assert ok.labels.tolist() == [2, 0, 1, 1]


# ---------------------------------------------------------------------------
# CIFAR pickles
# ---------------------------------------------------------------------------


def cifar10(parent: Path, labels=(1, 2)) -> Path:
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    x = noise(6, (len(labels), 3072))
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps({b"data": x, b"labels": list(labels)}, protocol=2))
    return folder


def cifar_error(root: Path, name: str = "cifar10") -> str:
    with pytest.raises(DatasetError) as e:
        load_dataset(name, root=root)
    return str(e.value)


def test_cifar_with_a_missing_batch_names_it(tmp_path: Path) -> None:
    folder = cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    msg = cifar_error(tmp_path)
    assert "not data_batch_3" in msg and "extract the archive again" in msg


def test_cifar100_files_given_as_cifar10_say_which_dataset_they_are(tmp_path: Path) -> None:
    for name in ("train", "test", "meta"):
        put(tmp_path / "cifar-100-python" / name, pickle.dumps({b"x": 1}))
    msg = cifar_error(tmp_path / "cifar-100-python")
    assert "holds cifar100, not cifar10" in msg and "--data cifar100" in msg


@pytest.mark.parametrize("content", [None, b"just some text\n", b""])
def test_a_truncated_or_foreign_cifar_file_names_the_file_and_the_fix(tmp_path: Path, content) -> None:
    folder = cifar10(tmp_path)
    f = folder / "data_batch_2"
    f.write_bytes(f.read_bytes()[:100] if content is None else content)
    msg = cifar_error(tmp_path)
    assert "data_batch_2" in msg and "re-fetch" in msg and "cifar.html" in msg
    assert "refused" not in msg  # damaged, not malicious


def test_a_pickle_of_something_else_is_not_a_cifar_batch(tmp_path: Path) -> None:
    folder = cifar10(tmp_path)
    (folder / "data_batch_4").write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}))
    msg = cifar_error(tmp_path)
    assert "data_batch_4" in msg and "uint8 [N, 3072]" in msg and "(2, 10)" in msg and "re-fetch" in msg
    (folder / "data_batch_4").write_bytes(pickle.dumps({b"data": noise(0, (2, 3072))}))
    msg = cifar_error(tmp_path)
    assert "missing or mis-sized b'labels'" in msg and "b'data'" in msg and "re-fetch" in msg


def test_cifar_labels_out_of_range_are_refused(tmp_path: Path) -> None:
    cifar10(tmp_path, labels=(3, 10))
    msg = cifar_error(tmp_path)
    assert "labels must be 0..9, found 3..10" in msg and "re-fetch" in msg


def test_intact_cifar_still_loads(tmp_path: Path) -> None:
    cifar10(tmp_path, labels=(9, 0))
    ds = load_dataset("cifar10", root=tmp_path)
    assert len(ds) == 10 and ds.labels.tolist()[:2] == [9, 0] and ds.classes == cifar.CIFAR10_CLASSES
