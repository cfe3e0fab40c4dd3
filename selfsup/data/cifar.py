"""CIFAR-10 and CIFAR-100 from their python pickle batches (``cifar-10-batches-py``, ``cifar-100-python``).

The pickles are read with a restricted unpickler that can only rebuild numpy arrays: a file a
user was handed must never run code.
"""

from __future__ import annotations

import importlib
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from selfsup.data.dataset import DatasetError, ImageDataset, env_data_dir

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip


def _numpy_helper(submodule: str, name: str) -> Callable[..., Any]:
    """A numpy array-unpickling helper (``numpy._core`` in 2.x, ``numpy.core`` in 1.x)."""
    for package in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{package}.{submodule}"), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"this numpy has no {submodule}.{name}")


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` limited to latin-1: how python 3 protocol<=2 pickles store bytes."""
    if encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise _Refused(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1")


class _Refused(pickle.UnpicklingError):
    """A pickle asked for a global outside the whitelist: code, not data."""


_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild numpy arrays: user files must never run code.

    Original CIFAR files (python 2, protocol 2) need only numpy's
    ``_reconstruct``, ``ndarray`` and ``dtype``.  Files re-pickled by python 3
    also need ``_codecs.encode`` (protocol <= 2 byte strings; restricted to
    latin-1 here) or ``numeric._frombuffer`` (protocol 5 arrays).
    """

    _NUMPY = {("multiarray", "_reconstruct"), ("numeric", "_frombuffer")}

    def find_class(self, module: str, name: str) -> Any:
        """Resolve only the whitelisted globals; refuse everything else."""
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module == "_codecs" and name == "encode":
            return _latin1_encode
        package, _, submodule = module.rpartition(".")
        if package in ("numpy.core", "numpy._core") and (submodule, name) in self._NUMPY:
            return _numpy_helper(submodule, name)
        raise _Refused(f"refusing to load global {module}.{name}")


def safe_unpickle(path: Path) -> dict:
    """Load a CIFAR-style pickle (a dict) without allowing arbitrary code."""
    try:
        with open(path, "rb") as f:
            obj = _SafeUnpickler(f, encoding="bytes").load()
    except _Refused as exc:
        raise DatasetError(
            f"{path}: refused to unpickle ({exc}); CIFAR files hold only dicts of "
            "arrays/lists - this file is not a genuine CIFAR batch, do not use it"
        ) from exc
    except Exception as exc:  # truncated, not a pickle, wrong format, ...
        raise DatasetError(
            f"{path}: cannot read pickle ({type(exc).__name__}: {exc}); the file is truncated or not a CIFAR "
            f"batch - re-fetch the 'python version' archive from {_CIFAR_URL} and extract it again"
        ) from exc
    if not isinstance(obj, dict):
        raise DatasetError(
            f"{path}: expected a dict, got {type(obj).__name__}; not a CIFAR batch - re-fetch it from {_CIFAR_URL}"
        )
    return obj


@dataclass(frozen=True)
class _CifarSpec:
    """File layout of one CIFAR variant."""

    name: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: bytes
    names_key: bytes


_CIFAR10 = _CifarSpec(
    "cifar10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
    ("test_batch",), "batches.meta", b"labels", b"label_names",
)  # fmt: skip
_CIFAR100 = _CifarSpec(
    "cifar100", "cifar-100-python", ("train",), ("test",), "meta", b"fine_labels", b"fine_label_names",
)  # fmt: skip


def _find_cifar_folder(spec: _CifarSpec, split: str, root: Optional[Path]) -> Path:
    """The extracted CIFAR folder: ``root`` itself, ``root/<folder>``, or under $SELFSUP_DATA."""
    bases = [b for b in (root, env_data_dir()) if b is not None]
    files = spec.train_files if split == "train" else spec.test_files
    candidates = [c for b in bases for c in (b, b / spec.folder, b / spec.name / spec.folder, b / spec.name)]
    for folder in candidates:
        if all((folder / f).is_file() for f in files):
            return folder
    for folder in candidates:  # a partial extraction, or the other CIFAR: say which
        present = [f for f in files if (folder / f).is_file()]
        if present:
            missing = [f for f in files if f not in present]
            raise DatasetError(
                f"{spec.name} ({split}): {folder} holds {', '.join(present)} but not "
                f"{', '.join(missing)}: the extraction is incomplete; extract the archive again"
            )
        other = _CIFAR100 if spec is _CIFAR10 else _CIFAR10
        if folder.is_dir() and all((folder / f).is_file() for f in other.train_files + other.test_files):
            raise DatasetError(
                f"{spec.name}: {folder} holds {other.name}, not {spec.name}; "
                f"use --data {other.name}, or point --data-dir at the {spec.folder} folder"
            )
    looked = ", ".join(str(c) for c in dict.fromkeys(candidates))
    looked = looked or "nowhere (no --data-dir, SELFSUP_DATA unset)"
    raise DatasetError(
        f"{spec.name} ({split}): could not find {spec.folder}/{{{','.join(files)}}}. Looked in: {looked}. "
        f"Fix: pass --data-dir DIR (the extracted {spec.folder} folder or its parent) "
        f"or export SELFSUP_DATA=DIR; get the 'python version' archive from {_CIFAR_URL}"
    )


def _cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 3, 32, 32]`` and labels of one CIFAR batch file."""
    batch = safe_unpickle(path)
    data, labels = batch.get(b"data"), batch.get(label_key)
    refetch = f"not a CIFAR python batch - re-fetch the 'python version' archive from {_CIFAR_URL}"
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"{path}: b'data' is not a uint8 [N, 3072] array (found {found}); {refetch}")
    try:
        labels = np.asarray(labels, dtype=np.int64) if labels is not None else None
    except (TypeError, ValueError):
        labels = np.zeros(0)  # not numbers: reported as mis-sized below
    if labels is None or labels.shape != (len(data),):
        keys = ", ".join(repr(k) for k in batch)
        raise DatasetError(f"{path}: missing or mis-sized {label_key!r} (keys: {keys}); {refetch}")
    return data.reshape(-1, 3, 32, 32), labels


def _cifar_classes(folder: Path, spec: _CifarSpec) -> Optional[list[str]]:
    """Class names from the meta file (CIFAR-10 falls back to the known list)."""
    meta_path = folder / spec.meta_file
    if meta_path.is_file():
        names = safe_unpickle(meta_path).get(spec.names_key)
        if names is not None:
            return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]
    return list(CIFAR10_CLASSES) if spec is _CIFAR10 else None


def _load_cifar(spec: _CifarSpec, split: str, root: Optional[Path]) -> ImageDataset:
    """Read all batch files of one split and concatenate them."""
    folder = _find_cifar_folder(spec, split, root)
    files = spec.train_files if split == "train" else spec.test_files
    parts = [_cifar_batch(folder / f, spec.label_key) for f in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    classes = _cifar_classes(folder, spec)
    limit = len(classes) if classes is not None else 100
    if labels.size and (labels.min() < 0 or labels.max() >= limit):
        raise DatasetError(
            f"{folder}: {spec.name} labels must be 0..{limit - 1}, found {labels.min()}..{labels.max()}; "
            f"the files are not {spec.name} batches - re-fetch them from {_CIFAR_URL}"
        )
    return ImageDataset(torch.from_numpy(images), torch.from_numpy(labels), classes, spec.name)


def load_cifar10(split: str, root: Optional[Path], image_size: Optional[int]) -> ImageDataset:
    """CIFAR-10 from ``cifar-10-batches-py`` (python pickle format)."""
    return _load_cifar(_CIFAR10, split, root)


def load_cifar100(split: str, root: Optional[Path], image_size: Optional[int]) -> ImageDataset:
    """CIFAR-100 (fine labels) from ``cifar-100-python`` (python pickle format)."""
    return _load_cifar(_CIFAR100, split, root)
