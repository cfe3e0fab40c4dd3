"""Fashion-MNIST from its idx files (plain or gzipped).

Looked for under ``--data-dir``, ``$SELFSUP_DATA``, the Debian package ``dataset-fashion-mnist``
and the user cache, in the plain, named and torchvision layouts; as a last resort torchvision
downloads it into the user cache (unless ``SELFSUP_ALLOW_DOWNLOAD=0``).
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from selfsup.data.dataset import DatasetError, ImageDataset, cache_dir, env_data_dir

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
    bases = [b for b in (root, env_data_dir()) if b is not None]
    cache = cache_dir() / "fashion-mnist"
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
