"""Random bytes and arrays at every loader, random text at the config and label readers: each ends
in data or in a project error (SelfsupError, whose message names the fix), never a bare traceback
(issue 27). Property-based (hypothesis), a few dozen examples each to keep the suite fast."""

from __future__ import annotations

import pickle
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import example, given, settings, strategies as st

from selfsup.config import compose, parse_override
from selfsup.data import load_dataset
from selfsup.data.labelled import load_labelled
from selfsup.errors import SelfsupError

FUZZ = settings()  # the profile in tests/conftest.py sets the counts
PNG_HEADER = b"\x89PNG\r\n\x1a\n"


def loads_or_says_why(fn):
    """Run ``fn``; data or a SelfsupError are both fine, anything else fails the test. Warnings about
    skipped files are part of the contract and are not checked here."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return fn()
        except SelfsupError as e:
            assert str(e).strip(), "a project error with no message"
            return None


@FUZZ
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=4), st.booleans())
def test_random_bytes_as_image_files(blobs, png_header):
    with tempfile.TemporaryDirectory() as d:
        for i, b in enumerate(blobs):
            (Path(d) / f"{i}.png").write_bytes((PNG_HEADER if png_header else b"") + b)
        ds = loads_or_says_why(lambda: load_dataset("imagefolder", "train", d, 8))
        assert ds is None or (len(ds) <= len(blobs) and ds.images.shape[-1] == 8)


_dtypes = st.sampled_from([np.uint8, np.int16, np.int64, np.float32, np.float64, np.bool_, np.complex64])
_shapes = st.lists(st.integers(0, 5), min_size=0, max_size=5).map(tuple)


@FUZZ
@given(
    _dtypes,
    _shapes,
    st.one_of(st.none(), _dtypes),
    st.one_of(st.none(), _shapes),
    st.one_of(st.floats(-1e3, 1e3), st.just(float("nan"))),
    st.sampled_from(["npz", "npy"]),
)
def test_random_arrays_as_an_array_dataset(xdt, xshape, ydt, yshape, fill, kind):
    with tempfile.TemporaryDirectory() as d:
        x = np.full(xshape, fill if np.issubdtype(xdt, np.floating) else abs(int(np.nan_to_num(fill))) % 256).astype(
            xdt
        )
        path = Path(d) / f"a.{kind}"
        if kind == "npy":
            np.save(path, x)
        else:
            arrays = {"x": x} if ydt is None else {"x": x, "y": np.zeros(yshape or (0,), ydt)}
            np.savez(path, **arrays)
        ds = loads_or_says_why(lambda: load_dataset("array", "train", str(path), None))
        assert ds is None or ds.images.dtype.is_floating_point is False


@FUZZ
@given(st.binary(max_size=400), st.sampled_from(["npz", "npy"]))
def test_random_bytes_as_an_array_file(blob, kind):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"a.{kind}"
        path.write_bytes(blob)
        assert loads_or_says_why(lambda: load_dataset("array", "train", str(path), None)) is None


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=300),
        st.dictionaries(
            st.sampled_from([b"data", b"labels", b"fine_labels", b"x"]),
            st.one_of(st.integers(), st.binary(max_size=20), st.lists(st.integers(-3, 300), max_size=5)),
            max_size=4,
        ),
    )
)
def test_random_cifar_batches(content):
    """Plain data only: a CIFAR batch is a pickle, and the loader must refuse any object in it."""
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "cifar-10-batches-py"
        folder.mkdir()
        raw = content if isinstance(content, bytes) else pickle.dumps(content)
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            (folder / name).write_bytes(raw)
        assert loads_or_says_why(lambda: load_dataset("cifar10", "train", d, None)) is None


@FUZZ
@given(st.binary(max_size=200), st.binary(max_size=200))
def test_random_bytes_as_fashion_mnist_idx_files(images, labels):
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "train-images-idx3-ubyte").write_bytes(images)
        (Path(d) / "train-labels-idx1-ubyte").write_bytes(labels)
        ds = loads_or_says_why(lambda: load_dataset("fashion-mnist", "train", d, None))
        assert ds is None or len(ds) == len(ds.labels)


@FUZZ
@given(st.text(max_size=200))
def test_random_text_as_a_labels_csv(text):
    with tempfile.TemporaryDirectory() as d:
        from PIL import Image

        Image.fromarray(np.zeros((8, 8), np.uint8)).save(Path(d) / "a.png")
        (Path(d) / "labels.csv").write_text(text)
        ds = loads_or_says_why(lambda: load_labelled(Path(d) / "labels.csv", 1, 8))
        assert ds is None or len(ds) >= 1


@FUZZ
@given(st.text(max_size=200))
def test_random_text_as_a_config_file(text):
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "c.yaml").write_text(text)
        cfg = loads_or_says_why(
            lambda: compose({"method": "simclr", "data": {"name": "digits"}}, config_file=Path(d) / "c.yaml")
        )
        assert cfg is None or cfg.cfg.method_name


_key = st.sampled_from(
    [
        "method",
        "data.name",
        "train.epochs",
        "optim.lr",
        "views.crop_scale",
        "backbone.name",
        "method.temperature",
        "eval.knn_k",
        "train.budget",
        "nope",
        "train",
        "data.mean",
    ]
)


@FUZZ
@given(st.lists(st.tuples(_key, st.text(max_size=12)), max_size=4))
def test_random_overrides_at_compose(pairs):
    def go():
        return compose(
            {"method": "simclr", "data": {"name": "digits"}}, overrides=[parse_override(f"{k}={v}") for k, v in pairs]
        )

    out = loads_or_says_why(go)
    assert out is None or out.cfg.method_name


@FUZZ
@given(st.binary(max_size=300), st.text(max_size=100))
@example(b"", "0")  # valid JSON that is not an object: found by a random draw (engine read meta.get of an int)
@example(b"", "[]")
def test_random_checkpoint_files(weights, meta):
    """A run directory whose checkpoint is random bytes: a CheckpointError (a SelfsupError), never
    code run from the file and never a bare traceback."""
    from selfsup.engine import Run
    from selfsup.config import save_config

    with tempfile.TemporaryDirectory() as d:
        cfg = compose(
            {"method": "simclr", "data": {"name": "digits"}, "backbone": {"name": "convnet", "width": 0.25}},
            use_recipe=False,
        ).cfg
        cfg.data.mean, cfg.data.std = [0.5], [0.5]
        save_config(cfg, Path(d) / "config.yaml")
        last = Path(d) / "checkpoints" / "last"
        last.mkdir(parents=True)
        (last / "model.safetensors").write_bytes(weights)
        (last / "meta.json").write_text(meta)
        assert loads_or_says_why(lambda: Run(d)) is None
