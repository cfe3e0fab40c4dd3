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

import difflib
import gzip
import importlib
import os
import pickle
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "DATASETS",
    "DatasetError",
    "ImageDataset",
    "list_datasets",
    "load_dataset",
]

SPLITS = ("train", "test")
DEFAULT_IMAGEFOLDER_SIZE = 32


class DatasetError(Exception):
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

    def __post_init__(self) -> None:
        """Check dtypes and shapes; make the tensors contiguous."""
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"images must be uint8 [N, C, H, W], got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.images.shape[1] not in (1, 3):
            raise ValueError(f"images must have 1 or 3 channels, got {self.images.shape[1]}")
        self.images = self.images.contiguous()
        if self.labels is not None:
            if self.labels.dim() != 1 or len(self.labels) != len(self.images):
                raise ValueError(
                    f"labels must be [N={len(self.images)}], got {tuple(self.labels.shape)}"
                )
            self.labels = self.labels.to(torch.int64).contiguous()
        if self.captions is not None and len(self.captions) != len(self.images):
            raise ValueError(f"{len(self.captions)} captions for {len(self.images)} images")

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
            raise ValueError(f"{self.name}: images are not square ({h}x{w})")
        return int(h)

    def subset(self, idx: torch.Tensor) -> ImageDataset:
        """A new dataset with the rows selected by ``idx`` (indices or bool mask)."""
        idx = torch.as_tensor(idx)
        labels = None if self.labels is None else self.labels[idx]
        captions = None
        if self.captions is not None:
            rows = idx.nonzero().flatten() if idx.dtype == torch.bool else idx.reshape(-1)
            captions = [self.captions[int(i)] for i in rows]
        return ImageDataset(self.images[idx], labels, self.classes, self.name, captions)

    def labelled_subset(self, fraction: float, seed: int = 0) -> ImageDataset:
        """Deterministic, class-balanced subset holding ``fraction`` of the labels.

        Used for the usual 1 % / 10 % semi-supervised evaluations.  The same
        ``seed`` always gives the same indices; every class present gets at
        least one sample, and per-class counts differ by at most one unless a
        class is too small (then all its samples are taken).
        """
        if self.labels is None:
            raise ValueError(f"{self.name}: labelled_subset needs labels, but this dataset has none")
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
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


def _require_root(root: Optional[Path], source: str, what: str) -> Path:
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
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1")


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
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def safe_unpickle(path: Path) -> dict:
    """Load a CIFAR-style pickle (a dict) without allowing arbitrary code."""
    try:
        with open(path, "rb") as f:
            obj = _SafeUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DatasetError(
            f"{path}: refused to unpickle ({exc}); CIFAR files hold only dicts of "
            "arrays/lists - this file is not a genuine CIFAR batch, do not use it"
        ) from exc
    except Exception as exc:  # truncated, wrong format, ...
        raise DatasetError(
            f"{path}: cannot read pickle ({type(exc).__name__}: {exc}); re-fetch the file"
        ) from exc
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: expected a dict, got {type(obj).__name__}")
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
    looked = ", ".join(str(c) for c in dict.fromkeys(candidates))
    looked = looked or "nowhere (no --data-dir, SELFSUP_DATA unset)"
    raise DatasetError(
        f"{spec.name} ({split}): could not find {spec.folder}/{{{','.join(files)}}}. Looked in: {looked}. "
        f"Fix: pass --data-dir DIR (the extracted {spec.folder} folder or its parent) "
        f"or export SELFSUP_DATA=DIR; get the 'python version' archive from "
        "https://www.cs.toronto.edu/~kriz/cifar.html"
    )


def _cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 3, 32, 32]`` and labels of one CIFAR batch file."""
    batch = safe_unpickle(path)
    data, labels = batch.get(b"data"), batch.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetError(f"{path}: b'data' is not a uint8 [N, 3072] array")
    labels = np.asarray(labels, dtype=np.int64) if labels is not None else None
    if labels is None or labels.shape != (len(data),):
        raise DatasetError(f"{path}: missing or mis-sized {label_key!r}")
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
    if labels.size and labels.min() < 0:
        raise DatasetError(f"{folder}: negative labels in {spec.name}")
    classes = _cifar_classes(folder, spec)
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
_GRAY_MODES = frozenset({"1", "L", "LA"})
DECODE_WORKERS = 4
PROGRESS_THRESHOLD = 2000


def _image_files(folder: Path) -> list[Path]:
    """All image-extension files below ``folder`` (sorted, hidden files skipped).

    Files with other extensions (README.txt, .DS_Store, ...) are ignored,
    not counted as unreadable.
    """
    return sorted(
        p for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )  # fmt: skip


def _split_folder(root: Path, split: str) -> Path:
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


def _class_of(files: list[Path], folder: Path) -> tuple[Optional[list[str]], Optional[np.ndarray]]:
    """Class names and per-file labels when ``folder`` is ``<class>/<image>``, else (None, None).

    Labelled means: every image sits exactly one level down and there are at
    least two such sub-folders.  Flat or deeper nesting is treated as
    unlabelled, since the folder names there are not class names.
    """
    rel = [f.relative_to(folder).parts for f in files]
    if any(len(parts) != 2 for parts in rel):
        return None, None
    classes = sorted({parts[0] for parts in rel})
    if len(classes) < 2:
        return None, None
    index = {c: i for i, c in enumerate(classes)}
    return classes, np.array([index[parts[0]] for parts in rel], dtype=np.int64)


def _decode(path: Path, size: int) -> Optional[np.ndarray]:
    """Decode one image to uint8 ``[size, size]`` (gray) or ``[size, size, 3]``; None if unreadable.

    Shorter side resized to ``size`` (bilinear, antialiased), then centre-cropped.
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            img = img.convert("L" if img.mode in _GRAY_MODES else "RGB")
            w, h = img.size
            if min(w, h) != size:
                scale = size / min(w, h)
                new = (max(size, round(w * scale)), max(size, round(h * scale)))
                img = img.resize(new, Image.Resampling.BILINEAR)
                w, h = new
            left, top = (w - size) // 2, (h - size) // 2
            img = img.crop((left, top, left + size, top + size))
            return np.asarray(img, dtype=np.uint8)
    except Exception:  # corrupt, truncated, zero bytes, not an image, decompression bomb
        return None


def _decode_all(files: list[Path], size: int) -> list[Optional[np.ndarray]]:
    """Decode ``files`` in a thread pool, with a tqdm bar for large folders."""
    with ThreadPoolExecutor(max_workers=DECODE_WORKERS) as pool:
        results: Iterable[Optional[np.ndarray]] = pool.map(lambda p: _decode(p, size), files, chunksize=16)
        if len(files) > PROGRESS_THRESHOLD:
            try:
                from tqdm import tqdm

                results = tqdm(results, total=len(files), desc="decoding images", unit="img")
            except ImportError:
                pass
        return list(results)


def _warn_skipped(skipped: list[Path]) -> None:
    """One warning naming how many files were unreadable and the first few."""
    if not skipped:
        return
    shown = ", ".join(str(p) for p in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
    warnings.warn(f"imagefolder: skipped {len(skipped)} unreadable files: {shown}", stacklevel=4)


def _stack_images(arrays: list[np.ndarray]) -> torch.Tensor:
    """Stack decoded images to ``[N, C, H, W]``; gray joins RGB by channel replication."""
    if all(a.ndim == 2 for a in arrays):
        return torch.from_numpy(np.stack(arrays)).unsqueeze(1)
    rgb = [np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
    return torch.from_numpy(np.stack(rgb)).permute(0, 3, 1, 2).contiguous()


def load_imagefolder(split: str, root: Optional[Path], image_size: Optional[int]) -> ImageDataset:
    """Images from ``root/<class>/*`` (labelled) or any other layout (unlabelled).

    ``root/train`` and ``root/test`` select the split when present; a ``captions.tsv`` in the
    split's folder (file name relative to it, a tab, the caption) adds captions (CLIP).  Images
    are decoded once, resized to ``image_size`` (default 32) and kept as uint8.
    """
    root = _require_root(root, "imagefolder", "DIR (a folder of images, or of <class>/ sub-folders)")
    if not root.is_dir():
        raise DatasetError(f"imagefolder: {root} is not a folder; pass --data-dir DIR")
    folder = _split_folder(root, split)
    files = _image_files(folder)
    if not files:
        raise DatasetError(
            f"imagefolder: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {folder}; "
            "pass --data-dir pointing at a folder of images"
        )
    classes, labels = _class_of(files, folder)
    decoded = _decode_all(files, image_size or DEFAULT_IMAGEFOLDER_SIZE)
    ok = np.array([a is not None for a in decoded], dtype=bool)
    _warn_skipped([f for f, good in zip(files, ok) if not good])
    if not ok.any():
        raise DatasetError(f"imagefolder: none of the {len(files)} image files in {folder} could be decoded")
    images = _stack_images([a for a in decoded if a is not None])
    label_tensor = None if labels is None else torch.from_numpy(labels[ok])
    ds = ImageDataset(images, label_tensor, classes, "imagefolder")
    if (folder / "captions.tsv").is_file():  # image-text pairs for CLIP: file name <TAB> caption
        from selfsup.data.captions import load_captions_file

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


def _to_nchw(x: np.ndarray, path: Path) -> np.ndarray:
    """Bring an image array to ``[N, C, H, W]``; channel axis is the one of size 1 or 3."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[1] in (1, 3):
        return x
    if x.ndim == 4 and x.shape[3] in (1, 3):
        return x.transpose(0, 3, 1, 2)
    raise DatasetError(f"{path}: images have shape {x.shape}; accepted shapes are {_ACCEPTED_SHAPES}")


def _to_uint8(x: np.ndarray, path: Path) -> np.ndarray:
    """uint8 as is; float in [0, 1] scaled by 255; integers in 0..255 cast."""
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        if bad:
            raise DatasetError(f"{path}: images contain {bad} NaN/inf values; clean them before loading")
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        if lo < 0.0 or hi > 1.0:
            raise DatasetError(
                f"{path}: float images must lie in [0, 1], found [{lo:g}, {hi:g}]; "
                "rescale them (e.g. x / 255) or save as uint8"
            )
        return np.rint(x * 255.0).astype(np.uint8)
    if np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DatasetError(f"{path}: integer images must lie in 0..255, found [{x.min()}, {x.max()}]")
        return x.astype(np.uint8)
    raise DatasetError(f"{path}: unsupported image dtype {x.dtype}; use uint8 or float in [0, 1]")


def _check_labels(y: np.ndarray, n: int, path: Path) -> np.ndarray:
    """Labels must be a 1-D array of ``n`` non-negative integers."""
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1 or len(y) != n:
        raise DatasetError(f"{path}: labels must be {n} integers [N], got {y.dtype} {y.shape}")
    negative = int(np.count_nonzero(y < 0))
    if negative:
        raise DatasetError(f"{path}: labels must be non-negative; found {negative} negative values")
    return y.astype(np.int64)


def _pick(store: Any, keys: tuple[str, ...]) -> Optional[np.ndarray]:
    """The first of ``keys`` present in an npz store, or None."""
    for key in keys:
        if key in store.files:
            return store[key]
    return None


def _read_array_file(path: Path, split: str) -> tuple[np.ndarray, Optional[np.ndarray], Optional[list[str]]]:
    """Images, labels and optional class names from a .npy or .npz file."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        if split == "test":
            raise DatasetError(f"{path}: a .npy file has no test split; save an .npz with x_test/y_test")
        return np.load(path, allow_pickle=False), None, None
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
        classes = store["classes"] if "classes" in store.files else None
    names = [str(c) for c in classes.tolist()] if classes is not None and classes.dtype.kind in "US" else None
    return images, labels, names


def load_array(split: str, root: Optional[Path], image_size: Optional[int]) -> ImageDataset:
    """Images (and labels) from a ``.npy`` or ``.npz`` file given as ``root``."""
    path = _require_root(root, "array", "path/to/data.npz (or .npy)")
    try:
        images, labels, classes = _read_array_file(path, split)
    except (ValueError, OSError) as exc:  # pickled objects, corrupt zip, ...
        raise DatasetError(f"{path}: cannot read array file ({exc})") from exc
    images = _to_uint8(_to_nchw(images, path), path)
    label_tensor = None
    if labels is not None:
        y = _check_labels(labels, len(images), path)
        label_tensor = torch.from_numpy(y)
        if classes is None and y.size:
            classes = [str(i) for i in range(int(y.max()) + 1)]
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

DATASETS: dict[str, Loader] = {
    "fashion-mnist": load_fashion_mnist,
    "digits": load_digits,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "imagefolder": load_imagefolder,
    "array": load_array,
    "signals": load_signals,
}


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return list(DATASETS)


def _unknown_name_error(name: str) -> DatasetError:
    """DatasetError listing the known names, with a 'did you mean' hint."""
    close = difflib.get_close_matches(name.lower(), DATASETS, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return DatasetError(f"unknown dataset {name!r}.{hint} Known datasets: {', '.join(DATASETS)}")


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
    if name not in DATASETS:
        raise _unknown_name_error(name)
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if image_size is not None and image_size <= 0:
        raise DatasetError(f"image_size must be a positive integer, got {image_size}")
    path = Path(root).expanduser() if root is not None else None
    ds = DATASETS[name](split, path, image_size)
    if image_size is not None and tuple(ds.images.shape[-2:]) != (image_size, image_size):
        ds = ImageDataset(resize_images(ds.images, image_size), ds.labels, ds.classes, ds.name)
    return ds
