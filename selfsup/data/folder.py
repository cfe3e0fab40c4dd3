"""Image folders: a folder of image files, flat or in ``<class>/`` sub-folders, optionally split
into ``train/`` and ``test/``, with an optional ``captions.tsv`` (image-text pairs).

The layout helpers here (listing image files, choosing the split and the classes, choosing a
side from the images) are shared with the streamed folder (``selfsup.data.stream``) and with
user-labelled folders (``selfsup.data.labelled``); decoding lives in ``selfsup.data.decode``.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from selfsup.data.dataset import SPLITS, DatasetError, ImageDataset, counted, first_time, require_root, shown_paths
from selfsup.data.decode import decode_all, stack_images, warn_skipped

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
DEFAULT_IMAGEFOLDER_SIZE = 32
_SIDE_FILES = frozenset({"captions.tsv"})  # read by the loader, not images, not worth a warning


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
    if runs and first_time(("runs", str(folder.resolve()), tuple(runs))):
        warnings.warn(
            f"imagefolder: left out {counted(len(runs), 'selfsup run directory')} inside the data folder: "
            f"{shown_paths(runs, folder)} (write runs outside the images' folder)",
            stacklevel=4,
        )
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


def split_folder(root: Path, split: str) -> Path:
    """Pick ``root/train`` or ``root/test`` when present; explain the layout otherwise."""
    if (root / "train").is_dir():
        if (root / split).is_dir():
            return root / split
        raise DatasetError(f"imagefolder: {root} has train/ but no {split}/ folder; add {root / split}/<class>/...")
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
        held = (
            f"it holds {counted(len(others), 'other file')} ({shown_paths(others, folder)})"
            if others
            else "it is empty"
        )
        raise DatasetError(
            f"imagefolder: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {folder}: {held}; "
            "pass --data-dir pointing at a folder of images"
        )
    classes, labels = class_of(files, folder, class_folders(root, folder))
    decoded = decode_all(files, image_size or DEFAULT_IMAGEFOLDER_SIZE)
    ok = np.array([a is not None for a in decoded], dtype=bool)
    warn_skipped([f for f, good in zip(files, ok) if not good])
    if others:
        warnings.warn(
            f"imagefolder: ignored {counted(len(others), 'non-image file')} (no image extension, or hidden) "
            f"in {folder}: {shown_paths(others, folder)}",
            stacklevel=3,
        )
    if not ok.any():
        raise DatasetError(
            f"imagefolder: none of the {len(files)} image files in {folder} could be decoded "
            "(corrupt, truncated or empty); re-export them or pass --data-dir pointing at readable images"
        )
    images = stack_images([a for a in decoded if a is not None])
    label_tensor = None if labels is None else torch.from_numpy(labels[ok])
    if classes is not None and labels is not None:
        empty = [c for i, c in enumerate(classes) if not (labels[ok] == i).any()]
        if empty:
            warnings.warn(
                f"imagefolder: {len(empty)} of {len(classes)} classes have no readable images in {folder}: "
                f"{', '.join(empty)}; each keeps its label, so labels name the same class in every split",
                stacklevel=3,
            )
    ds = ImageDataset(
        images, label_tensor, classes, "imagefolder", files=[str(f.resolve()) for f, good in zip(files, ok) if good]
    )
    if (folder / "captions.tsv").is_file():  # image-text pairs for CLIP: file name <TAB> caption
        ds = load_captions_file(folder, ds, [str(Path(f).relative_to(folder)) for f, good in zip(files, ok) if good])
    return ds


def load_captions_file(folder: Path, dataset: ImageDataset, files: list[str]) -> ImageDataset:
    """Attach captions from ``folder/captions.tsv`` (file name <TAB> caption, one line per image) to
    ``dataset`` whose images came from ``files`` (relative paths, same order). Every image needs one."""
    path = Path(folder) / "captions.tsv"
    if not path.is_file():
        raise DatasetError(
            f"{path} not found: an image-text method needs a captions.tsv next to the images "
            f"(one line per image: file name, a tab, its caption)"
        )
    with open(path, newline="", encoding="utf-8") as f:
        table = {row[0]: row[1] for row in csv.reader(f, delimiter="\t") if len(row) >= 2}
    missing = [p for p in files if p not in table and Path(p).name not in table]
    if missing:
        raise DatasetError(f"{path}: no caption for {len(missing)} image(s), e.g. {missing[0]!r}")
    caps = [table[p] if p in table else table[Path(p).name] for p in files]  # every one was found above
    return dataclasses.replace(dataset, captions=caps)
