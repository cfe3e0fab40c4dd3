"""Mutual-information estimators (pure functions): CPC's InfoNCE over predicted positions, and
Deep InfoMax's local–global JSD and InfoNCE estimators.

Every candidate set here comes from the batch itself (other positions, other images); in a
distributed run the batch is gathered with gradient so it behaves as one big batch. The losses
run in float32 even inside a bf16 autocast region (selfsup.losses.precision).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup import dist
from selfsup.errors import SelfsupError
from selfsup.losses.precision import float32_loss


@float32_loss
def cpc_info_nce(pred: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, int]:
    """CPC's InfoNCE (van den Oord et al. 2018, eq. 4) on a grid of encodings, predicting downwards.

    pred: [B, H, W, K, D] — pred[b, i, j, k-1] = W_k c_{i,j}, the prediction of z_{i+k, j} made
    from the context at (i, j), for k = 1..K (K < H). z: [B, H, W, D] — the encodings, which
    are both the positives and the negatives. For a 1-D sequence H is time and W = 1.

    The score is log-bilinear, f_k = exp(z^T W_k c). For each k and each source (i, j) with
    i + k < H, the positive is z_{i+k,j} of the same image and the candidates are every z in
    the batch — all positions of all images (Hénaff et al. 2019, appendix pseudocode), i.e.
    B*H*W candidates, B*H*W - 1 negatives. The loss is the mean over the predictions of each k,
    then over k (so its scale, and the bound log N - L, do not depend on K).
    Returns (loss, candidates per prediction).
    """
    b, h, w, k_max, d = pred.shape
    if k_max >= h:
        raise SelfsupError(f"CPC predicts k = 1..{k_max} rows/steps ahead but the grid has only {h}; lower steps")
    z_all = dist.gather_with_grad(z.reshape(b * h * w, d)).float()  # [B'*H*W, D] every candidate
    index = torch.arange(b * h * w, device=z.device).view(b, h, w) + dist.rank() * b * h * w  # position -> row of z_all
    losses = []
    for k in range(1, k_max + 1):
        p = pred[:, : h - k, :, k - 1].reshape(-1, d).float()  # [B*(H-k)*W, D] sources with a target k rows down
        target = index[:, k:, :].reshape(-1)  # the z_{i+k, j} each source predicts
        losses.append(F.cross_entropy(p @ z_all.T, target))  # logits [B*(H-k)*W, B'*H*W]
    return torch.stack(losses).mean(), z_all.shape[0]


def _local_global_scores(local: torch.Tensor, global_: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores T(l, g) = l . g of every global against every local of every (gathered) image.

    local: [B, P, D] embedded local features (P positions); global_: [B, D].
    Returns scores [B, B', P] (global b, image c, position p) and the mask [B, B'] of pairs
    b == c, the positives (same image).
    """
    b = local.shape[0]
    l_all = dist.gather_with_grad(local).float()  # [B', P, D]
    t = torch.einsum("bd,cpd->bcp", global_.float(), l_all)
    pos = torch.zeros(b, l_all.shape[0], dtype=torch.bool, device=local.device)
    pos[torch.arange(b, device=local.device), torch.arange(b, device=local.device) + dist.rank() * b] = True
    return t, pos


@float32_loss
def dim_jsd(local: torch.Tensor, global_: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Deep InfoMax's Jensen-Shannon MI estimator between a global vector and local features
    (Hjelm et al. 2019, eq. 4, averaged over local positions as in DIM(L), eq. 6):

        I_JSD = E_P[-softplus(-T(l, g))] - E_N[softplus(T(l', g))]

    P: pairs of an image's global with each of its own locals (B*P pairs); N: its global with
    every local of every other image in the batch (B*(B'-1)*P pairs). local: [B, P, D];
    global_: [B, D]. Returns (loss = -I_JSD, the estimate I_JSD detached).
    """
    t, pos = _local_global_scores(local, global_)
    e_pos = (-F.softplus(-t[pos])).mean()  # t[pos]: [B, P]
    e_neg = F.softplus(t[~pos]).mean()  # t[~pos]: [B*(B'-1), P]
    mi = e_pos - e_neg
    return -mi, mi.detach()


@float32_loss
def dim_infonce(local: torch.Tensor, global_: torch.Tensor, negatives: str = "locals") -> tuple[torch.Tensor, int]:
    """Deep InfoMax's InfoNCE estimator (Hjelm et al. 2019, eq. 5), one term per local position.

    local: [B, P, D]; global_: [B, D]. Each (image b, position i) has the positive T(l_{b,i}, g_b).
    ``negatives="locals"`` (the paper's eq. 5 and its official code): the candidates keep the
    global g_b and swap the local for every local l_{c,j} of every other image c (all
    positions), so 1 + (B'-1)*P candidates. ``negatives="globals"``: keep the local l_{b,i} and
    swap the global for every other image's g_c — B' candidates, a softmax over images.
    Returns (mean loss over B*P terms, candidates per term).
    """
    b, p, _ = local.shape
    if negatives == "locals":
        t, pos = _local_global_scores(local, global_)  # [B, B', P]
        t_pos = t[pos]  # [B, P]
        # the negatives of (b, i) do not depend on i: one logsumexp per image, then
        # -log softmax = log(exp(t_pos) + sum exp(t_neg)) - t_pos
        lse_neg = t.masked_fill(pos[:, :, None], float("-inf")).flatten(1).logsumexp(1)  # [B]
        loss = (torch.logaddexp(t_pos, lse_neg[:, None]) - t_pos).mean()
        return loss, 1 + (t.shape[1] - 1) * p
    if negatives == "globals":
        g_all = dist.gather_with_grad(global_).float()  # [B', D]
        logits = torch.einsum("bpd,cd->bpc", local.float(), g_all)  # [B, P, B']
        target = (torch.arange(b, device=local.device) + dist.rank() * b).repeat_interleave(p)
        return F.cross_entropy(logits.reshape(b * p, -1), target), g_all.shape[0]
    raise SelfsupError(f"negatives must be 'locals' or 'globals', got {negatives!r}")
