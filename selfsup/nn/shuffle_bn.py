"""Shuffling BatchNorm, in one process and across processes (He et al. 2020, MoCo, sec. 3.3).

Why: with BatchNorm, the samples of a BN batch communicate through its mean and variance. If the
query q_i and its key k_i are normalised with statistics of the same set of images, the network
can "cheat" the pretext task — find the positive by the batch signature it shares — and the
contrastive loss drops without a good representation being learned (the paper's fig. A.1).
MoCo trains on 8 GPUs, each with its own BN statistics, and for the key encoder it shuffles the
sample order across GPUs before the forward pass and restores it after. Then the BN batch that
normalised k_i is a random subset that is not the subset that normalised q_i.

In one process we emulate the GPUs: the batch is split into ``groups`` chunks that are forwarded
separately, so each chunk's BN statistics are its own (``grouped_forward``); for the keys the
batch is permuted first and un-permuted after (``shuffled_forward``). Forwarding chunks is written
by hand (rather than swapping every BN layer for a split-BN module) because it works for any
encoder and any normalisation layer, at the price of ``groups`` smaller forward passes.
"""

from __future__ import annotations

from typing import Callable

import torch

from selfsup import dist

Forward = Callable[[torch.Tensor], torch.Tensor]


def effective_groups(batch: int, groups: int) -> int:
    """``groups`` clamped so that every chunk holds >= 2 samples (BatchNorm needs two to have a variance)."""
    return max(1, min(groups, batch // 2))


def grouped_forward(fn: Forward, x: torch.Tensor, groups: int) -> torch.Tensor:
    """``fn`` applied to ``groups`` contiguous chunks of ``x`` [B, ...] separately, concatenated back.

    In training mode every BatchNorm inside ``fn`` normalises each chunk with that chunk's own mean
    and variance, as ``groups`` GPUs would (running statistics are updated once per chunk, as each
    GPU's copy would be). Chunk sizes follow ``torch.chunk``.
    """
    g = effective_groups(x.shape[0], groups)
    if g == 1:
        return fn(x)
    return torch.cat([fn(c) for c in x.chunk(g)])


def _query_group_ids(n: int, groups: int) -> torch.Tensor:
    """[n] index of the contiguous chunk (as torch.chunk cuts it) each position falls in."""
    sizes = [c.numel() for c in torch.arange(n).chunk(groups)]
    return torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))


def shuffle_permutation(
    n: int, groups: int, generator: torch.Generator | None = None, tries: int = 100
) -> torch.Tensor:
    """A random permutation [n] of the batch such that no key chunk holds exactly the images of a
    query chunk (so no query and key are normalised over the same set of images).

    Drawn on the CPU (the global or the given generator, both saved with the loop's RNG state, so a
    resumed run draws the same shuffles). For batches of hundreds the first draw practically always
    qualifies; the check makes the guarantee hold for tiny batches too.
    """
    g = effective_groups(n, groups)
    perm = torch.randperm(n, generator=generator)
    if g == 1:
        return perm  # one BN batch: nothing to shuffle between (the paper's "no shuffle" ablation)
    qid = _query_group_ids(n, g)
    sizes = torch.bincount(qid)
    for _ in range(tries):
        collision = False
        for chunk in perm.chunk(g):
            ids = qid[chunk]
            if bool((ids == ids[0]).all()) and chunk.numel() == int(sizes[ids[0]]):
                collision = True
                break
        if not collision:
            return perm
        perm = torch.randperm(n, generator=generator)
    return perm


def shuffled_forward(
    fn: Forward,
    x: torch.Tensor,
    groups: int,
    perm: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Shuffle the batch, forward it in ``groups`` BN chunks, restore the order: [B, ...] -> [B, D].

    Output row i belongs to input row i, exactly as ``fn(x)`` would order it; only the BN batches
    differ. ``perm`` (a permutation of range(B)) may be given, else one is drawn.

    In a process group it shuffles across processes as the paper does: x is gathered from every
    process, rank 0 draws one permutation of the global batch and broadcasts it, each process
    forwards its slice of the shuffled batch (in ``groups`` BN chunks), and the outputs are gathered,
    un-shuffled, and this process's rows kept. No gradient flows (the keys need none).
    """
    if dist.world_size() > 1:
        return _shuffled_forward_across_processes(fn, x, groups, generator)
    n = x.shape[0]
    if perm is None:
        perm = shuffle_permutation(n, groups, generator)
    perm = perm.to(x.device)
    inverse = torch.argsort(perm)  # y[inverse] undoes y = f(x[perm]) row-wise
    y = grouped_forward(fn, x[perm], groups)
    return y[inverse]


@torch.no_grad()
def _shuffled_forward_across_processes(
    fn: Forward, x: torch.Tensor, groups: int, generator: torch.Generator | None
) -> torch.Tensor:
    b, w, r = x.shape[0], dist.world_size(), dist.rank()
    x_all = dist.gather(x)  # [W*B, ...] in rank order
    # chunks of the global batch as the processes' BN groups cut it: W * groups of them
    perm = dist.broadcast_object(
        shuffle_permutation(w * b, w * effective_groups(b, groups), generator) if dist.is_main() else None
    ).to(x.device)
    y = grouped_forward(fn, x_all[perm[r * b : (r + 1) * b]], groups)  # this process's shuffled slice
    y_all = dist.gather(y)  # [W*B, D], row j is f(x_all[perm[j]])
    return y_all[torch.argsort(perm)][r * b : (r + 1) * b]  # back to image order; this process's rows
