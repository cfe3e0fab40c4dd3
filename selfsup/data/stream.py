"""Image folders streamed from disk: decoded batch by batch in DataLoader worker processes.

Why: an in-memory dataset holds every decoded image (N x C x S x S bytes) for the whole run;
a folder of millions of photos does not fit. ``data.stream=true`` keeps only the file list in
memory and decodes each batch when it is needed, in ``data.workers`` processes that run ahead
of training (torch's DataLoader: its worker pool and prefetching are what we want, and nothing
here re-implements them). Memory stays flat in the dataset size; time per epoch grows linearly
(benchmarks/scaling.py measures both).

The loop sees the same things as with an in-memory set: ``LazyImages`` indexes like a uint8
``[N, C, S, S]`` tensor (decoding on access, for the kNN monitor's few thousand images and for
DeepCluster's feature pass), and ``StreamLoader`` hands out the same batches in the same seeded
order as ``InMemoryLoader`` (so a resumed run continues exactly, and processes split the data
the same way). The same decoder as the in-memory image folder (``decode.decode_image``) keeps both
paths pixel for pixel equal.

A file that cannot be decoded is only found when its batch is read: it is replaced by another image
of its batch (the dataset cannot shrink mid-epoch without shifting every index, and the batch keeps
its size) and counted in a warning.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import torch

from selfsup.data.batch import Batch
from selfsup.data.loader import InMemoryLoader
from selfsup.data.dataset import DatasetError, ImageDataset, counted, match_channels, require_root
from selfsup.data.decode import decode_all, decode_image
from selfsup.data.folder import DEFAULT_IMAGEFOLDER_SIZE, class_folders, class_of, list_image_files, split_folder

CHANNEL_PROBE = 256  # files decoded up front to choose 1 or 3 channels


class LazyImages:
    """``files`` as a read-only uint8 tensor [N, C, S, S] whose rows are decoded when indexed."""

    def __init__(self, files: list[Path], size: int, channels: int):
        self.files, self.size, self.channels = list(files), size, channels
        self.unreadable: set[int] = set()  # rows found unreadable so far (this process)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.files), self.channels, self.size, self.size))

    def decode(self, rows: list[int], threads: bool = True) -> torch.Tensor:
        """uint8 [len(rows), C, S, S]; unreadable files as zeros (counted in ``unreadable``)."""
        files = [self.files[i] for i in rows]
        arrays = (
            decode_all(files, self.size) if threads and len(files) > 8 else [decode_image(f, self.size) for f in files]
        )
        out = torch.zeros((len(rows), self.channels, self.size, self.size), dtype=torch.uint8)
        for k, (i, a) in enumerate(zip(rows, arrays)):
            if a is None:
                self.unreadable.add(i)
                continue
            t = torch.tensor(a)  # a copy: PIL-backed arrays are read-only
            t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)  # [1|3, S, S]
            out[k] = match_channels(t[None], self.channels)[0]  # grey into an RGB set, or RGB into grey
        return out

    def __getitem__(self, idx) -> torch.Tensor:
        if isinstance(idx, int):
            return self.decode([range(len(self))[idx]], threads=False)[0]
        if isinstance(idx, slice):
            return self.decode(list(range(len(self)))[idx])
        rows = torch.as_tensor(idx)
        if rows.dtype == torch.bool:
            rows = rows.nonzero().flatten()
        return self.decode([int(i) for i in rows.reshape(-1)])


@dataclass
class StreamedImageFolder:
    """An image folder that is listed, not decoded: the interface of ``ImageDataset``."""

    images: LazyImages
    labels: Optional[torch.Tensor]
    classes: Optional[list[str]]
    name: str = "imagefolder"
    captions: Optional[list[str]] = None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def channels(self) -> int:
        return self.images.channels

    @property
    def image_size(self) -> int:
        return self.images.size

    labelled_subset = ImageDataset.labelled_subset  # the same seeded, class-balanced rows (semi, fine-tune)

    def subset(self, idx: torch.Tensor) -> "StreamedImageFolder":
        rows = torch.as_tensor(idx)
        rows = rows.nonzero().flatten() if rows.dtype == torch.bool else rows.reshape(-1)
        files = [self.images.files[int(i)] for i in rows]
        labels = None if self.labels is None else self.labels[rows]
        return StreamedImageFolder(
            LazyImages(files, self.images.size, self.images.channels), labels, self.classes, self.name
        )


def load_imagefolder_stream(split: str, root: Optional[Path], image_size: Optional[int]) -> StreamedImageFolder:
    """The image folder ``load_imagefolder`` reads (same layout, classes and labels), listed only.

    Channels: 1 if the first ``CHANNEL_PROBE`` files (in sorted order) are all grey, else 3. A
    folder that mixes grey and colour images later in its order is read as grey; set the
    channel count by making the first files colour, or use the in-memory loader."""
    root = require_root(root, "imagefolder", "DIR (a folder of images, or of <class>/ sub-folders)")
    if not root.is_dir():
        raise DatasetError(f"imagefolder: {root} is not a folder; pass --data-dir DIR")
    folder = split_folder(root, split)
    files = list_image_files(folder)
    if not files:
        raise DatasetError(f"imagefolder: no image files in {folder}; pass --data-dir pointing at a folder of images")
    classes, labels = class_of(files, folder, class_folders(root, folder))
    size = image_size or DEFAULT_IMAGEFOLDER_SIZE
    probe = [a for a in decode_all(files[:CHANNEL_PROBE], size) if a is not None]
    if not probe:
        raise DatasetError(
            f"imagefolder: none of the first {counted(min(len(files), CHANNEL_PROBE), 'file')} in "
            f"{folder} could be decoded; is it a folder of images?"
        )
    channels = 1 if all(a.ndim == 2 for a in probe) else 3
    return StreamedImageFolder(
        LazyImages(files, size, channels), None if labels is None else torch.from_numpy(labels), classes
    )


class _Batches(torch.utils.data.Dataset):
    """Item k: the decoded images of the k-th batch of indices (decoded in a worker process)."""

    def __init__(self, images: LazyImages, batches: list[torch.Tensor]):
        self.images, self.batches = images, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, list[int]]:
        rows = [int(i) for i in self.batches[k]]
        x = self.images.decode(rows, threads=False)  # one core per worker
        # every unreadable row of this batch, also those found before (by the normalisation statistics'
        # sample, or in an earlier epoch): the loader replaces them all
        return x, [i for i in rows if i in self.images.unreadable]


class StreamLoader(InMemoryLoader):
    """``InMemoryLoader``'s batches and order over a ``LazyImages``, decoded ahead of training in
    ``workers`` processes (0: in this process). The order, the split across processes and the
    resume position are the parent's, so both loaders give identical batches."""

    def __init__(
        self,
        images: LazyImages,
        labels: Optional[torch.Tensor],
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        order_fn=None,
        texts=None,
        workers: int = 2,
        prefetch: int = 4,
    ):
        super().__init__(images, labels, batch_size, seed, rank, world_size, order_fn, texts)
        self.lazy = images  # the files behind the rows, for the workers and the messages
        self.workers, self.prefetch = workers, prefetch
        self._warned: set[int] = set()

    def iterate(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        order = self.order(epoch)
        batches = [order[s * self.batch_size : (s + 1) * self.batch_size] for s in range(start_step, len(self))]
        kw: dict[str, Any] = dict(num_workers=self.workers, prefetch_factor=self.prefetch) if self.workers else {}
        loader = torch.utils.data.DataLoader(_Batches(self.lazy, batches), batch_size=None, shuffle=False, **kw)
        for idx, (x, bad) in zip(batches, loader):
            if bad:
                self._note_unreadable(bad)
                x, idx = _replace_rows(x, idx, set(bad))
            labels = self.labels[idx] if self.labels is not None else None
            yield Batch(x, idx, labels, texts=self.texts[idx] if self.texts is not None else None)

    def _note_unreadable(self, rows: list[int]) -> None:
        new = [i for i in rows if i not in self._warned]
        if new:
            self._warned.update(new)
            shown = ", ".join(str(self.lazy.files[i]) for i in new[:3]) + (", ..." if len(new) > 3 else "")
            warnings.warn(
                f"imagefolder (streamed): {len(self._warned)} unreadable file(s) so far, not trained on "
                f"(each replaced by another image of its batch): {shown} (delete or re-export them)",
                stacklevel=3,
            )


def _replace_rows(x: torch.Tensor, idx: torch.Tensor, bad: set[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch with each unreadable row replaced by a readable row of the same batch (image and index,
    so labels, captions and memory-bank slots follow): the batch keeps its size, which processes of a
    distributed run must agree on, and no black image is trained on. A batch with no readable row is
    returned as it is (black images; the warning has said so)."""
    pos = [k for k, i in enumerate(idx.tolist()) if i in bad]
    good = [k for k in range(len(idx)) if k not in set(pos)]
    if not good:
        return x, idx
    src = torch.tensor([good[j % len(good)] for j in range(len(pos))])
    x, idx = x.clone(), idx.clone()
    x[pos], idx[pos] = x[src], idx[src]
    return x, idx


def is_streamed(dataset) -> bool:
    return isinstance(getattr(dataset, "images", None), LazyImages)


def sample_images(dataset, n: int, seed: int = 0) -> torch.Tensor:
    """uint8 [min(n, N), C, S, S]: the first n rows of an in-memory set, a seeded sample of a stream
    (the normalisation statistics; decoding the first 10000 files of a folder would be slow)."""
    if not is_streamed(dataset):
        return dataset.images[:n]
    g = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(dataset), generator=g)[:n].sort().values
    return dataset.images[rows]


__all__ = [
    "LazyImages",
    "StreamLoader",
    "StreamedImageFolder",
    "is_streamed",
    "load_imagefolder_stream",
    "sample_images",
]
