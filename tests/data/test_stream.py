"""Streamed image folders: the same pixels, batches and order as the in-memory folder, decoded in
worker processes; unreadable files counted; a streamed run trains and resumes exactly."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.engine import labelled_splits
from selfsup.data import load_dataset
from selfsup.data.loader import InMemoryLoader
from selfsup.data.stream import StreamLoader, load_imagefolder_stream, sample_images


def make_folder(root: Path, n: int = 48, rgb: bool = False, split: str | None = None) -> Path:
    """n images of 2 classes (bright squares vs dark), 20-36 px, so resizing is exercised."""
    rng = np.random.default_rng(0)
    base = root / split if split else root
    for i in range(n):
        cls = "bright" if i % 2 else "dark"
        side = 20 + (i % 5) * 4
        a = rng.integers(0, 100, (side, side, 3) if rgb else (side, side), dtype=np.uint8)
        if cls == "bright":
            a[side // 4 : 3 * side // 4, side // 4 : 3 * side // 4] = 230
        (base / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(base / cls / f"{i:03d}.png")
    return root


@pytest.mark.parametrize("rgb", [False, True])
def test_streamed_folder_lists_what_the_in_memory_one_decodes(tmp_path, rgb):
    root = make_folder(tmp_path, rgb=rgb)
    mem = load_dataset("imagefolder", "train", root, 16)
    st = load_imagefolder_stream("train", root, 16)
    assert len(st) == len(mem) and st.channels == mem.channels == (3 if rgb else 1) and st.image_size == 16
    assert st.classes == mem.classes and torch.equal(st.labels, mem.labels)
    assert st.images.shape == mem.images.shape
    assert torch.equal(st.images[:], mem.images)  # pixel for pixel the same decoder
    idx = torch.tensor([5, 0, 17])
    assert torch.equal(st.images[idx], mem.images[idx]) and torch.equal(st.images[3], mem.images[3])
    sub = st.subset(torch.arange(10))
    assert len(sub) == 10 and torch.equal(sub.images[:], mem.images[:10])
    assert torch.equal(sample_images(mem, 8), mem.images[:8])
    assert sample_images(st, 8).shape == (8, st.channels, 16, 16)


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_loader_gives_the_in_memory_loaders_batches_and_resumes_mid_epoch(tmp_path, workers):
    root = make_folder(tmp_path)
    mem = load_dataset("imagefolder", "train", root, 16)
    st = load_imagefolder_stream("train", root, 16)
    a = InMemoryLoader(mem.images, mem.labels, 8, seed=3)
    b = StreamLoader(st.images, st.labels, 8, seed=3, workers=workers)
    assert len(a) == len(b) == 6
    for epoch in (0, 1):
        for x, y in zip(a.iterate(epoch), b.iterate(epoch)):
            assert torch.equal(x.index, y.index) and torch.equal(x.images, y.images) and torch.equal(x.labels, y.labels)
    resumed = [t.index.tolist() for t in b.iterate(1, start_step=4)]
    assert resumed == [t.index.tolist() for t in a.iterate(1)][4:]
    shards = [StreamLoader(st.images, None, 4, seed=1, rank=r, world_size=2, workers=0) for r in range(2)]
    seen = [i for s in shards for t in s.iterate(0) for i in t.index.tolist()]
    assert len(seen) == len(set(seen)) == 48  # processes split the folder without duplicates


@pytest.mark.parametrize("seen_before", [False, True])
def test_an_unreadable_file_is_counted_and_not_trained_on(tmp_path, seen_before):
    """The bad file's row is replaced by a readable image of the batch (with its index, so its label),
    and the warning counts it — also when the normalisation statistics' sample found it first
    (issue 27: that used to hide the warning and train on a black image)."""
    root = make_folder(tmp_path, n=16)
    bad = root / "dark" / "000.png"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated after listing would also look like this
    st = load_imagefolder_stream("train", root, 16)
    if seen_before:
        sample_images(st, 16)  # what fit() does first for the normalisation statistics
        assert st.images.files.index(bad) in st.images.unreadable
    loader = StreamLoader(st.images, st.labels, 16, seed=0, workers=0)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        (batch,) = list(loader.iterate(0))
    assert st.images.files.index(bad) not in batch.index.tolist() and len(batch.index) == 16
    assert batch.images.flatten(1).amax(1).gt(0).all()  # no black image
    assert torch.equal(batch.labels, st.labels[batch.index])  # a replaced row carries its image's label
    msgs = [str(m.message) for m in w if "unreadable" in str(m.message)]
    assert len(msgs) == 1 and "1 unreadable file" in msgs[0] and "000.png" in msgs[0] and "not trained on" in msgs[0]


def test_a_streamed_run_learns_and_resumes_exactly(tmp_path, tiny_config):
    from safetensors.torch import load_file

    from selfsup.train import fit, resume

    root = make_folder(tmp_path / "data", n=64, split="train")
    make_folder(tmp_path / "data", n=32, split="test")
    over = (
        "data.name=imagefolder",
        f"data.dir={root}",
        "data.image_size=16",
        "data.limit=null",
        "data.stream=true",
        "data.workers=1",
        "train.batch_size=16",
        "train.epochs=2",
        "train.monitor_train=64",
        "train.monitor_val=32",
    )
    fit(tiny_config("simclr", *over), tmp_path / "whole", progress_bar=False)
    cfg = tiny_config("simclr", *over, "train.max_steps=5")
    fit(cfg, tmp_path / "cut", progress_bar=False)
    path = tmp_path / "cut" / "config.yaml"
    path.write_text(path.read_text().replace("max_steps: 5", "max_steps: null"))
    summary = resume(tmp_path / "cut", progress_bar=False)
    assert summary["steps"] == 8 and summary["monitor/knn20_top1"] > 0.7  # bright vs dark squares
    a = load_file(tmp_path / "whole" / "checkpoints" / "last" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "checkpoints" / "last" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=lambda m: f"{k}: {m}")


def test_stream_is_for_image_folders(tiny_config, tmp_path):
    from selfsup.train import TrainingError, fit

    with pytest.raises(TrainingError, match="data.stream=true streams an image folder"):
        fit(tiny_config("simclr", "data.stream=true"), tmp_path / "r", progress_bar=False)


def test_a_streamed_run_is_evaluated_from_the_folder_batch_by_batch(tmp_path, tiny_config):
    """Evaluation of a data.stream=true run keeps the training split listed, not decoded (LazyImages), and
    gives what the in-memory evaluation of the same weights gives: kNN, linear, raw pixels, fine-tuning."""
    import shutil

    from selfsup.data.stream import LazyImages
    from selfsup.engine import _dataset
    from selfsup.eval.run import evaluate, evaluate_raw_pixels, load_run
    from selfsup.train import fit

    root = make_folder(tmp_path / "data", n=48, split="train")
    make_folder(tmp_path / "data", n=24, split="test")
    over = (
        "data.name=imagefolder",
        f"data.dir={root}",
        "data.image_size=16",
        "data.limit=null",
        "data.stream=true",
        "data.workers=0",
        "train.batch_size=16",
        "train.epochs=1",
        "train.monitor_train=48",
        "train.monitor_val=24",
    )
    fit(tiny_config("simclr", *over), tmp_path / "s", progress_bar=False)
    shutil.copytree(tmp_path / "s", tmp_path / "m")  # the same weights, evaluated from memory
    path = tmp_path / "m" / "config.yaml"
    path.write_text(path.read_text().replace("stream: true", "stream: false"))
    _dataset.cache_clear()
    cfg, _, _ = load_run(tmp_path / "s")
    train, test = labelled_splits(cfg)
    assert isinstance(train.images, LazyImages) and isinstance(test.images, torch.Tensor)
    ft = dict(fraction=0.5, steps=3)
    streamed = [evaluate(tmp_path / "s", p) for p in ("knn", "linear")] + [evaluate(tmp_path / "s", "finetune", **ft)]
    raw_streamed = evaluate_raw_pixels(cfg, "knn")
    _dataset.cache_clear()
    in_memory = [evaluate(tmp_path / "m", p) for p in ("knn", "linear")] + [evaluate(tmp_path / "m", "finetune", **ft)]
    assert not isinstance(labelled_splits(load_run(tmp_path / "m")[0])[0].images, LazyImages)
    for a, b in zip(streamed, in_memory):
        assert a["top1"] == pytest.approx(b["top1"], abs=1e-6), a["protocol"]
    assert raw_streamed["top1"] == pytest.approx(evaluate_raw_pixels(load_run(tmp_path / "m")[0], "knn")["top1"])
    _dataset.cache_clear()


def test_select_from_a_streamed_run_names_the_files(tmp_path, tiny_config):
    import csv

    from selfsup.curate import select_images
    from selfsup.train import fit

    root = make_folder(tmp_path / "data", n=32)
    over = (
        "data.name=imagefolder",
        f"data.dir={root}",
        "data.image_size=16",
        "data.limit=null",
        "data.stream=true",
        "data.workers=0",
        "train.batch_size=16",
        "train.max_steps=2",
    )
    fit(tiny_config("simclr", *over), tmp_path / "s", progress_bar=False)
    select_images(tmp_path / "s", 5, tmp_path / "pick.csv")
    rows = list(csv.DictReader(open(tmp_path / "pick.csv")))
    assert len(rows) == 5 and all((root / r["path"]).is_file() for r in rows)  # relative to the training folder
