"""BEiT's block-wise masking (MaskFeat, data2vec): counts, blocks rather than scattered patches, seeding."""

from __future__ import annotations

import torch

from selfsup.nn.blockwise_masking import blockwise_mask


def test_counts_seeding_and_per_image_masks():
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    m = blockwise_mask(64, 14, 78, min_block=15, generator=g())  # MaskFeat on ViT-B/16: 40 % of 196
    assert m.shape == (64, 196) and m.dtype == torch.bool
    counts = m.sum(1)
    assert (counts >= 1).all() and (counts <= 78).all()
    # the official generator stops short when 10 tries all fail (often when the few patches left are
    # fewer than the smallest rectangle), by a few patches
    assert counts.float().mean() > 0.97 * 78 and (counts == 78).float().mean() > 0.5
    assert torch.equal(m, blockwise_mask(64, 14, 78, min_block=15, generator=g()))
    assert len({tuple(row.tolist()) for row in m}) == 64  # a mask per image


def test_masks_are_blocks_not_scattered_patches():
    """Nearly every masked patch lies in a fully masked 2 x 2 square; a uniformly random 40 % mask
    puts only a few percent of its patches in one."""
    m = blockwise_mask(32, 14, 78, min_block=15, generator=torch.Generator().manual_seed(1)).view(32, 14, 14).float()
    squares = m[:, :-1, :-1] * m[:, 1:, :-1] * m[:, :-1, 1:] * m[:, 1:, 1:]  # [32, 13, 13]: square (i, j) all masked
    covered = torch.zeros_like(m)
    for di in (0, 1):
        for dj in (0, 1):
            covered[:, di : di + 13, dj : dj + 13] += squares
    assert ((covered > 0) & (m > 0)).sum() / m.sum() > 0.8


def test_tiny_grids_mask_at_least_one_and_leave_one_visible():
    for grid, num in [(2, 2), (2, 4), (4, 10), (7, 29)]:
        m = blockwise_mask(50, grid, num, min_block=max(1, num // 5), generator=torch.Generator().manual_seed(grid))
        counts = m.sum(1)
        assert (counts >= 1).all() and (counts <= min(num, grid * grid - 1)).all()
