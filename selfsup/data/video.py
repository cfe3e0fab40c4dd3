"""SYNTHETIC videos for video colorization / tracking (Vondrick et al. 2018): coloured shapes moving
over a static textured background, with their true segmentation masks.

Nothing may be downloaded here and no video set ships with Debian, so sequences are generated from
a seed: 1-3 objects (squares, discs, diamonds) of distinct colours, 6-11 px, each moving at a
constant velocity of up to 3 px per frame, drawn in order (later ones occlude earlier ones), over a
dark random texture that does not move. Frame side 32, 4 frames.

The training loop knows square images, not videos: the ``moving-shapes`` dataset stores each
4-frame video as one 2x2 mosaic [3, 2S, 2S] (frames 0 1 / 2 3; ``split_frames`` undoes it),
labelled with its number of objects minus one; ``make_videos`` also returns the masks, which the
evaluation of tracking uses (never training).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from selfsup.data.dataset import DatasetError, ImageDataset
from selfsup.errors import SelfsupError

FRAMES, SIDE = 4, 32
SIZES = {"train": 3000, "test": 500}
SEEDS = {"train": 0, "test": 1}
PALETTE = torch.tensor(
    [
        [230, 60, 50],
        [60, 200, 70],
        [60, 90, 230],
        [240, 210, 50],
        [200, 70, 220],
        [60, 210, 220],
        [250, 140, 40],
        [240, 240, 240],
    ],
    dtype=torch.float32,
)


def make_videos(n: int, seed: int, frames: int = FRAMES, side: int = SIDE) -> tuple[torch.Tensor, torch.Tensor]:
    """(videos uint8 [N, T, 3, S, S], masks int64 [N, T, S, S] with 0 = background, k = object k)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(
        torch.arange(side, dtype=torch.float32), torch.arange(side, dtype=torch.float32), indexing="ij"
    )
    videos = torch.empty(n, frames, 3, side, side)
    masks = torch.zeros(n, frames, side, side, dtype=torch.int64)
    for i in range(n):
        texture = torch.rand(1, side // 4, side // 4, generator=g) * 50 + 10
        bg = torch.nn.functional.interpolate(texture[None], size=(side, side), mode="bilinear", align_corners=False)[0]
        videos[i] = bg.expand(frames, 3, side, side)
        k = int(torch.randint(1, 4, (1,), generator=g))
        colours = PALETTE[torch.randperm(len(PALETTE), generator=g)[:k]]
        for j in range(k):
            size = float(torch.randint(6, 12, (1,), generator=g))
            shape = int(torch.randint(0, 3, (1,), generator=g))
            pos = torch.rand(2, generator=g) * (side - size - 6) + 3 + size / 2
            vel = (torch.rand(2, generator=g) * 2 - 1) * 3
            for t in range(frames):
                cy, cx = (pos + vel * t).tolist()
                dy, dx = yy - cy, xx - cx
                if shape == 0:
                    inside = (dy.abs() <= size / 2) & (dx.abs() <= size / 2)
                elif shape == 1:
                    inside = dy**2 + dx**2 <= (size / 2) ** 2
                else:
                    inside = dy.abs() + dx.abs() <= size / 2
                videos[i, t][:, inside] = colours[j].view(3, 1)
                masks[i, t][inside] = j + 1
    return videos.round().clamp(0, 255).to(torch.uint8), masks


def to_mosaic(videos: torch.Tensor) -> torch.Tensor:
    """[N, 4, C, S, S] -> 2x2 mosaics [N, C, 2S, 2S] (frames 0 1 / 2 3)."""
    n, t, c, s, _ = videos.shape
    if t != 4:
        raise SelfsupError(f"a mosaic holds 4 frames, got {t}")
    return videos.view(n, 2, 2, c, s, s).permute(0, 3, 1, 4, 2, 5).reshape(n, c, 2 * s, 2 * s)


def split_frames(images: torch.Tensor) -> torch.Tensor:
    """2x2 mosaics [N, C, 2S, 2S] -> frames [N, 4, C, S, S] (the inverse of ``to_mosaic``)."""
    n, c, h, w = images.shape
    return images.reshape(n, c, 2, h // 2, 2, w // 2).permute(0, 2, 4, 1, 3, 5).reshape(n, 4, c, h // 2, w // 2)


def load_moving_shapes(split: str, root: Optional[Path], image_size: Optional[int]) -> ImageDataset:
    """SYNTHETIC moving-shapes videos, each stored as a 2x2 mosaic of its 4 frames [3, 64, 64]."""
    if image_size is not None and image_size != 2 * SIDE:
        raise DatasetError(
            f"moving-shapes: a video is a {2 * SIDE}-px mosaic of 4 frames; resizing it would blend "
            "the frames, so leave data.image_size unset"
        )
    videos, masks = make_videos(SIZES[split], SEEDS[split])
    count = masks.flatten(1).amax(1) - 1  # objects in the video, minus one (0..2): the last one drawn is visible
    return ImageDataset(to_mosaic(videos), count, ["1 object", "2 objects", "3 objects"], "moving-shapes")
