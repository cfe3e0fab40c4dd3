"""Manifold-capacity losses (MMCR, Yerxa et al. 2023): pure functions.

Each image's k augmented views form a small "object manifold"; the loss acts on the nuclear norm (sum of
singular values) of the matrix of the manifolds' centroids. Singular values are computed in float32 with
autocast off (torch.linalg.svdvals has no bf16 kernel, and half precision would blur the small ones).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup import dist


def nuclear_norm(m: torch.Tensor) -> torch.Tensor:
    """||M||_* = the sum of the singular values of each matrix in ``m`` ([..., R, C] -> [...])."""
    return torch.linalg.svdvals(m).sum(-1)


def mmcr_loss(
    z: torch.Tensor, z_momentum: torch.Tensor | None = None, lambd: float = 0.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """MMCR (Yerxa, Kuang, Simoncelli, Chung 2023, eq. 4-5): L = -||C||_* + lambda/B sum_b ||Z_b||_*.

    z: [B, k, D], the k views of each of B images (any scale: each row is L2-normalised here).
    Z_b = the [k, D] matrix of image b's unit embeddings; its centroid c_b = (1/k) sum_i z_bi is row b of
    C [B, D]. Maximising ||C||_* spreads the centroids over many orthogonal directions (large, distinct
    centroids also means tight manifolds: a centroid of unit vectors is long only when the views agree).
    The official default is lambda = 0 (no explicit per-manifold term).

    z_momentum (optional, [B, k, D]): a momentum encoder's embeddings of the same views, a constant; as in
    the official MMCR_Momentum_Loss the centroid is then the mean of the online and momentum centroids,
    c_b = (mean_i z_bi + mean_i zm_bi) / 2, and the local term stays the online one.

    Distributed: the images of all processes are gathered (the online ones with gradient), so C is the
    global batch's, as in one big batch. Returns (loss, {"global_nuc": ||C||_*, "local_nuc": the mean
    ||Z_b||_*}), the terms detached (local_nuc is 0 when lambda is 0 and it is not computed).
    """
    with torch.autocast(device_type=z.device.type, enabled=False):
        z = dist.gather_with_grad(F.normalize(z.float(), dim=-1))  # [B, k, D] unit rows
        c = z.mean(1)  # [B, D] centroids
        if z_momentum is not None:
            zm = dist.gather(F.normalize(z_momentum.detach().float(), dim=-1))  # [B, k, D]
            c = (c + zm.mean(1)) / 2
        global_nuc = nuclear_norm(c)
        local_nuc = nuclear_norm(z).mean() if lambd != 0 else torch.zeros((), device=z.device)
        loss = -global_nuc + lambd * local_nuc
        return loss, {"global_nuc": global_nuc.detach(), "local_nuc": local_nuc.detach()}
