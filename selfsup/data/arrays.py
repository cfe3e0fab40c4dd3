"""Images (and labels, class names) from a numpy ``.npy`` or ``.npz`` file.

An ``.npz`` holds a train split (``images``/``x``/``x_train``, ``labels``/``y``/``y_train``) and
optionally a test split (``test_images``/``x_test``, ``test_labels``/``y_test``) and a ``classes``
array; a ``.npy`` is one unlabelled train split. Nothing is unpickled.
"""

from __future__ import annotations

import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from selfsup.data.dataset import SPLITS, DatasetError, ImageDataset, first_time, require_root

_ARRAY_KEYS = {
    "train": (("images", "x", "X", "x_train", "X_train"), ("labels", "y", "Y", "y_train", "Y_train")),  # x_train: Keras
    "test": (("test_images", "x_test", "X_test"), ("test_labels", "y_test", "Y_test")),
}
_ACCEPTED_SHAPES = "[N, H, W], [N, H, W, C] or [N, C, H, W] with C in {1, 3}"
_HALF_STEP = 0.5 / 255  # float images this far outside [0, 1] still round into 0..255


def _to_nchw(x: np.ndarray, path: Path) -> np.ndarray:
    """Bring an image array to ``[N, C, H, W]``; channel axis is the one of size 1 or 3."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[1] in (1, 3):
        return x
    if x.ndim == 4 and x.shape[3] in (1, 3):
        return x.transpose(0, 3, 1, 2)
    hint = ""
    if x.ndim == 4 and 4 in (x.shape[1], x.shape[3]):
        hint = "; RGBA? drop the alpha channel (x[..., :3] or x[:, :3]) and save again"
    elif x.ndim == 2:
        hint = "; flattened images? reshape them, e.g. x.reshape(len(x), 28, 28)"
    raise DatasetError(f"{path}: images have shape {x.shape}; accepted shapes are {_ACCEPTED_SHAPES}{hint}")


def _first_rows(bad: Any) -> str:
    """'image 3' or 'images 3, 8, 11, ...' for a boolean mask over rows."""
    rows = np.flatnonzero(bad)
    shown = ", ".join(str(i) for i in rows[:3]) + (", ..." if len(rows) > 3 else "")
    return f"image{'s' if len(rows) > 1 else ''} {shown}"


def _to_uint8(x: np.ndarray, path: Path) -> np.ndarray:
    """uint8 as is; floats in [0, 1] scaled by 255, floats in [0, 255] rounded; integers in 0..255 cast.

    A float array is read as [0, 1] when its largest value is at most 1, and as [0, 255] when it
    is at least 2 (in between is ambiguous and refused); NaN/inf and negative values are refused.
    """
    if x.dtype == np.uint8:
        return x
    rows = x.reshape(len(x), -1)
    if np.issubdtype(x.dtype, np.floating):
        finite = np.isfinite(rows).all(axis=1)
        if not finite.all():
            raise DatasetError(
                f"{path}: {int((~finite).sum())} of {len(x)} images contain NaN or inf ({_first_rows(~finite)}); "
                "drop those rows (keep = np.isfinite(x).reshape(len(x), -1).all(1); x, y = x[keep], y[keep]) "
                "or fill the values, then save the file again"
            )
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        if lo >= -_HALF_STEP and hi <= 1.0 + _HALF_STEP:
            return np.rint(x * 255.0).clip(0, 255).astype(np.uint8)
        if lo >= -0.5 and 2.0 <= hi <= 255.5:
            return np.rint(x).clip(0, 255).astype(np.uint8)
        if lo >= -_HALF_STEP and hi < 2.0:
            raise DatasetError(
                f"{path}: float images range over [{lo:g}, {hi:g}]: neither [0, 1] nor [0, 255]; clip them "
                "to [0, 1] (np.clip(x, 0, 1)) if they are [0, 1] images, or save them as uint8"
            )
        bad = (rows < -_HALF_STEP).any(axis=1) | (rows > 255.5).any(axis=1)
        raise DatasetError(
            f"{path}: float images must lie in [0, 1] or [0, 255], found [{lo:g}, {hi:g}] ({_first_rows(bad)}); "
            "undo any normalisation (x * std + mean) or rescale them (e.g. x / x.max()), or save as uint8"
        )
    if np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            bad = (rows < 0).any(axis=1) | (rows > 255).any(axis=1)
            raise DatasetError(
                f"{path}: integer images must lie in 0..255, found [{x.min()}, {x.max()}] ({_first_rows(bad)}); "
                "16-bit images? scale them to 8 bits ((x // 257).astype(np.uint8)) and save again"
            )
        return x.astype(np.uint8)
    raise DatasetError(f"{path}: unsupported image dtype {x.dtype}; use uint8, or floats in [0, 1] or [0, 255]")


def _check_labels(y: np.ndarray, n: Optional[int], path: Path, key: str = "labels") -> np.ndarray:
    """Labels as int64 ``[N]``: one non-negative integer per image (``n`` images; None: unchecked).

    A column ``[N, 1]`` is flattened; floats holding whole numbers (labels saved as float32) are
    cast; one-hot rows, fractions, NaN, negative values and a length other than ``n`` are refused.
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        hint = "; one-hot labels? save y.argmax(1)" if y.ndim == 2 else ""
        raise DatasetError(f"{path}: {key} must be one integer per image, shape [N]; got shape {y.shape}{hint}")
    if n is not None and len(y) != n:
        raise DatasetError(f"{path}: {n} images but {len(y)} {key}; save exactly one label per image")
    if np.issubdtype(y.dtype, np.floating):
        bad = ~np.isfinite(y) | (np.where(np.isfinite(y), y, 0) % 1 != 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DatasetError(
                f"{path}: {key} must be whole numbers (class indices 0..K-1); {int(bad.sum())} of {len(y)} are not, "
                f"the first is {key}[{i}] = {y[i].item()!r}"
            )
    elif not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(
            f"{path}: {key} must be integers (class indices 0..K-1), got dtype {y.dtype}; "
            "map class names to indices and save the indices (names may go in 'classes')"
        )
    negative = y < 0
    if negative.any():
        i = int(np.flatnonzero(negative)[0])
        raise DatasetError(
            f"{path}: {key} must be non-negative class indices; found {int(negative.sum())} negative "
            f"values, the first is {key}[{i}] = {y[i].item()!r}"
        )
    return y.astype(np.int64)


def _pick(store: Any, keys: tuple[str, ...]) -> Optional[tuple[str, np.ndarray]]:
    """The first of ``keys`` present in an npz store, with its name, or None."""
    for key in keys:
        if key in store.files:
            return key, store[key]
    return None


@dataclass
class _ArrayFile:
    """What an array file holds for one split."""

    images: np.ndarray
    labels: Optional[np.ndarray]
    label_key: str
    classes: Optional[list[str]]
    label_values: Optional[np.ndarray]  # the distinct labels of every split in the file, sorted


def _read_array_file(path: Path, split: str) -> _ArrayFile:
    """Images, labels and optional class names from a .npy or .npz file."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        if split == "test":
            raise DatasetError(f"{path}: a .npy file has no test split; save an .npz with x_test/y_test")
        return _ArrayFile(np.load(path, allow_pickle=False), None, "", None, None)
    if suffix != ".npz":
        raise DatasetError(f"{path}: expected a .npy or .npz file; pass --data-dir path/to/data.npz")
    img_keys, lbl_keys = _ARRAY_KEYS[split]
    with np.load(path, allow_pickle=False) as store:
        images, labels = _pick(store, img_keys), _pick(store, lbl_keys)
        if images is None:
            raise DatasetError(
                f"{path}: no {split} images; expected one of the keys {', '.join(img_keys)} "
                f"(found: {', '.join(store.files) or 'none'})"
            )
        found = [_pick(store, _ARRAY_KEYS[s][1]) for s in SPLITS]
        every = [_check_labels(v, None, path, k) for k, v in (e for e in found if e is not None)]
        classes = store["classes"] if "classes" in store.files else None
    names = [str(c) for c in classes.tolist()] if classes is not None and classes.dtype.kind in "US" else None
    values = np.unique(np.concatenate(every)) if every else None
    label_key, label_array = labels if labels is not None else ("", None)
    return _ArrayFile(images[1], label_array, label_key, names, values)


def load_array(split: str, root: Optional[Path], image_size: Optional[int]) -> ImageDataset:
    """Images (and labels) from a ``.npy`` or ``.npz`` file given as ``root``.

    Images: uint8, or floats in [0, 1] or [0, 255] (see :func:`_to_uint8`), shaped
    ``[N, H, W]``, ``[N, H, W, C]`` or ``[N, C, H, W]``.  Labels: one non-negative integer per
    image.  With a ``classes`` array (names) label ``i`` is ``classes[i]``; without one, labels
    that are not 0..K-1 (1-based, or sparse ids such as 3, 17, 250) are remapped to 0..K-1 in
    sorted order over every split in the file (so train and test agree), with a warning, and
    the class names keep the original values.
    """
    path = require_root(root, "array", "path/to/data.npz (or .npy)")
    try:
        data = _read_array_file(path, split)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:  # pickled objects, truncated zip, ...
        raise DatasetError(f"{path}: cannot read array file ({exc}); save it again with numpy.savez") from None
    if data.images.ndim == 0 or len(data.images) == 0:
        raise DatasetError(
            f"{path}: the {split} images array is empty (shape {data.images.shape}); "
            "save at least one image, shaped " + _ACCEPTED_SHAPES
        )
    images = _to_uint8(_to_nchw(data.images, path), path)
    classes, label_tensor = data.classes, None
    if data.labels is not None:
        y = _check_labels(data.labels, len(images), path, data.label_key)
        values = data.label_values
        if classes is not None and y.size and y.max() >= len(classes):
            i = int(np.argmax(y >= len(classes)))
            raise DatasetError(
                f"{path}: {data.label_key}[{i}] = {y[i]} is out of range for the {len(classes)} "
                f"names in 'classes' (labels must be 0..{len(classes) - 1}); fix the labels or "
                "add the missing class names"
            )
        if classes is None and values is not None and values.size:
            if values[-1] != len(values) - 1 and first_time(("remap", str(path.resolve()), path.stat().st_mtime_ns)):
                # not 0..K-1: remap, the same way for every split (and say so once per file, not per split)
                warnings.warn(
                    f"array: {path} labels are not 0..K-1 ({len(values)} distinct values from {values[0]} "
                    f"to {values[-1]}); remapped to 0..{len(values) - 1} in sorted order (class names keep "
                    "the original values; save a 'classes' array to name them yourself)",
                    stacklevel=3,
                )
            if values[-1] != len(values) - 1:
                y = np.searchsorted(values, y)
            classes = [str(v) for v in values]
        label_tensor = torch.from_numpy(y)
    return ImageDataset(torch.from_numpy(np.ascontiguousarray(images)), label_tensor, classes, "array")
