"""Collapse diagnostics of embeddings."""
from __future__ import annotations

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
