"""Multi-block masking (I-JEPA, Assran et al. 2023, sec. 3 and the official ``src/masks/multiblock.py``).

Per batch, M target blocks and one context block of patches on a ``grid`` x ``grid`` token grid:

- the *sizes* are drawn once per batch (every image's targets have the same h x w, so they batch
  without padding): a target covers a fraction s ~ U(target_scale) of the patches with aspect ratio
  h / w ~ U(target_aspect); the context block is square with s ~ U(context_scale);
- the *positions* are drawn per image and per block, uniformly over the placements inside the grid;
- the context is its block minus every target patch (no overlap: the context must not see what is to
  be predicted), with at least ``min_context`` patches; all contexts of a batch are cut to the
  smallest one's count, so that they batch as well.

What differs from the official collator, and why (small grids: 4 x 4 for 8-px digits with 2-px patches,
7 x 7 for 28-px Fashion-MNIST with 4-px patches, against the paper's 14 x 14 or 16 x 16):

- block sides h = round(sqrt(s P a)), w = round(sqrt(s P / a)) from the area s P itself; the official
  code floors s P to an integer first, which on a 16-patch grid turns 2.4-3.2 patches into 2 or 3 and
  halves the range. Sides are clamped to [1, grid] (the official: to grid - 1).
- positions run over every placement, top in [0, grid - h] (the official ``randint(0, grid - h)``
  excludes the last one, so no block ever touches the last row or column: on a 4 x 4 grid a quarter of
  the image could never be a target, and the context block is pinned to the top-left corner).
- scale and aspect ratio are drawn independently, as the paper describes (the official code reuses
  one uniform draw for both, so larger blocks are also taller).
- a context that keeps fewer than ``min_context`` patches is redrawn together with its targets; the
  official redraws the context position only and, after 20 failures, lets the context overlap a
  target. On a small grid the context is nearly the whole image, so moving it cannot help, and an
  overlap would show the encoder part of what it must predict.
- a context cut to the batch's smallest count keeps a random subset of its patches; the official
  keeps the first ones in raster order, which on a 4 x 4 grid would drop the bottom rows every time.
"""

from __future__ import annotations

import math

import torch

from selfsup.errors import SelfsupError


def block_size(
    grid: int, scale: tuple[float, float], aspect: tuple[float, float], generator: torch.Generator | None = None
) -> tuple[int, int]:
    """(h, w) of a block covering about s * grid^2 patches with h / w about a: s ~ U(scale), a ~ U(aspect)."""
    u = torch.rand(2, generator=generator).tolist()
    s = scale[0] + u[0] * (scale[1] - scale[0])
    a = aspect[0] + u[1] * (aspect[1] - aspect[0])
    area = s * grid * grid  # patches the block should cover
    h = min(grid, max(1, round(math.sqrt(area * a))))
    w = min(grid, max(1, round(math.sqrt(area / a))))
    return h, w


def random_blocks(
    n: int, count: int, grid: int, h: int, w: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """[n, count, grid*grid] bool: ``count`` h x w blocks per image, each at a uniformly random placement."""
    top = torch.randint(0, grid - h + 1, (n, count, 1), generator=generator)
    left = torch.randint(0, grid - w + 1, (n, count, 1), generator=generator)
    r = torch.arange(grid)
    rows = (r >= top) & (r < top + h)  # [n, count, grid]
    cols = (r >= left) & (r < left + w)
    return (rows[..., :, None] & cols[..., None, :]).flatten(-2)


def multiblock_masks(
    n: int,
    grid: int,
    num_targets: int = 4,
    target_scale=(0.15, 0.2),
    target_aspect=(0.75, 1.5),
    context_scale=(0.85, 1.0),
    min_context: int = 1,
    generator: torch.Generator | None = None,
    tries: int = 100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """I-JEPA's masks for a batch of ``n`` images (see the module docstring).

    Returns (context [n, K_c], targets [M, n, K_t]): int64 patch indices in raster order (row * grid + col),
    each row sorted; K_t = h * w of this batch's target size, K_c the batch's smallest context count
    (>= ``min_context``). No context index is in any of its image's target blocks."""
    p = grid * grid
    th, tw = block_size(grid, target_scale, target_aspect, generator)
    ch, cw = block_size(grid, context_scale, (1.0, 1.0), generator)
    targets = random_blocks(n, num_targets, grid, th, tw, generator)  # [n, M, P]
    context = random_blocks(n, 1, grid, ch, cw, generator)[:, 0] & ~targets.any(1)  # [n, P]
    for attempt in range(tries + 1):
        bad = context.sum(1) < min_context
        if not bad.any():
            break
        if attempt == tries:
            raise SelfsupError(
                f"multi-block masking: after {tries} draws some contexts still keep fewer than "
                f"{min_context} of {p} patches once {num_targets} targets of {th}x{tw} are removed; "
                f"lower method.min_context, method.num_targets or method.target_scale"
            )
        k = int(bad.sum())
        targets[bad] = random_blocks(k, num_targets, grid, th, tw, generator)
        context[bad] = random_blocks(k, 1, grid, ch, cw, generator)[:, 0] & ~targets[bad].any(1)
    keep = int(context.sum(1).min())
    # a random subset of `keep` context patches per image: context patches score in [1, 2), others in [0, 1)
    score = torch.rand(n, p, generator=generator) + context.float()
    ctx = score.topk(keep, dim=1).indices.sort(1).values  # [n, K_c]
    tgt = targets.nonzero()[:, 2].view(n, num_targets, th * tw).transpose(0, 1).contiguous()  # [M, n, K_t]
    return ctx, tgt
