"""Image dataset sources: load whole datasets into memory as uint8 tensors.

Every source returns an :class:`ImageDataset` holding ``uint8 [N, C, H, W]``
images.  Self-supervised pre-training on small images is data-loading bound,
so we decode once, keep compact uint8 tensors in memory, and leave
augmentation to GPU-side code.  Nothing is cached on disk.

Sources (see :data:`DATASETS`): ``fashion-mnist`` (idx files, incl. the
Debian ``dataset-fashion-mnist`` package), ``digits`` (bundled with
scikit-learn), ``cifar10`` / ``cifar100`` (python pickle batches, read with a
restricted unpickler), ``imagefolder`` (a folder of image files) and ``array``
(``.npy`` / ``.npz``), and ``signals`` (synthetic labelled 1-D waveforms,
generated from a seed; see :func:`load_signals` for their layout).
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import importlib
import os
import pickle
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.errors import SelfsupError
from selfsup.registry import Registry

__all__ = [
    "DATASETS",
    "DatasetError",
    "ImageDataset",
    "list_datasets",
    "load_dataset",
]

SPLITS = ("train", "test")
DEFAULT_IMAGEFOLDER_SIZE = 32


class DatasetError(SelfsupError):
    """A dataset could not be found or read; the message names the fix."""


# ---------------------------------------------------------------------------
# The dataset container
# ---------------------------------------------------------------------------


@dataclass
class ImageDataset:
    """An in-memory image dataset.

    ``images`` is ``uint8 [N, C, H, W]`` (C is 1 or 3), ``labels`` is
    ``int64 [N]`` or ``None`` for unlabelled data, ``classes[i]`` names label
    ``i``, ``captions[i]`` describes image ``i`` in words (image-text methods: CLIP).
    The shapes are validated on construction so that downstream code
    can rely on them without re-checking.
    """

    images: torch.Tensor
    labels: Optional[torch.Tensor]
    classes: Optional[list[str]]
    name: str
    captions: Optional[list[str]] = None
    files: Optional[list[str]] = None  # image folders: the file each row was decoded from (absolute path)

    def __post_init__(self) -> None:
        """Check dtypes and shapes; make the tensors contiguous."""
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise SelfsupError(
                f"images must be uint8 [N, C, H, W], got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.images.shape[1] not in (1, 3):
            raise SelfsupError(f"images must have 1 or 3 channels, got {self.images.shape[1]}")
        self.images = self.images.contiguous()
        if self.labels is not None:
            if self.labels.dim() != 1 or len(self.labels) != len(self.images):
                raise SelfsupError(
                    f"labels must be [N={len(self.images)}], got {tuple(self.labels.shape)}"
                )
            self.labels = self.labels.to(torch.int64).contiguous()
        if self.captions is not None and len(self.captions) != len(self.images):
            raise SelfsupError(f"{len(self.captions)} captions for {len(self.images)} images")
        if self.files is not None and len(self.files) != len(self.images):
            raise SelfsupError(f"{len(self.files)} file names for {len(self.images)} images")

    def __len__(self) -> int:
        """Number of images."""
        return self.images.shape[0]

    @property
    def channels(self) -> int:
        """Number of channels: 1 (grayscale) or 3 (RGB)."""
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        """Side length of the (square) images; ValueError if not square."""
        h, w = self.images.shape[-2:]
        if h != w:
            raise SelfsupError(f"{self.name}: images are not square ({h}x{w})")
        return int(h)

    def subset(self, idx: torch.Tensor) -> ImageDataset:
        """A new dataset with the rows selected by ``idx`` (indices or bool mask)."""
        idx = torch.as_tensor(idx)
        labels = None if self.labels is None else self.labels[idx]
        rows = idx.nonzero().flatten() if idx.dtype == torch.bool else idx.reshape(-1)
        captions = None if self.captions is None else [self.captions[int(i)] for i in rows]
        files = None if self.files is None else [self.files[int(i)] for i in rows]
        return ImageDataset(self.images[idx], labels, self.classes, self.name, captions, files)

    def labelled_subset(self, fraction: float, seed: int = 0) -> ImageDataset:
        """Deterministic, class-balanced subset holding ``fraction`` of the labels.

        Used for the usual 1 % / 10 % semi-supervised evaluations.  The same
        ``seed`` always gives the same indices; every class present gets at
        least one sample, and per-class counts differ by at most one unless a
        class is too small (then all its samples are taken).
        """
        if self.labels is None:
            raise SelfsupError(f"{self.name}: labelled_subset needs labels, but this dataset has none")
        if not 0.0 < fraction <= 1.0:
            raise SelfsupError(f"fraction must be in (0, 1], got {fraction}")
        return self.subset(balanced_indices(self.labels, fraction, seed))


def balanced_indices(labels: torch.Tensor, fraction: float, seed: int = 0) -> torch.Tensor:
    """Sorted indices of a seeded, class-balanced sample of ``labels``.

    The total is ``round(fraction * N)`` (at least one per class).  Quotas are
    water-filled: small classes are exhausted first, the rest share evenly.
    """
    gen = torch.Generator().manual_seed(seed)
    classes, counts = torch.unique(labels, return_counts=True)
    total = min(len(labels), max(len(classes), round(fraction * len(labels))))
    quotas = _water_fill(counts, total, gen)
    perm = torch.randperm(len(labels), generator=gen)
    # Group the shuffled indices by class (stable sort keeps the shuffle order).
    order = perm[torch.sort(labels[perm], stable=True).indices]
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(labels)) - torch.repeat_interleave(starts, counts)
    keep = rank < torch.repeat_interleave(quotas, counts)
    return torch.sort(order[keep]).values


def _water_fill(counts: torch.Tensor, total: int, gen: torch.Generator) -> torch.Tensor:
    """Split ``total`` over classes as evenly as their ``counts`` allow."""
    quotas = torch.zeros_like(counts)
    remaining = total
    order = torch.argsort(counts, stable=True)
    for i, c in enumerate(order.tolist()):
        share = remaining // (len(counts) - i)
        quotas[c] = min(int(counts[c]), share)
        remaining -= int(quotas[c])
    # Hand out the leftover (< number of classes) one each, in seeded order.
    for c in torch.randperm(len(counts), generator=gen).tolist():
        if remaining == 0:
            break
        if quotas[c] < counts[c]:
            quotas[c] += 1
            remaining -= 1
    return quotas


# ---------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------


def _env_data_dir() -> Optional[Path]:
    """``$SELFSUP_DATA`` as a path, or None when unset/empty."""
    value = os.environ.get("SELFSUP_DATA", "").strip()
    return Path(value).expanduser() if value else None


def _cache_dir() -> Path:
    """Per-user cache root (``$XDG_CACHE_HOME/selfsup`` or ``~/.cache/selfsup``)."""
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(base) if base else Path.home() / ".cache") / "selfsup"


def require_root(root: Optional[Path], source: str, what: str) -> Path:
    """Return ``root`` or explain that this source needs ``--data-dir``."""
    if root is None:
        raise DatasetError(f"{source}: no path given; pass --data-dir {what}")
    if not root.exists():
        raise DatasetError(f"{source}: {root} does not exist; pass --data-dir {what}")
    return root


def resize_images(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Resize uint8 ``[N, C, H, W]`` to ``size x size`` (bilinear, antialiased).

    Non-square images are centre-cropped to a square first so nothing is
    distorted.  Works in chunks to bound the float32 working memory.
    """
    if size <= 0:
        raise DatasetError(f"image_size must be positive, got {size}")
    h, w = images.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    images = images[..., top : top + side, left : left + side]
    if side == size:
        return images.contiguous()
    out = torch.empty((*images.shape[:2], size, size), dtype=torch.uint8)
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk].float()
        part = F.interpolate(part, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[start : start + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


def match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` -> uint8 ``[N, channels, H, W]``: grey (C = 1) repeated into RGB, or RGB
    to grey as PIL's ``Image.convert('L')`` computes it (ITU-R 601 luma 0.299, 0.587, 0.114 in PIL's
    16-bit fixed point, so a decoded-and-converted file and a converted tensor hold the same values)."""
    c = images.shape[1]
    if c == channels:
        return images
    if c == 1:
        return images.expand(-1, channels, -1, -1).contiguous()
    if c == 3 and channels == 1:
        w = torch.tensor([19595, 38470, 7471], dtype=torch.int64, device=images.device).view(1, 3, 1, 1)
        return (((images.long() * w).sum(1, keepdim=True) + 32768) >> 16).to(torch.uint8)
    raise SelfsupError(f"cannot map {c}-channel images to the encoder's {channels} channels")


# ---------------------------------------------------------------------------
# Fashion-MNIST (idx files)
# ---------------------------------------------------------------------------

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
# What the Debian package ``dataset-fashion-mnist`` installs (gzipped idx files).
FASHION_MNIST_SYSTEM_DIRS: list[Path] = [Path("/usr/share/datasets/fashion-mnist")]
_IDX_STEMS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}  # fmt: skip
_IDX_UBYTE = 0x08


def _fashion_layouts(base: Path) -> list[Path]:
    """Folders under ``base`` where the idx files may sit (plain, named, torchvision)."""
    return [base, base / "fashion-mnist", base / "FashionMNIST" / "raw",
            base / "fashion-mnist" / "FashionMNIST" / "raw"]  # fmt: skip


def _find_idx(folder: Path, stem: str) -> Optional[Path]:
    """The idx file ``stem`` in ``folder``, plain or gzipped (also ``-idx`` -> ``.idx``)."""
    for name in (stem, stem.replace("-idx", ".idx")):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _read_maybe_gzip(path: Path) -> bytearray:
    """File contents, gunzipped when the file is gzip; DatasetError if corrupt."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"cannot read {path}: {exc}; the file looks corrupt, re-fetch it") from exc
    return bytearray(raw)


def parse_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse a uint8 idx file (MNIST format) with numpy; validate magic and size."""
    data = _read_maybe_gzip(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _IDX_UBYTE or data[3] != ndim:
        magic = int.from_bytes(bytes(data[:4]), "big")
        raise DatasetError(
            f"{path}: bad idx magic number 0x{magic:08x} (expected 0x{(_IDX_UBYTE << 8) | ndim:08x}); "
            "not a uint8 idx file - re-fetch it"
        )
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise DatasetError(
            f"{path}: idx header says shape {dims} ({expected} bytes) but the file holds "
            f"{len(data) - header} bytes; the file is truncated or corrupt - re-fetch it"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _fashion_from_folder(folder: Path, split: str) -> Optional[ImageDataset]:
    """Load one split from ``folder`` if both its idx files are there, else None."""
    img_stem, lbl_stem = _IDX_STEMS[split]
    img_path, lbl_path = _find_idx(folder, img_stem), _find_idx(folder, lbl_stem)
    if img_path is None or lbl_path is None:
        return None
    images = parse_idx(img_path, 3)
    labels = parse_idx(lbl_path, 1)
    if len(images) != len(labels):
        raise DatasetError(f"{img_path} has {len(images)} images but {lbl_path} has {len(labels)} labels")
    if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
        raise DatasetError(f"{lbl_path}: label {labels.max()} out of range 0..9")
    return ImageDataset(
        images=torch.from_numpy(images).unsqueeze(1),
        labels=torch.from_numpy(labels).to(torch.int64),
        classes=list(FASHION_MNIST_CLASSES),
        name="fashion-mnist",
    )


def _try_torchvision_download(cache: Path) -> Optional[str]:
    """Try torchvision's Fashion-MNIST download into ``cache``; return an error or None."""
    if os.environ.get("SELFSUP_ALLOW_DOWNLOAD", "1").strip() == "0":
        return "download disabled by SELFSUP_ALLOW_DOWNLOAD=0"
    try:
        from torchvision.datasets import FashionMNIST

        for train in (True, False):
            FashionMNIST(str(cache), train=train, download=True)
    except Exception as exc:  # no network, mirror down, disk full, ...
        return f"torchvision download failed: {type(exc).__name__}: {exc}"
    return None


def load_fashion_mnist(split: str, root: Optional[Path], image_size: Optional[int]) -> ImageDataset:
    """Fashion-MNIST from idx files: root, $SELFSUP_DATA, Debian package, user cache.

    As a last resort torchvision downloads it into the user cache (unless
    ``SELFSUP_ALLOW_DOWNLOAD=0``).
    """
    bases = [b for b in (root, _env_data_dir()) if b is not None]
    cache = _cache_dir() / "fashion-mnist"
    folders = [f for b in bases for f in _fashion_layouts(b)] + FASHION_MNIST_SYSTEM_DIRS
    folders += _fashion_layouts(cache)
    for folder in folders:
        if (ds := _fashion_from_folder(folder, split)) is not None:
            return ds
    reason = _try_torchvision_download(cache)
    if reason is None:
        for folder in _fashion_layouts(cache):
            if (ds := _fashion_from_folder(folder, split)) is not None:
                return ds
        reason = "torchvision download finished but the idx files were not found"
    raise _fashion_missing_error(split, folders, reason)


def _fashion_missing_error(split: str, folders: list[Path], reason: str) -> DatasetError:
    """The 'not found' error: where we looked and the four ways to fix it."""
    img_stem, lbl_stem = _IDX_STEMS[split]
    looked = "\n".join(f"  - {f}" for f in dict.fromkeys(folders))
    return DatasetError(
        f"fashion-mnist ({split}): could not find {img_stem}[.gz] and {lbl_stem}[.gz].\n"
        f"Looked in:\n{looked}\n({reason})\n"
        "Fix one of:\n"
        "  --data-dir DIR                          (folder holding the idx files)\n"
        "  export SELFSUP_DATA=DIR                 (same, via the environment)\n"
        "  sudo apt-get install dataset-fashion-mnist   (installs /usr/share/datasets/fashion-mnist)\n"
        "  connect to the internet so torchvision can download it "
        "(unset SELFSUP_ALLOW_DOWNLOAD=0 if set)"
    )


# ---------------------------------------------------------------------------
# scikit-learn digits
# ---------------------------------------------------------------------------

DIGITS_SPLIT_SEED = 0
DIGITS_TRAIN_FRACTION = 0.8


def _stratified_split(labels: np.ndarray, train_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Seeded, per-class split of indices into sorted train / test arrays."""
    perm = np.random.default_rng(seed).permutation(len(labels))
    train, test = [], []
    for c in np.unique(labels):
        idx = perm[labels[perm] == c]
        n_train = int(round(train_fraction * len(idx)))
        train.append(idx[:n_train])
        test.append(idx[n_train:])
    return {"train": np.sort(np.concatenate(train)), "test": np.sort(np.concatenate(test))}


def load_digits(split: str, root: Optional[Path], image_size: Optional[int]) -> ImageDataset:
    """scikit-learn's 8x8 digits (values 0..16 scaled to 0..255), fixed 80/20 split.

    ``root`` is ignored: the data ships inside scikit-learn.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    idx = _stratified_split(labels, DIGITS_TRAIN_FRACTION, DIGITS_SPLIT_SEED)[split]
    return ImageDataset(
        images=torch.from_numpy(images[idx]).unsqueeze(1),
        labels=torch.from_numpy(labels[idx]),
        classes=[str(d) for d in range(10)],
        name="digits",
    )


# ---------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (python pickle batches)
# ---------------------------------------------------------------------------

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
        raise DatasetError(f"{path}: expected a dict, got {type(obj).__name__}; not a CIFAR batch - re-fetch it "
                           f"from {_CIFAR_URL}")
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
    bases = [b for b in (root, _env_data_dir()) if b is not None]
    files = spec.train_files if split == "train" else spec.test_files
    candidates = [c for b in bases for c in (b, b / spec.folder, b / spec.name / spec.folder, b / spec.name)]
    for folder in candidates:
        if all((folder / f).is_file() for f in files):
            return folder
    for folder in candidates:  # a partial extraction, or the other CIFAR: say which
        present = [f for f in files if (folder / f).is_file()]
        if present:
            missing = [f for f in files if f not in present]
            raise DatasetError(f"{spec.name} ({split}): {folder} holds {', '.join(present)} but not "
                               f"{', '.join(missing)}: the extraction is incomplete; extract the archive again")
        other = _CIFAR100 if spec is _CIFAR10 else _CIFAR10
        if folder.is_dir() and all((folder / f).is_file() for f in other.train_files + other.test_files):
            raise DatasetError(f"{spec.name}: {folder} holds {other.name}, not {spec.name}; "
                               f"use --data {other.name}, or point --data-dir at the {spec.folder} folder")
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
        raise DatasetError(f"{folder}: {spec.name} labels must be 0..{limit - 1}, found {labels.min()}..{labels.max()}; "
                           f"the files are not {spec.name} batches - re-fetch them from {_CIFAR_URL}")
    return ImageDataset(torch.from_numpy(images), torch.from_numpy(labels), classes, spec.name)


def load_cifar10(split: str, root: Optional[Path], image_size: Optional[int]) -> ImageDataset:
    """CIFAR-10 from ``cifar-10-batches-py`` (python pickle format)."""
    return _load_cifar(_CIFAR10, split, root)


def load_cifar100(split: str, root: Optional[Path], image_size: Optional[int]) -> ImageDataset:
    """CIFAR-100 (fine labels) from ``cifar-100-python`` (python pickle format)."""
    return _load_cifar(_CIFAR100, split, root)


# ---------------------------------------------------------------------------
# Image folder
# ---------------------------------------------------------------------------

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
_GRAY_MODES = frozenset({"1", "L", "LA", "La"})
# 16- and 32-bit single-channel modes: Pillow's convert("L") clips them at 255 (a 16-bit PNG turns white),
# so they are scaled instead: integers as 16-bit (0..65535 -> 0..255), floats as [0, 1].
_DEEP_GRAY_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
DECODE_WORKERS = 4
PROGRESS_THRESHOLD = 2000
_SIDE_FILES = frozenset({"captions.tsv"})  # read by the loader, not images, not worth a warning


_WARNED: set = set()
_DENIED: set = set()  # files decode_image could not open for lack of permission (str paths)


def _first_time(key) -> bool:
    """True the first time ``key`` is seen in this process: for warnings that one file would raise
    once per split or per scan."""
    if key in _WARNED:
        return False
    _WARNED.add(key)
    return True


def is_run_dir(d: Path) -> bool:
    """A selfsup run directory (config.yaml beside checkpoints/ or metrics.jsonl)."""
    return (d / "config.yaml").is_file() and ((d / "checkpoints").is_dir() or (d / "metrics.jsonl").is_file())


def _walk(folder: Path) -> list[Path]:
    """Every file below ``folder``, following symlinked folders (a class folder may be a link) but
    never into a folder already visited (a link loop), and never into a selfsup run directory: a
    run written inside its own data folder would otherwise train on its own pictures (said once)."""
    seen, files, runs = set(), [], []
    for top, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        if Path(top) != folder and is_run_dir(Path(top)):
            runs.append(Path(top))
            dirs[:] = []
            continue
        files += [Path(top) / n for n in names]
    if runs and _first_time(("runs", str(folder.resolve()), tuple(runs))):
        warnings.warn(f"imagefolder: left out {counted(len(runs), 'selfsup run directory')} inside the data folder: "
                      f"{shown_paths(runs, folder)} (write runs outside the images' folder)", stacklevel=4)
    return files


def list_image_files(folder: Path) -> list[Path]:
    """All image-extension files below ``folder`` (sorted, hidden files skipped; see ``_walk``).

    Files with other extensions (README.txt, .DS_Store, ...) are not returned;
    :func:`list_other_files` lists them so that the loader can count them.
    """
    return sorted(
        p for p in _walk(folder)
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )  # fmt: skip


def list_other_files(folder: Path) -> list[Path]:
    """Files below ``folder`` that :func:`list_image_files` leaves out (notes.txt, .DS_Store, ...), sorted;
    not those inside hidden folders (.git/, .ipynb_checkpoints/), which are nobody's images."""
    out = []
    for p in _walk(folder):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts[:-1]) or rel.as_posix() in _SIDE_FILES:
            continue
        if (p.suffix.lower() not in IMAGE_EXTENSIONS or p.name.startswith(".")) and p.is_file():
            out.append(p)
    return sorted(out)


def counted(n: int, noun: str) -> str:
    """'1 file', '3 files'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def shown_paths(paths: list[Path], folder: Path, n: int = 5) -> str:
    """The first ``n`` paths relative to ``folder``, comma-separated, '...' when there are more."""
    names = [p.relative_to(folder).as_posix() if p.is_relative_to(folder) else str(p) for p in paths[:n]]
    return ", ".join(names) + (", ..." if len(paths) > n else "")


def split_folder(root: Path, split: str) -> Path:
    """Pick ``root/train`` or ``root/test`` when present; explain the layout otherwise."""
    if (root / "train").is_dir():
        if (root / split).is_dir():
            return root / split
        raise DatasetError(
            f"imagefolder: {root} has train/ but no {split}/ folder; add {root / split}/<class>/..."
        )
    if split == "test":
        raise DatasetError(
            f"imagefolder: {root} has no test split. Arrange it as {root}/train/<class>/*.png and "
            f"{root}/test/<class>/*.png, or use split='train' (all images)"
        )
    return root


def class_folders(root: Path, folder: Path) -> list[str]:
    """Sub-folder names that are classes: of ``folder``, or of both ``train/`` and ``test/``.

    With a train/test layout the classes are the union of both splits' sub-folders, so that
    label ``i`` names the same class in both even when one split lacks a class.
    """
    splits = [root / s for s in SPLITS if (root / s).is_dir()] if folder != root else [folder]
    return sorted({d.name for s in splits for d in s.iterdir() if d.is_dir() and not d.name.startswith(".")})


def class_of(files: list[Path], folder: Path, names: list[str]) -> tuple[Optional[list[str]], Optional[np.ndarray]]:
    """Class names and per-file labels when ``folder`` is ``<class>/<image>``, else (None, None).

    Labelled means: every image sits exactly one level down and there are at
    least two class sub-folders (``names``; empty ones count, and keep their label).
    Flat or deeper nesting is treated as unlabelled, since the folder names there
    are not class names.
    """
    rel = [f.relative_to(folder).parts for f in files]
    if any(len(parts) != 2 for parts in rel) or len(names) < 2:
        return None, None
    index = {c: i for i, c in enumerate(names)}
    return list(names), np.array([index[parts[0]] for parts in rel], dtype=np.int64)


def _to_l_or_rgb(img: Any) -> Any:
    """A decoded PIL image as mode ``L`` (gray modes) or ``RGB`` (all others: palette, CMYK, ...).

    Transparency is composited onto black, since the colour under a transparent pixel is
    arbitrary; 16-bit gray is scaled to 8 bits (see ``_DEEP_GRAY_MODES``).
    """
    from PIL import Image

    if img.mode in _DEEP_GRAY_MODES:
        a = np.asarray(img, dtype=np.float64)
        a = a * 255.0 if img.mode == "F" else a / 257.0
        return Image.fromarray(np.rint(np.nan_to_num(a)).clip(0, 255).astype(np.uint8), "L")
    target = "L" if img.mode in _GRAY_MODES else "RGB"
    if "A" in img.getbands() or "a" in img.getbands() or "transparency" in img.info:
        img = img.convert(target + "A")
        out = Image.new(target, img.size, 0)
        out.paste(img.convert(target), mask=img.getchannel("A"))
        return out
    return img.convert(target)


def decode_image(path: Path, size: int) -> Optional[np.ndarray]:
    """Decode one image to uint8 ``[size, size]`` (gray) or ``[size, size, 3]``; None if unreadable.

    Shorter side resized to ``size`` (bilinear, antialiased; smaller images are scaled up),
    then centre-cropped. Truncated files are unreadable, not padded.
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            img = _to_l_or_rgb(img)
            w, h = img.size
            if min(w, h) != size:
                scale = size / min(w, h)
                new = (max(size, round(w * scale)), max(size, round(h * scale)))
                img = img.resize(new, Image.Resampling.BILINEAR)
                w, h = new
            left, top = (w - size) // 2, (h - size) // 2
            img = img.crop((left, top, left + size, top + size))
            return np.asarray(img, dtype=np.uint8)
    except PermissionError:  # said apart from damage: the fix differs
        _DENIED.add(str(path))
        return None
    except Exception:  # corrupt, truncated, zero bytes, not an image, decompression bomb
        return None


def decode_all(files: list[Path], size: int) -> list[Optional[np.ndarray]]:
    """Decode ``files`` in a thread pool, with a tqdm bar for large folders."""
    with ThreadPoolExecutor(max_workers=DECODE_WORKERS) as pool:
        results: Iterable[Optional[np.ndarray]] = pool.map(lambda p: decode_image(p, size), files, chunksize=16)
        if len(files) > PROGRESS_THRESHOLD:
            try:
                from tqdm import tqdm

                results = tqdm(results, total=len(files), desc="decoding images", unit="img")
            except ImportError:
                pass
        return list(results)


def warn_skipped(skipped: list[Path]) -> None:
    """One warning naming how many files were unreadable and the first few."""
    if not skipped:
        return
    denied = [p for p in skipped if str(p) in _DENIED]
    broken = [p for p in skipped if str(p) not in _DENIED]
    for paths, why in ((denied, "permission denied: make them readable (chmod +r) or move them out"),
                       (broken, "corrupt, truncated or empty; delete or re-export them to silence this")):
        if paths:
            shown = ", ".join(str(p) for p in paths[:5]) + (", ..." if len(paths) > 5 else "")
            warnings.warn(f"imagefolder: skipped {counted(len(paths), 'unreadable file')}: {shown} ({why})",
                          stacklevel=4)


def stack_images(arrays: list[np.ndarray]) -> torch.Tensor:
    """Stack decoded images to ``[N, C, H, W]``; gray joins RGB by channel replication."""
    if all(a.ndim == 2 for a in arrays):
        return torch.from_numpy(np.stack(arrays)).unsqueeze(1)
    rgb = [np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
    return torch.from_numpy(np.stack(rgb)).permute(0, 3, 1, 2).contiguous()


AUTO_SIZE_CAP = 64  # the largest side chosen for a folder by itself: CPU training cost grows with its square
AUTO_SIZE_PROBE = 256  # files whose headers are read to choose it


def choose_image_size(root: Path, cap: int = AUTO_SIZE_CAP) -> tuple[int, str]:
    """The training side of an image folder, from its data: the median shorter side of up to
    ``AUTO_SIZE_PROBE`` files spread over the folder (headers only, nothing decoded), capped at ``cap``.
    Returns (side, a sentence saying how it was chosen)."""
    from PIL import Image

    root = Path(root).expanduser()
    folder = root / "train" if (root / "train").is_dir() else root
    files = list_image_files(folder) if folder.is_dir() else []
    step = max(1, len(files) // AUTO_SIZE_PROBE)
    sides = []
    for f in files[::step][:AUTO_SIZE_PROBE]:
        try:
            with Image.open(f) as img:
                sides.append(min(img.size))
        except Exception:  # unreadable files are the loader's to count
            continue
    if not sides:
        return DEFAULT_IMAGEFOLDER_SIZE, f"no readable image headers in {folder}: {DEFAULT_IMAGEFOLDER_SIZE} px"
    median = int(np.median(sides))
    side = max(8, min(cap, median))
    why = f"median shorter side of {counted(len(sides), 'image')} is {median} px"
    if side < median:
        why += f", capped at {cap} for the CPU"
    return side, why


def load_imagefolder(split: str, root: Optional[Path], image_size: Optional[int]) -> ImageDataset:
    """Images from ``root/<class>/*`` (labelled) or any other layout (unlabelled).

    ``root/train`` and ``root/test`` select the split when present; a ``captions.tsv`` in the
    split's folder (file name relative to it, a tab, the caption) adds captions (CLIP).  Images
    are decoded once, resized to ``image_size`` (default 32) and kept as uint8.

    Bad input: files that cannot be decoded (corrupt, truncated, zero bytes) are skipped and
    counted in one warning; so are files without an image extension (notes.txt, .DS_Store).
    Channels: if every image is gray (L, 1-bit, 16-bit) the dataset has 1 channel, otherwise 3 and
    gray images are replicated to RGB; palette and CMYK images become RGB, and transparency is
    composited onto black.  Images smaller than ``image_size`` are scaled up.  Classes are the
    sub-folders (with train/ and test/, of both): an empty class folder keeps its label, with a
    warning, so that labels mean the same class in both splits.
    """
    root = require_root(root, "imagefolder", "DIR (a folder of images, or of <class>/ sub-folders)")
    if not root.is_dir():
        raise DatasetError(f"imagefolder: {root} is not a folder; pass --data-dir DIR")
    folder = split_folder(root, split)
    files, others = list_image_files(folder), list_other_files(folder)
    if not files:
        held = f"it holds {counted(len(others), 'other file')} ({shown_paths(others, folder)})" if others else "it is empty"
        raise DatasetError(
            f"imagefolder: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {folder}: {held}; "
            "pass --data-dir pointing at a folder of images"
        )
    classes, labels = class_of(files, folder, class_folders(root, folder))
    decoded = decode_all(files, image_size or DEFAULT_IMAGEFOLDER_SIZE)
    ok = np.array([a is not None for a in decoded], dtype=bool)
    warn_skipped([f for f, good in zip(files, ok) if not good])
    if others:
        warnings.warn(f"imagefolder: ignored {counted(len(others), 'non-image file')} (no image extension, or hidden) "
                      f"in {folder}: {shown_paths(others, folder)}", stacklevel=3)
    if not ok.any():
        raise DatasetError(
            f"imagefolder: none of the {len(files)} image files in {folder} could be decoded "
            "(corrupt, truncated or empty); re-export them or pass --data-dir pointing at readable images"
        )
    images = stack_images([a for a in decoded if a is not None])
    label_tensor = None if labels is None else torch.from_numpy(labels[ok])
    if classes is not None:
        empty = [c for i, c in enumerate(classes) if not (labels[ok] == i).any()]
        if empty:
            warnings.warn(f"imagefolder: {len(empty)} of {len(classes)} classes have no readable images in {folder}: "
                          f"{', '.join(empty)}; each keeps its label, so labels name the same class in every split",
                          stacklevel=3)
    ds = ImageDataset(images, label_tensor, classes, "imagefolder",
                      files=[str(f.resolve()) for f, good in zip(files, ok) if good])
    if (folder / "captions.tsv").is_file():  # image-text pairs for CLIP: file name <TAB> caption
        ds = load_captions_file(folder, ds, [str(Path(f).relative_to(folder)) for f, good in zip(files, ok) if good])
    return ds


# ---------------------------------------------------------------------------
# numpy arrays
# ---------------------------------------------------------------------------

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


def _first_rows(bad: np.ndarray) -> str:
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
            raise DatasetError(f"{path}: {key} must be whole numbers (class indices 0..K-1); {int(bad.sum())} of {len(y)} are not, "
                               f"the first is {key}[{i}] = {y[i].item()!r}")
    elif not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(f"{path}: {key} must be integers (class indices 0..K-1), got dtype {y.dtype}; "
                           "map class names to indices and save the indices (names may go in 'classes')")
    negative = y < 0
    if negative.any():
        i = int(np.flatnonzero(negative)[0])
        raise DatasetError(f"{path}: {key} must be non-negative class indices; found {int(negative.sum())} negative "
                           f"values, the first is {key}[{i}] = {y[i].item()!r}")
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
        every = [_pick(store, _ARRAY_KEYS[s][1]) for s in SPLITS]
        every = [_check_labels(v, None, path, k) for k, v in (e for e in every if e is not None)]
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
        raise DatasetError(f"{path}: the {split} images array is empty (shape {data.images.shape}); "
                           "save at least one image, shaped " + _ACCEPTED_SHAPES)
    images = _to_uint8(_to_nchw(data.images, path), path)
    classes, label_tensor = data.classes, None
    if data.labels is not None:
        y = _check_labels(data.labels, len(images), path, data.label_key)
        values = data.label_values
        if classes is not None and y.size and y.max() >= len(classes):
            i = int(np.argmax(y >= len(classes)))
            raise DatasetError(f"{path}: {data.label_key}[{i}] = {y[i]} is out of range for the {len(classes)} "
                               f"names in 'classes' (labels must be 0..{len(classes) - 1}); fix the labels or "
                               "add the missing class names")
        if classes is None and values is not None and values.size:
            if values[-1] != len(values) - 1 and _first_time(("remap", str(path.resolve()), path.stat().st_mtime_ns)):
                # not 0..K-1: remap, the same way for every split (and say so once per file, not per split)
                warnings.warn(f"array: {path} labels are not 0..K-1 ({len(values)} distinct values from {values[0]} "
                              f"to {values[-1]}); remapped to 0..{len(values) - 1} in sorted order (class names keep "
                              "the original values; save a 'classes' array to name them yourself)", stacklevel=3)
            if values[-1] != len(values) - 1:
                y = np.searchsorted(values, y)
            classes = [str(v) for v in values]
        label_tensor = torch.from_numpy(y)
    return ImageDataset(torch.from_numpy(np.ascontiguousarray(images)), label_tensor, classes, "array")


# ---------------------------------------------------------------------------
# signals: synthetic labelled 1-D waveforms, generated offline from a seed
# ---------------------------------------------------------------------------

SIGNALS_CLASSES = [
    "sine-low", "sine-high", "two-tone", "chirp-up", "chirp-down",
    "am", "square", "sawtooth", "bursts", "fm",
]  # fmt: skip
SIGNALS_LENGTH = 1024  # T, samples per signal
SIGNALS_SIDE = 32  # stored as a SIDE x SIDE single-channel image, SIDE**2 == T (see load_signals)
SIGNALS_SIZES = {"train": 5000, "test": 1000}
SIGNALS_SEEDS = {"train": 0, "test": 1}  # different seeds: no test signal is a training signal
SIGNALS_NOISE = 0.1  # std of the additive Gaussian noise (signal amplitudes are 0.4-0.8)
MU_LAW_MU = 255.0  # 8-bit mu-law, as in G.711 / WaveNet's 8-bit audio


def mu_law_encode(x: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] -> uint8 by 8-bit mu-law companding (finer steps near zero)."""
    y = np.sign(x) * np.log1p(MU_LAW_MU * np.abs(x)) / np.log1p(MU_LAW_MU)
    return np.rint((y + 1.0) * 127.5).clip(0, 255).astype(np.uint8)


def mu_law_decode(u: np.ndarray) -> np.ndarray:
    """Inverse of :func:`mu_law_encode` (up to quantisation): uint8 -> float in [-1, 1]."""
    y = u.astype(np.float64) / 127.5 - 1.0
    return np.sign(y) * np.expm1(np.abs(y) * np.log1p(MU_LAW_MU)) / MU_LAW_MU


def synth_signals(n: int, seed: int, length: int = SIGNALS_LENGTH) -> tuple[np.ndarray, np.ndarray]:
    """``n`` waveforms float64 ``[n, length]`` in [-1, 1] and their labels ``int64 [n]``.

    The class fixes the generative structure (which frequencies, envelope, chirp direction,
    wave shape); frequency, phase, amplitude and the noise are drawn per signal, so no two
    signals of a class are alike and neither a fixed template nor the raw samples give the
    class away. Frequencies are in cycles per signal. Deterministic given ``seed``.
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(SIGNALS_CLASSES))
    t = np.arange(length) / length  # [T] in [0, 1)
    out = np.empty((n, length))

    def u(lo: float, hi: float, m: int) -> np.ndarray:  # one draw per signal, as a column [m, 1]
        return rng.uniform(lo, hi, (m, 1))

    two_pi = 2 * np.pi
    for c, name in enumerate(SIGNALS_CLASSES):
        idx = np.flatnonzero(labels == c)
        m = len(idx)
        phase = u(0, two_pi, m)
        if name == "sine-low":
            x = np.sin(two_pi * u(3, 7, m) * t + phase)
        elif name == "sine-high":
            x = np.sin(two_pi * u(18, 30, m) * t + phase)
        elif name == "two-tone":  # the sum of a low and a high tone: neither sine class alone
            x = 0.5 * (np.sin(two_pi * u(3, 7, m) * t + phase) + np.sin(two_pi * u(18, 30, m) * t + u(0, two_pi, m)))
        elif name in ("chirp-up", "chirp-down"):  # linear chirp: phase is the integral of f(t)
            f0, f1 = u(2, 6, m), u(24, 36, m)
            if name == "chirp-down":
                f0, f1 = f1, f0
            x = np.sin(two_pi * (f0 * t + (f1 - f0) * t**2 / 2) + phase)
        elif name == "am":  # high carrier under a slow sinusoidal envelope
            depth = u(0.6, 1.0, m)
            env = (1 + depth * np.sin(two_pi * u(1.5, 4, m) * t + u(0, two_pi, m))) / (1 + depth)
            x = env * np.sin(two_pi * u(18, 30, m) * t + phase)
        elif name == "square":
            x = np.sign(np.sin(two_pi * u(4, 12, m) * t + phase))
        elif name == "sawtooth":
            x = 2 * np.mod(u(4, 12, m) * t + phase / two_pi, 1.0) - 1
        elif name == "bursts":  # decaying bursts of a high carrier, repeated at a random rate
            env = np.exp(-u(4, 8, m) * np.mod(u(3, 6, m) * t + u(0, 1, m), 1.0))
            x = env * np.sin(two_pi * u(18, 30, m) * t + phase)
        else:  # "fm": a mid carrier whose frequency swings slowly
            mod = u(2, 5, m) * np.sin(two_pi * u(1.5, 4, m) * t + u(0, two_pi, m))
            x = np.sin(two_pi * u(10, 18, m) * t + mod + phase)
        out[idx] = u(0.4, 0.8, m) * x
    out += SIGNALS_NOISE * rng.standard_normal(out.shape)
    return np.clip(out, -1.0, 1.0), labels.astype(np.int64)


def load_signals(split: str, root: Optional[Path], image_size: Optional[int]) -> ImageDataset:
    """Synthetic labelled waveforms (10 classes), generated in memory: nothing to download.

    Each signal is T = 1024 samples of 8-bit mu-law audio (uint8). Layout: a 1-D signal would
    naturally be ``[N, 1, 1, T]``, but the training loop's views (``random_resized_crop``), its
    evaluation view and ``ImageDataset.image_size`` all assume square images, so the samples
    are stored row-major as a ``[N, 1, 32, 32]`` image instead. ``x.flatten(2)`` gives back
    ``[N, 1, T]`` in time order; the ``conv1d`` backbone and CPC's sequence mode do exactly
    that, and accept ``[N, 1, 1, T]`` too. Use identity views (``configs/cpc_signals.yaml``):
    crops, flips and blur of the folded image would cut the signal apart. ``root`` is ignored.
    """
    if image_size is not None and image_size != SIGNALS_SIDE:
        raise DatasetError(
            f"signals: image_size={image_size} would resample the folded {SIGNALS_SIDE}x{SIGNALS_SIDE} "
            "signal as if it were a picture and scramble it; leave data.image_size unset"
        )
    x, labels = synth_signals(SIGNALS_SIZES[split], SIGNALS_SEEDS[split])
    images = mu_law_encode(x).reshape(-1, 1, SIGNALS_SIDE, SIGNALS_SIDE)
    return ImageDataset(torch.from_numpy(images), torch.from_numpy(labels), list(SIGNALS_CLASSES), "signals")


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------

Loader = Callable[[str, Optional[Path], Optional[int]], ImageDataset]

DATASETS: Registry[Loader] = Registry("dataset", error=DatasetError)
for _name, _loader in (("fashion-mnist", load_fashion_mnist), ("digits", load_digits), ("cifar10", load_cifar10),
                       ("cifar100", load_cifar100), ("imagefolder", load_imagefolder), ("array", load_array),
                       ("signals", load_signals)):
    DATASETS.add(_name, _loader)


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`, in registration order (the sources, then derived sets)."""
    return list(DATASETS)


def load_dataset(
    name: str,
    split: str = "train",
    root: Optional[str | os.PathLike[str]] = None,
    image_size: Optional[int] = None,
) -> ImageDataset:
    """Load dataset ``name`` (see :func:`list_datasets`) fully into memory.

    ``root`` is a folder or file whose meaning depends on the source;
    ``image_size`` resizes every image to a square of that side.
    """
    loader = DATASETS.get(name)
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if image_size is not None and image_size <= 0:
        raise DatasetError(f"image_size must be a positive integer, got {image_size}")
    path = Path(root).expanduser() if root is not None else None
    ds = loader(split, path, image_size)
    if image_size is not None and tuple(ds.images.shape[-2:]) != (image_size, image_size):
        ds = dataclasses.replace(ds, images=resize_images(ds.images, image_size))
    return ds


def load_captions_file(folder: Path, dataset: ImageDataset, files: list[str]) -> ImageDataset:
    """Attach captions from ``folder/captions.tsv`` (file name <TAB> caption, one line per image) to
    ``dataset`` whose images came from ``files`` (relative paths, same order). Every image needs one."""
    path = Path(folder) / "captions.tsv"
    if not path.is_file():
        raise DatasetError(f"{path} not found: an image-text method needs a captions.tsv next to the images "
                           f"(one line per image: file name, a tab, its caption)")
    with open(path, newline="", encoding="utf-8") as f:
        table = {row[0]: row[1] for row in csv.reader(f, delimiter="\t") if len(row) >= 2}
    missing = [p for p in files if p not in table and Path(p).name not in table]
    if missing:
        raise DatasetError(f"{path}: no caption for {len(missing)} image(s), e.g. {missing[0]!r}")
    caps = [table.get(p, table.get(Path(p).name)) for p in files]
    return dataclasses.replace(dataset, captions=caps)
