"""Diagnostics of a representation: collapse (std, effective rank), alignment and uniformity, and the
InfoNCE mutual-information bound."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def embedding_std(z: torch.Tensor) -> float:
    """Mean per-dimension std of L2-normalised embeddings [N, D] (Chen & He 2021, SimSiam fig. 2).
    About 1/sqrt(D) when the embeddings spread over the sphere, 0 when they collapse to a point."""
    return F.normalize(z.float(), dim=1).std(0).mean().item()


def effective_rank(z: torch.Tensor, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al. 2023): exp of the entropy of the normalised singular values of [N, D].
    Between 1 (all variance in one direction: dimensional collapse) and min(N, D)."""
    s = torch.linalg.svdvals(z.float())
    p = s / s.sum().clamp_min(eps) + eps
    return torch.exp(-(p * p.log()).sum()).item()


def alignment(z1: torch.Tensor, z2: torch.Tensor, alpha: float = 2.0) -> float:
    """Wang & Isola 2020, eq. 4: E ||f(x) - f(x+)||^alpha over positive pairs of L2-normalised
    features [N, D]. 0 when the two views of every image map to the same point (lower is better)."""
    a, b = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
    return (a - b).norm(dim=1).pow(alpha).mean().item()


def uniformity(z: torch.Tensor, t: float = 2.0) -> float:
    """Wang & Isola 2020, eq. 5: log E exp(-t ||f(x) - f(y)||^2) over all pairs of distinct rows of
    L2-normalised [N, D]. 0 when every feature is the same point; lower is more uniform on the sphere."""
    x = F.normalize(z.float(), dim=1)
    sq = torch.pdist(x).pow(2)  # the N(N-1)/2 distinct pairs
    return torch.logsumexp(-t * sq, dim=0).sub(torch.log(torch.tensor(float(sq.numel())))).item()


def per_dimension_std(z: torch.Tensor) -> dict:
    """Per-dimension std of L2-normalised [N, D] (mean, min, max; ``ideal`` = 1/sqrt(D), the value on a
    uniformly covered sphere) and the fraction of dead dimensions — raw (unnormalised) std below
    1e-3 of the median dimension's: the coordinates a partial (dimensional) collapse switched off."""
    s = F.normalize(z.float(), dim=1).std(0)
    raw = z.float().std(0)
    d = z.shape[1]
    return {
        "mean": s.mean().item(),
        "min": s.min().item(),
        "max": s.max().item(),
        "dead_fraction": (raw < 1e-3 * raw.median()).float().mean().item(),
        "ideal": d**-0.5,
    }


def infonce_bound_curve(z1: torch.Tensor, z2: torch.Tensor, temperature: float, ns=(2, 8, 32, 128, 512)) -> dict:
    """The InfoNCE lower bound on I(view 1; view 2), log N - L_N (nats), at several candidate counts N
    (Oord et al. 2018, eq. 10; Poole et al. 2019): the rows [M, D] of ``z1`` and ``z2`` are positive pairs;
    they are cut into M // N groups of N, each query of z1 is classified among its group's N keys of z2
    at ``temperature``, and the bound is averaged over groups. It can never exceed log N, so with a
    good encoder it rises with N — the reason contrastive learning wants many negatives.
    Returns {N: bound} for the N <= M."""
    a, b = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
    out = {}
    for n in ns:
        groups = len(a) // n
        if groups == 0:
            continue
        qa, kb = a[: groups * n].view(groups, n, -1), b[: groups * n].view(groups, n, -1)
        logits = qa @ kb.transpose(1, 2) / temperature  # [G, N, N], positives on the diagonal
        loss = F.cross_entropy(logits.flatten(0, 1), torch.arange(n).repeat(groups))
        out[n] = math.log(n) - loss.item()
    return out
