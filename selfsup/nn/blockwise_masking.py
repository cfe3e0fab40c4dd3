"""BEiT's block-wise masking (Bao et al. 2022, sec. 2.5; ``beit/masking_generator.py``), which MaskFeat
(images, 40 %) and data2vec (vision, 60 %) use: rectangles of patches with a random area and aspect
ratio are masked one after another until the wanted number of patches is reached.

Each rectangle: area uniform in [min_block, min(remaining, max_block)], aspect ratio log-uniform in
[min_aspect, 1 / min_aspect], sides rounded, strictly smaller than the grid on both axes, placed
uniformly; it is kept only if it adds between 1 and ``remaining`` new patches; 10 tries per
rectangle, and the mask stops short (as the official generator does) when all 10 fail — on a grid of
a few patches that can happen before the first rectangle, and then one random patch is masked.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch


def _one_mask(
    rng: random.Random, grid: int, num_masked: int, min_block: int, max_block: int, log_aspect: tuple[float, float]
) -> np.ndarray:
    mask = np.zeros((grid, grid), dtype=bool)
    count = 0
    while count < num_masked:
        budget = min(num_masked - count, max_block)
        added = 0
        for _ in range(10):
            area = rng.uniform(min_block, budget)
            aspect = math.exp(rng.uniform(*log_aspect))
            h, w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if h < grid and w < grid:
                top, left = rng.randint(0, grid - h), rng.randint(0, grid - w)
                new = h * w - int(mask[top : top + h, left : left + w].sum())
                if 0 < new <= budget:
                    mask[top : top + h, left : left + w] = True
                    added = new
                    break
        if added == 0:
            break
        count += added
    if count == 0:  # only on tiny grids (every try too large): one patch, so that the image has a target
        mask.flat[rng.randrange(grid * grid)] = True
    return mask


def blockwise_mask(
    n: int,
    grid: int,
    num_masked: int,
    min_block: int = 4,
    max_block: int | None = None,
    min_aspect: float = 0.3,
    device=None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """[N, grid*grid] bool, True = masked: per image, at most ``num_masked`` patches (clipped to
    [1, grid^2 - 1]) in rectangles of at least ``min_block`` and at most ``max_block`` patches
    (None: ``num_masked``). Random numbers come from ``generator`` (or torch's global one), so a
    seeded run draws the same masks."""
    p = grid * grid
    num_masked = min(max(1, num_masked), p - 1)
    min_block = max(1, min(min_block, num_masked))
    max_block = num_masked if max_block is None else max(min_block, max_block)
    log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))
    rng = random.Random(int(torch.randint(0, 2**62, (1,), generator=generator)))
    masks = np.stack([_one_mask(rng, grid, num_masked, min_block, max_block, log_aspect) for _ in range(n)])
    return torch.from_numpy(masks.reshape(n, p)).to(device)
