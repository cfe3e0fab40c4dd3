"""Labels a user brings: a folder of class sub-folders, or a CSV of ``path,label`` rows.

A user who pretrained on an unlabelled folder labels a few hundred images afterwards, in whatever
form is at hand: sorted into one folder per class, or listed in a spreadsheet. Either becomes an
``ImageDataset`` decoded for one encoder's input (its channels and stored side), with the file of
every row kept, so that evaluation, ``selfsup classify`` and ``selfsup predict`` can name images.

CSV paths are looked up relative to the CSV's own folder first, then relative to each folder in
``search`` (the pretraining folder), then as given (absolute). A header row ``path,label`` is
optional. A file named but not found is an error that lists the first few, because a typo in a
label sheet silently dropping images would bias every number; a file that exists but cannot be
decoded is skipped and counted in one warning, as the image-folder loader does.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from selfsup.data.dataset import DatasetError, ImageDataset, counted, match_channels, shown_paths
from selfsup.data.decode import decode_all, stack_images, warn_skipped
from selfsup.data.folder import class_folders, class_of, list_image_files


def _label_order(names: set[str]) -> list[str]:
    """Class names in a stable order: numerically when every name is an integer ("2" < "10"), else sorted."""
    try:
        return sorted(names, key=int)
    except ValueError:
        return sorted(names)


def _from_folder(folder: Path) -> tuple[list[Path], list[str], list[str]]:
    files = list_image_files(folder)
    if not files:
        raise DatasetError(
            f"labels: no image files below {folder}; a labelled folder holds one sub-folder per "
            f"class (DIR/<class>/*.png)"
        )
    names, labels = class_of(files, folder, class_folders(folder, folder))
    if names is None or labels is None:
        raise DatasetError(
            f"labels: {folder} is not a folder of class sub-folders (every image at DIR/<class>/file, "
            f"at least two classes); arrange it so, or list the images in a CSV of path,label rows"
        )
    return files, [names[i] for i in labels], names


def _from_csv(path: Path, search: Sequence[Path]) -> tuple[list[Path], list[str], list[str]]:
    try:
        with open(path, newline="") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"labels: cannot read {path} as a CSV of path,label rows ({e})") from None
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
    bad = [i for i, r in enumerate(rows) if len(r) < 2 or not r[0].strip() or not r[1].strip()]
    if bad:
        raise DatasetError(f"labels: {path} row {bad[0] + 1} is {rows[bad[0]]!r}: every row must be path,label")
    if not rows:
        raise DatasetError(f"labels: {path} lists no images; write one path,label row per labelled image")
    bases = [path.parent, *search]
    files: list[Path] = []
    missing: list[str] = []
    for r in rows:
        name = Path(r[0].strip()).expanduser()
        found = next((b / name for b in bases if (b / name).is_file()), name if name.is_file() else None)
        if found is None:
            missing.append(r[0].strip())
        else:
            files.append(found)
    if missing:
        looked = ", ".join(str(b) for b in bases)
        raise DatasetError(
            f"labels: {counted(len(missing), 'image')} listed in {path} not found (e.g. "
            f"{', '.join(missing[:3])}); paths are looked up relative to {looked}, or absolute"
        )
    labels = [r[1].strip() for r in rows]
    return files, labels, _label_order(set(labels))


def load_labelled(
    source: str | Path, channels: int, size: int, classes: Optional[list[str]] = None, search: Sequence[str | Path] = ()
) -> ImageDataset:
    """A labelled set from ``source`` (a folder of class sub-folders or a .csv of path,label rows),
    decoded to uint8 [N, ``channels``, ``size``, ``size``] (shorter side resized, centre-cropped,
    as the image-folder dataset decodes). ``classes``: the class list of the labels it goes with (a
    test set uses the labelled set's, so that label i is the same class in both; a class it lacks
    is fine, a class the labels never saw is an error). ``search``: folders that CSV paths may be
    relative to (the pretraining folder)."""
    src = Path(source).expanduser()
    if src.is_dir():
        files, names, found = _from_folder(src)
    elif src.is_file() and src.suffix.lower() == ".csv":
        files, names, found = _from_csv(src, [Path(s).expanduser() for s in search if s])
    elif src.is_file():
        raise DatasetError(f"labels: {src} is neither a folder of class sub-folders nor a .csv of path,label rows")
    else:
        raise DatasetError(f"labels: {src} does not exist: pass a folder of class sub-folders or a CSV of path,label")
    if classes is None:
        classes = found
        if len(classes) < 2:
            raise DatasetError(f"labels: {src} names one class ({classes[0]}); a classifier needs at least two")
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise DatasetError(
            f"labels: {src} has classes the labelled set does not ({', '.join(unknown[:5])}); "
            f"its classes are {', '.join(classes)}"
        )
    images, kept = decode_files(files, channels, size)
    index = {c: i for i, c in enumerate(classes)}
    name_of = {str(f.resolve()): n for f, n in zip(files, names)}
    labels = torch.tensor([index[name_of[f]] for f in kept], dtype=torch.int64)
    return ImageDataset(images, labels, list(classes), f"labels:{src.name}", files=kept)


def decode_files(files: list[Path], channels: int, size: int) -> tuple[torch.Tensor, list[str]]:
    """(uint8 [N, channels, size, size], the absolute paths decoded) of image ``files``, decoded as the
    image-folder dataset decodes; unreadable files are skipped and counted in one warning."""
    decoded = decode_all(files, size)
    ok = [a is not None for a in decoded]
    warn_skipped([f for f, good in zip(files, ok) if not good])
    if not any(ok):
        raise DatasetError(
            f"none of the {len(files)} image files could be decoded (corrupt, truncated or empty): "
            f"{shown_paths(files, files[0].parent)}"
        )
    images = match_channels(stack_images([a for a in decoded if a is not None]), channels)
    return images, [str(f.resolve()) for f, good in zip(files, ok) if good]


def image_batches(
    files: list[Path], channels: int, size: int, batch_size: int, desc: str = "decoding", progress: bool = True
) -> Iterator[tuple[list[Path], torch.Tensor, list[Path]]]:
    """Decode ``files`` ``batch_size`` at a time (never all at once): yields (the files decoded, their
    uint8 images [n, channels, size, size], the files of this batch that could not be decoded)."""
    from tqdm import tqdm

    with tqdm(total=len(files), desc=desc, unit="img", disable=not progress) as bar:
        for i in range(0, len(files), batch_size):
            chunk = files[i : i + batch_size]
            decoded = decode_all(chunk, size)
            good = [(f, a) for f, a in zip(chunk, decoded) if a is not None]
            images = (
                match_channels(stack_images([a for _, a in good]), channels)
                if good
                else torch.zeros(0, channels, size, size, dtype=torch.uint8)
            )
            yield [f for f, _ in good], images, [f for f, a in zip(chunk, decoded) if a is None]
            bar.update(len(chunk))


def class_counts(ds: ImageDataset) -> np.ndarray:
    """Images per class, [num_classes]."""
    if ds.labels is None or ds.classes is None:
        raise DatasetError(f"{ds.name} has no labels to count")
    return np.bincount(ds.labels.numpy(), minlength=len(ds.classes))
