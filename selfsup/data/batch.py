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
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=True)

        def maybe(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else move(t)

        return Batch(
            move(self.images),
            move(self.index),
            maybe(self.labels),
            [move(v) for v in self.views],
            maybe(self.texts),
            None if self.boxes is None else [move(b) for b in self.boxes],
        )
