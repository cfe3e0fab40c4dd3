"""Pretext label makers: rotation labels, relative-position geometry, the jigsaw permutation set and
tiles, checked on images whose pixel values encode their own coordinates."""

from __future__ import annotations

import torch

from selfsup.transforms.pretext import (
    NEIGHBOURS,
    jigsaw_tiles,
    maximal_hamming_permutations,
    min_hamming_distance,
    relative_position_pairs,
    rotations,
)


def coordinate_images(n: int, side: int) -> torch.Tensor:
    """[n, 2, side, side]: channel 0 holds each pixel's row, channel 1 its column."""
    r = torch.arange(side, dtype=torch.float32).view(side, 1).expand(side, side)
    c = torch.arange(side, dtype=torch.float32).view(1, side).expand(side, side)
    return torch.stack([r, c]).expand(n, 2, side, side).clone()


def test_rotation_labels_match_the_rotation():
    x = torch.randn(5, 1, 6, 6)
    xr, y = rotations(x)
    assert xr.shape == (20, 1, 6, 6) and y.tolist() == [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5
    for i in range(20):  # undoing the labelled rotation gives the original image back
        assert torch.equal(torch.rot90(xr[i], -int(y[i]), dims=(-2, -1)), x[i % 5])
    assert torch.equal(xr[5, 0, 0, :], x[0, 0, :, -1])  # 90 degrees counter-clockwise: the right column goes on top


def test_relative_position_geometry():
    patch, gap, jitter = 5, 2, 1
    x = coordinate_images(400, 3 * patch + 2 * gap + 2 * jitter + 3)
    centre, other, y = relative_position_pairs(x, patch, gap, jitter, torch.Generator().manual_seed(0))
    assert centre.shape == other.shape == (400, 2, patch, patch)
    assert set(y.tolist()) == set(range(8))  # every neighbour is drawn
    for i in range(400):
        (r0, c0), (r1, c1) = centre[i, :, 0, 0].tolist(), other[i, :, 0, 0].tolist()
        dr, dc = NEIGHBOURS[int(y[i])][0] - 1, NEIGHBOURS[int(y[i])][1] - 1
        # the neighbour sits one grid step (patch + gap) away in the labelled direction, up to the jitter
        assert abs((r1 - r0) - dr * (patch + gap)) <= 2 * jitter
        assert abs((c1 - c0) - dc * (patch + gap)) <= 2 * jitter
        # patches are contiguous crops, and never touch: the gap survives the jitter
        assert other[i, 0, -1, 0] - other[i, 0, 0, 0] == patch - 1
        if dr != 0:
            assert abs(r1 - r0) >= patch + gap - 2 * jitter > patch - 1


def test_the_papers_algorithm_adds_the_permutation_of_largest_summed_distance():
    """Noroozi & Favaro's algorithm 1: each new permutation maximises the summed Hamming distance to
    those already chosen (checked by brute force at every step on 4 tiles)."""
    perms = maximal_hamming_permutations(12, 4, seed=3)  # criterion="sum", the default
    every = torch.tensor(list(__import__("itertools").permutations(range(4))))
    for k in range(1, len(perms)):
        chosen = perms[:k]
        unchosen = [p for p in every if not any(torch.equal(p, c) for c in chosen)]
        sums = [int((chosen != p).sum()) for p in unchosen]
        assert int((chosen != perms[k]).sum()) == max(sums)
    big = maximal_hamming_permutations(100, 9, seed=0)
    g = torch.Generator().manual_seed(0)
    rand = torch.stack([torch.randperm(9, generator=g) for _ in range(100)])

    def mean_distance(p):
        return (p[:, None] != p[None]).sum(-1).float().sum().item() / (len(p) * (len(p) - 1))

    assert mean_distance(big) > mean_distance(rand)


def test_permutation_set_has_maximal_hamming_distance():
    perms = maximal_hamming_permutations(100, 9, seed=0, criterion="min")
    assert perms.shape == (100, 9)
    assert all(sorted(p.tolist()) == list(range(9)) for p in perms)  # permutations of the 9 tiles
    assert len({tuple(p.tolist()) for p in perms}) == 100
    d = min_hamming_distance(perms)
    # the maximin set keeps every pair >= 6 of 9 positions apart (the minimum normalised distance 0.67 of
    # Noroozi & Favaro's table 1 for 100 permutations); 100 random permutations always hold a closer pair
    g = torch.Generator().manual_seed(0)
    random_sets = [torch.stack([torch.randperm(9, generator=g) for _ in range(100)]) for _ in range(5)]
    assert d >= 6 and all(min_hamming_distance(r) < d for r in random_sets)
    assert torch.equal(perms, maximal_hamming_permutations(100, 9, seed=0, criterion="min"))  # same seed, same set
    assert min_hamming_distance(maximal_hamming_permutations(9, 9, seed=1, criterion="min")) == 9  # a Latin square


def test_jigsaw_tiles_follow_the_permutation():
    perms = maximal_hamming_permutations(10, 9)
    x = coordinate_images(50, 30)  # cells of 10 px
    tiles, y = jigsaw_tiles(x, perms, 8, torch.Generator().manual_seed(0), normalise=False)
    assert tiles.shape == (50, 9, 2, 8, 8)
    for i in range(50):
        for slot in range(9):
            orig = int(perms[y[i]][slot])  # slot holds this original tile
            r, c = tiles[i, slot, :, 0, 0].tolist()
            assert int(r) // 10 == orig // 3 and int(c) // 10 == orig % 3
            assert (r % 10) <= 2 and (c % 10) <= 2  # a random 8-px crop inside its 10-px cell
    normed, _ = jigsaw_tiles(torch.rand(4, 1, 30, 30) * 5 + 3, perms, 8, torch.Generator().manual_seed(0))
    flat = normed.flatten(2)
    assert torch.allclose(flat.mean(-1), torch.zeros(4, 9), atol=1e-5)
    assert torch.allclose(flat.std(-1), torch.ones(4, 9), atol=1e-4)  # each tile standardised on its own
