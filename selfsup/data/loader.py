"""Batches from an in-memory uint8 dataset, in a seeded order that a resumed run reproduces.

No DataLoader worker processes: indexing a uint8 tensor already in memory costs microseconds
per batch, and the augmentation runs batched on the training device afterwards, so workers
would only add inter-process copies.
"""

from __future__ import annotations

from typing import Callable, Iterator, Protocol

import torch

from selfsup.data.batch import Batch
from selfsup.errors import SelfsupError


class ImageRows(Protocol):
    """uint8 images [N, C, H, W] read by rows: a tensor in memory, or a folder decoded when indexed
    (selfsup.data.stream.LazyImages)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor: ...


class InMemoryLoader:
    def __init__(
        self,
        images: ImageRows,
        labels: torch.Tensor | None,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        order_fn: Callable[[int, torch.Generator], torch.Tensor | None] | None = None,
        texts: torch.Tensor | None = None,
    ):
        """``order_fn(epoch, generator)`` may replace the epoch's permutation with any N indices
        (a method's ``epoch_order``: DeepCluster's uniform sampling over clusters); None = permute.
        ``texts``: caption tokens [N, L] handed out with their images (CLIP)."""
        if batch_size > len(images) // world_size:
            raise SelfsupError(
                f"batch size {batch_size} exceeds the {len(images)} training images per process; "
                f"use --batch-size {max(1, len(images) // world_size)} or smaller"
            )
        self.images, self.labels = images, labels
        self.batch_size, self.seed = batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.order_fn = order_fn
        self.texts = texts

    def __len__(self) -> int:
        """Optimiser-visible steps per epoch (the last incomplete batch is dropped)."""
        return len(self.images) // (self.batch_size * self.world_size)

    def order(self, epoch: int) -> torch.Tensor:
        """The epoch's permutation depends only on (seed, epoch) (and on what ``order_fn`` reads,
        which must be checkpointed): the same after a resume."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = self.order_fn(epoch, g) if self.order_fn is not None else None
        if perm is None:
            perm = torch.randperm(len(self.images), generator=g)
        elif perm.shape != (len(self.images),):
            raise SelfsupError(
                f"order_fn gave {tuple(perm.shape)} indices for epoch {epoch}; an epoch has "
                f"{len(self.images)} (one per training image, repeats allowed)"
            )
        # each process takes a disjoint strided share, so no image is seen twice per epoch
        return perm[self.rank :: self.world_size]

    def iterate(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        order = self.order(epoch)
        for s in range(start_step, len(self)):
            idx = order[s * self.batch_size : (s + 1) * self.batch_size]
            labels = self.labels[idx] if self.labels is not None else None
            yield Batch(self.images[idx], idx, labels, texts=self.texts[idx] if self.texts is not None else None)
