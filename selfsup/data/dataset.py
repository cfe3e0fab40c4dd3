"""The in-memory dataset every source returns, and what the sources share.

:class:`ImageDataset` holds ``uint8 [N, C, H, W]`` images (with labels, class names,
captions and file names when the source has them); :class:`DatasetError` is the error every
source raises. Shared by the sources: where to look for data (``--data-dir``,
``$SELFSUP_DATA``, the user cache), resizing and channel-matching uint8 image tensors,
and the wording of their messages (counts, paths, warnings said once).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from selfsup.errors import SelfsupError

SPLITS = ("train", "test")


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
            raise SelfsupError(f"images must be uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.images.shape[1] not in (1, 3):
            raise SelfsupError(f"images must have 1 or 3 channels, got {self.images.shape[1]}")
        self.images = self.images.contiguous()
        if self.labels is not None:
            if self.labels.dim() != 1 or len(self.labels) != len(self.images):
                raise SelfsupError(f"labels must be [N={len(self.images)}], got {tuple(self.labels.shape)}")
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


VALIDATION_SEED = 12345


def validation_split(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(validation rows, the other rows) of a training split of ``n`` images: the first ``size`` rows of one
    seeded permutation, and the rest in that order. Every validation split selfsup carves from a training
    split is a prefix of this permutation, so a smaller one (the training monitor's) lies inside a larger
    one (the benchmarks'), and every choice — recipes, sides, levers — is made on images no test number saw."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(VALIDATION_SEED))
    return perm[:size], perm[size:]


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


def env_data_dir() -> Optional[Path]:
    """``$SELFSUP_DATA`` as a path, or None when unset/empty."""
    value = os.environ.get("SELFSUP_DATA", "").strip()
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
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


def counted(n: int, noun: str) -> str:
    """'1 file', '3 files'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def shown_paths(paths: list[Path], folder: Path, n: int = 5) -> str:
    """The first ``n`` paths relative to ``folder``, comma-separated, '...' when there are more."""
    names = [p.relative_to(folder).as_posix() if p.is_relative_to(folder) else str(p) for p in paths[:n]]
    return ", ".join(names) + (", ..." if len(paths) > n else "")


_WARNED: set = set()


def first_time(key) -> bool:
    """True the first time ``key`` is seen in this process: for warnings that one file would raise
    once per split or per scan."""
    if key in _WARNED:
        return False
    _WARNED.add(key)
    return True
