"""Label makers of the 2015-2018 pretext tasks: the image itself supplies the label.

Batched tensor ops, like selfsup.transforms.ops: every image of a batch draws its own label and
its own jitter from an explicit generator, in one pass, so a seeded run sees the same tasks.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from selfsup.errors import SelfsupError


def rotations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RotNet (Gidaris et al. 2018): all four rotations of every image, in one batch.

    [N,C,H,W] (square) -> ([4N,C,H,W], labels [4N]); rows k*N..(k+1)*N-1 are the images rotated by
    k * 90 degrees counter-clockwise, label k. The paper found feeding all four rotations of an image
    together better than one random rotation per image (sec. 3.2)."""
    if x.shape[-1] != x.shape[-2]:
        raise SelfsupError(f"rotation needs square images, got {tuple(x.shape[-2:])}: set views.size")
    out = torch.cat([torch.rot90(x, k, dims=(-2, -1)) for k in range(4)])
    labels = torch.arange(4, device=x.device).repeat_interleave(x.shape[0])
    return out, labels


# the 8 neighbours of the centre cell of a 3x3 grid, in reading order: label i <-> NEIGHBOURS[i]
NEIGHBOURS = [(r, c) for r in range(3) for c in range(3) if (r, c) != (1, 1)]


def _grid_patches(
    x: torch.Tensor, cells: torch.Tensor, patch: int, gap: int, jitter: int, gen: torch.Generator | None
) -> torch.Tensor:
    """Cut one patch per image: cell (row, col) of a 3x3 grid of ``patch`` px patches ``gap`` px apart,
    each moved by up to ``jitter`` px in x and y; the grid's origin is random per image within the
    room left. x [N,C,H,W], cells [N, K, 2] -> [N, K, C, patch, patch]."""
    n, _, h, w = x.shape
    span = 3 * patch + 2 * gap + 2 * jitter
    if span > min(h, w):
        raise SelfsupError(
            f"a 3x3 grid of {patch}-px patches with gap {gap} and jitter {jitter} needs {span} px; "
            f"the images are {h}x{w}: lower the patch size or set the method's resize"
        )
    k = cells.shape[1]
    oy = torch.randint(0, h - span + 1, (n, 1), generator=gen)
    ox = torch.randint(0, w - span + 1, (n, 1), generator=gen)
    jy = torch.randint(0, 2 * jitter + 1, (n, k), generator=gen)
    jx = torch.randint(0, 2 * jitter + 1, (n, k), generator=gen)
    top = oy + cells[..., 0].cpu() * (patch + gap) + jy  # [N, K]
    left = ox + cells[..., 1].cpu() * (patch + gap) + jx
    ar = torch.arange(patch)
    rows = (top[..., None] + ar).to(x.device)  # [N, K, p]
    cols = (left[..., None] + ar).to(x.device)
    idx_n = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    # advanced indexing: [N, K, p, p, C] -> [N, K, C, p, p]
    return x.permute(0, 2, 3, 1)[idx_n, rows[..., :, None], cols[..., None, :]].permute(0, 1, 4, 2, 3)


def relative_position_pairs(
    x: torch.Tensor, patch: int, gap: int, jitter: int, gen: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Doersch et al. 2015: the centre patch of a 3x3 grid and one random neighbour; the label says which.

    The gap between patches and the per-patch jitter keep the task from being solved by matching
    edges or continuing lines across the border (sec. 3). [N,C,H,W] -> (centre [N,C,p,p],
    neighbour [N,C,p,p], label [N] in 0..7 indexing NEIGHBOURS)."""
    n = x.shape[0]
    label = torch.randint(0, 8, (n,), generator=gen)
    where = torch.tensor(NEIGHBOURS)[label]  # [N, 2]
    cells = torch.stack([torch.ones_like(where), where], dim=1)  # [N, 2 (centre, neighbour), 2]
    p = _grid_patches(x, cells, patch, gap, jitter, gen)
    return p[:, 0], p[:, 1], label.to(x.device)


def maximal_hamming_permutations(count: int, tiles: int = 9, seed: int = 0, criterion: str = "sum") -> torch.Tensor:
    """A permutation set far apart in Hamming distance (Noroozi & Favaro 2016, sec. 3.2): start from a
    random permutation, then repeatedly add the unchosen permutation farthest from the set, ties broken
    at random. ``criterion="sum"`` is the paper's algorithm 1 ("maximal" set): the largest summed
    (mean) distance to the chosen ones; ``"min"`` the largest minimum distance (a maximin variant, not
    the paper's, which guarantees a larger smallest gap). Far-apart permutations make the classes
    distinguishable and the task hard enough to need the whole object. Returns int64 [count, tiles]."""
    import math

    if not 1 <= count <= math.factorial(tiles):
        raise SelfsupError(f"permutation count must be in 1..{tiles}! = {math.factorial(tiles)}, got {count}")
    if criterion not in ("sum", "min"):
        raise SelfsupError(f"permutation criterion {criterion!r}: choose sum (the paper's) or min")
    gen = torch.Generator().manual_seed(seed)
    every = torch.tensor(list(itertools.permutations(range(tiles))), dtype=torch.uint8)  # [9!, 9]
    chosen = [int(torch.randint(len(every), (1,), generator=gen))]
    dist = (every != every[chosen[0]]).sum(1).long()  # [9!] summed (or minimum) distance to the chosen set
    taken = torch.zeros(len(every), dtype=torch.bool)
    taken[chosen[0]] = True
    for _ in range(count - 1):
        score = dist.masked_fill(taken, -1)
        best = (score == score.max()).nonzero().flatten()
        pick = int(best[torch.randint(len(best), (1,), generator=gen)])
        chosen.append(pick)
        taken[pick] = True
        d = (every != every[pick]).sum(1).long()
        dist = dist + d if criterion == "sum" else torch.minimum(dist, d)
    return every[chosen].long()


def min_hamming_distance(perms: torch.Tensor) -> int:
    """Smallest Hamming distance between two distinct rows of [P, T]."""
    d = (perms[:, None, :] != perms[None, :, :]).sum(-1)
    d.fill_diagonal_(perms.shape[1] + 1)
    return int(d.min())


def jigsaw_tiles(
    x: torch.Tensor, perms: torch.Tensor, tile: int, gen: torch.Generator | None = None, normalise: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noroozi & Favaro 2016: cut a 3x3 grid of cells, take a random ``tile`` px crop inside each
    (the jitter that leaves gaps between tiles), shuffle the tiles by a permutation drawn from
    ``perms``, and standardise each tile on its own (so mean brightness or contrast cannot give the
    position away). x [N,C,H,W] -> (tiles [N, 9, C, tile, tile] in shuffled order, label [N] indexing
    perms). Slot s of the output holds original tile perms[label][s]."""
    n, _, h, w = x.shape
    cell = min(h, w) // 3
    if tile > cell:
        raise SelfsupError(f"tiles of {tile} px do not fit cells of {cell} px ({h}x{w} images / 3)")
    cells = torch.tensor([(r, c) for r in range(3) for c in range(3)]).expand(n, 9, 2)
    # cells ``cell`` px apart; inside its cell each tile sits at a random offset of 0..cell-tile px
    tiles = _grid_patches(x, cells, tile, cell - tile, (cell - tile) // 2, gen)
    label = torch.randint(0, len(perms), (n,), generator=gen)
    order = perms[label].to(x.device)  # [N, 9]
    tiles = tiles[torch.arange(n, device=x.device)[:, None], order]
    if normalise:
        mean = tiles.mean(dim=(2, 3, 4), keepdim=True)
        # a floor on the std: a blank tile (background) stays blank instead of amplified rounding noise
        std = tiles.std(dim=(2, 3, 4), keepdim=True).clamp_min(0.05)
        tiles = (tiles - mean) / std
    return tiles, label.to(x.device)


def block_masks(
    n: int, side: int, kind: str, hole: float, blocks: int = 1, gen: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """Masks [N, 1, side, side], 1 inside the region to inpaint. ``center``: the central square of
    ``hole * side`` px; ``random``: ``blocks`` squares of that side at random places."""
    k = max(1, round(hole * side))
    m = torch.zeros(n, 1, side, side, device=device)
    if kind == "center":
        a = (side - k) // 2
        m[:, :, a : a + k, a : a + k] = 1
        return m
    if kind != "random":
        raise SelfsupError(f"mask {kind!r}: choose center or random")
    r = torch.arange(side, device=device)
    for _ in range(blocks):
        top = torch.randint(0, side - k + 1, (n, 1, 1), generator=gen).to(device)
        left = torch.randint(0, side - k + 1, (n, 1, 1), generator=gen).to(device)
        inside = (
            (r.view(1, side, 1) >= top)
            & (r.view(1, side, 1) < top + k)
            & (r.view(1, 1, side) >= left)
            & (r.view(1, 1, side) < left + k)
        )  # [N, side, side]
        m = torch.maximum(m, inside.unsqueeze(1).float())
    return m


def resize(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """Bilinear resize of [N,C,H,W] to size x size (None: unchanged). Small images are enlarged so
    that a 3x3 grid of patches still leaves each patch enough pixels for the encoder."""
    if size is None or (x.shape[-1] == size and x.shape[-2] == size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < x.shape[-1])
