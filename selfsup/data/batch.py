"""What the loop hands a method each step."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Batch:
    images: torch.Tensor  # uint8 [B, C, H, W], raw
    index: torch.Tensor  # int64 [B], positions in the training set (memory banks, DeepCluster)
    labels: torch.Tensor | None = None  # int64 [B]; only supervised reference methods may read them
    views: list[torch.Tensor] = field(default_factory=list)  # augmented float views, filled by the loop
    texts: torch.Tensor | None = None  # int64 [B, L] caption tokens (selfsup.data.text), for image-text methods
    # per view, the crop geometry theta [B, 2, 3] (selfsup.transforms.ops.random_resized_crop); filled by the
    # loop only for methods that declare needs.boxes (VICRegL's location matching)
    boxes: list[torch.Tensor] | None = None

    def to(self, device) -> "Batch":
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(
            move(self.images),
            move(self.index),
            move(self.labels),
            [move(v) for v in self.views],
            move(self.texts),
            None if self.boxes is None else [move(b) for b in self.boxes],
        )
