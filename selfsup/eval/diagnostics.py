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
