"""InfoNCE-family losses (pure functions; negatives are always passed in, never hidden)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from selfsup import dist
from selfsup.losses.precision import float32_loss


def contrastive_ce(logits: torch.Tensor, target: torch.Tensor, decoupled: bool = False) -> torch.Tensor:
    """Mean cross-entropy of rows of logits [A, C] whose positive sits at column target[a].

    decoupled (DCL; Yeh, Hong, Hsu, Liu, Chen, LeCun, "Decoupled Contrastive Learning", ECCV 2022,
    eq. 6): the positive is left out of the denominator, -s_pos + log sum_{negatives} exp(s). The
    InfoNCE gradient carries a factor (1 - p_pos) that vanishes once the positive is easy, which with
    small batches slows learning; leaving the positive out removes it. -inf logits (masked
    self-similarities) stay excluded either way. Not a bound on mutual information."""
    if not decoupled:
        return F.cross_entropy(logits, target)
    pos = logits.gather(1, target[:, None])[:, 0]  # [A]
    negatives = logits.scatter(1, target[:, None], float("-inf"))  # [A, C], the positive masked
    return (torch.logsumexp(negatives, dim=1) - pos).mean()


@float32_loss
def nt_xent(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float, decoupled: bool = False
) -> tuple[torch.Tensor, int]:
    """SimCLR's normalised-temperature cross-entropy over 2N views (Chen et al. 2020, eq. 1).

    z1, z2: [N, D] projections of two views of the same N images (any scale: normalised here).
    For each of the 2N views, the positive is its partner view and the 2(N-1) other views are
    negatives; the loss is the mean over all 2N anchors. Views from other processes are
    gathered with gradient so a distributed batch behaves as one batch.
    ``decoupled``: DCL's form (``contrastive_ce``), the positive out of each denominator.
    Returns (loss, number of candidates per anchor = 2N' - 1), the latter for the MI bound.
    """
    z = F.normalize(torch.cat([z1, z2]), dim=1).float()  # [2N, D]; float32 for a stable softmax
    n = z1.shape[0]
    z_all = dist.gather_with_grad(z)  # [2N * world, D] (identity in one process)
    logits = z @ z_all.T / temperature  # [2N, 2N*world]
    offset = dist.rank() * 2 * n  # where this process's views sit among the gathered ones
    idx = torch.arange(2 * n, device=z.device)
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[idx, idx + offset] = True
    logits = logits.masked_fill(self_mask, float("-inf"))
    positive = (idx + n) % (2 * n) + offset
    return contrastive_ce(logits, positive, decoupled), z_all.shape[0] - 1


@float32_loss
def info_nce(
    q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor | None, temperature: float, normalize: bool = True
) -> tuple[torch.Tensor, int]:
    """InfoNCE with explicit negatives (MoCo, InstDisc's softmax variant, CMC, NNCLR's queue form).

    q: [N, D] queries; k: [N, D] their positive keys (no gradient is stopped here: a method
    detaches keys from a momentum encoder itself); negatives: [K, D] shared by every query
    (a queue or bank sample), or None for none. For each query the logits are
    [q.k+, q.n_1 .. q.n_K] / tau and the target is index 0 (He et al. 2020, eq. 1).
    Returns (mean loss, candidates per query = K + 1).
    """
    if normalize:
        q, k = F.normalize(q.float(), dim=1), F.normalize(k.float(), dim=1)
    q, k = q.float(), k.float()
    pos = (q * k).sum(1, keepdim=True)  # [N, 1]
    if negatives is None or negatives.numel() == 0:
        logits = pos
    else:
        n = F.normalize(negatives.float(), dim=1) if normalize else negatives.float()
        logits = torch.cat([pos, q @ n.T], dim=1)  # [N, 1 + K]
    logits = logits / temperature
    target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, target), logits.shape[1]


def infonce_bound(loss: torch.Tensor | float, num_candidates: int) -> torch.Tensor | float:
    """The InfoNCE lower bound on mutual information, I(x; x+) >= log N - L (nats).

    A tensor loss gives a 0-d tensor (detached): no .item() here, so logging it every step never
    forces a device synchronisation; the loop reads it only on logging steps."""
    if isinstance(loss, torch.Tensor):
        return math.log(num_candidates) - loss.detach().float()
    return math.log(num_candidates) - float(loss)
