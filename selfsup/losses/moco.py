"""Losses of the momentum-contrast family and NNCLR (pure functions; stores are passed in).

MoCo v1/v2 use ``selfsup.losses.contrastive.info_nce`` with the queue as negatives. What is here:
in-batch contrast of queries against keys (MoCo v3's ``ctr``), and NNCLR's nearest-neighbour
lookup and loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup import dist
from selfsup.errors import SelfsupError
from selfsup.losses.contrastive import contrastive_ce
from selfsup.losses.precision import float32_loss


def two_views(views: list[torch.Tensor], method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The (query, key) view pair of a two-view method, or an error that names the fix."""
    if len(views) != 2:
        raise SelfsupError(
            f"{method} trains on exactly two views, got {len(views)}: set views.num_local=0 and views.num_global=2"
        )
    return views[0], views[1]


@float32_loss
def in_batch_info_nce(q: torch.Tensor, k: torch.Tensor, temperature: float) -> tuple[torch.Tensor, int]:
    """InfoNCE of each query against every key of the (global) batch: positive k_i, negatives k_j, j != i.

    q: [N, D] queries (with gradient); k: [N, D] keys of the same images, in the same order (the
    caller detaches momentum keys). Keys from all processes are gathered (no gradient, as MoCo v3's
    concat_all_gather), so the logits are [N, N*world] and query i's positive sits at
    i + N*rank. Returns (mean cross-entropy, candidates per query = N*world).
    """
    q = F.normalize(q.float(), dim=1)
    k = F.normalize(k.float(), dim=1)
    k_all = dist.gather(k)  # [N*world, D]
    logits = q @ k_all.T / temperature  # [N, N*world]
    labels = torch.arange(q.shape[0], device=q.device) + q.shape[0] * dist.rank()
    return F.cross_entropy(logits, labels), k_all.shape[0]


@float32_loss
def mocov3_loss(
    q1: torch.Tensor, q2: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """MoCo v3 (Chen, Xie, He 2021, Alg. 1): ctr(q1, k2) + ctr(q2, k1), ctr = 2 tau * CE.

    q1, q2: [N, D] predictor outputs of views 1 and 2; k1, k2: [N, D] momentum-encoder keys.
    The 2 tau factor (official code) makes the gradient scale independent of tau.
    Returns (loss, mean unscaled cross-entropy of the two terms for the MI bound, candidates).
    """
    ce12, n = in_batch_info_nce(q1, k2, temperature)
    ce21, _ = in_batch_info_nce(q2, k1, temperature)
    return 2 * temperature * (ce12 + ce21), (ce12 + ce21).detach() / 2, n


@torch.no_grad()
@float32_loss
def nearest_neighbour(z: torch.Tensor, support: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """NNCLR's NN(z, Q) (Dwibedi et al. 2021, eq. 2): the support vector closest to each z in cosine.

    z: [N, D]; support: [M, D] (any scale; both L2-normalised here, where the paper's L2-distance
    argmin and the cosine argmax coincide). Returns (the neighbours [N, D], unit length, no
    gradient; their cosine to z [N]).
    """
    z = F.normalize(z.float(), dim=1)
    s = F.normalize(support.float(), dim=1)
    cos, idx = (z @ s.T).max(dim=1)  # [N]
    return s[idx], cos


@float32_loss
def nnclr_loss(
    nn_a: torch.Tensor, p_b: torch.Tensor, temperature: float, decoupled: bool = False
) -> tuple[torch.Tensor, int]:
    """NNCLR's loss for one ordered view pair (Dwibedi et al. 2021, eq. 2 with the prediction head).

    nn_a: [N, D] nearest neighbours NN(z_i, Q) of view a's projections (no gradient);
    p_b: [N, D] predictions p_i^+ of view b. With logits s_ik = NN(z_i, Q) . p_k^+ / tau:

        L = 1/2 [ -log softmax_k(s_ik)[k=i]  -  log softmax_k(s_ki)[k=i] ],

    the first term is eq. 2 (NN(z_i) picks p_i^+ among the batch's predictions), the second its
    transpose (p_i^+ picks NN(z_i) among the batch's neighbours): the paper's symmetrised loss.
    Predictions of other processes are gathered with gradient, neighbours without.
    ``decoupled``: DCL's form (``contrastive_ce``), the positive out of each denominator.
    Returns (mean loss, candidates per anchor = N*world).
    """
    nn_a = F.normalize(nn_a.float(), dim=1)
    p_b = F.normalize(p_b.float(), dim=1)
    n, offset = nn_a.shape[0], nn_a.shape[0] * dist.rank()
    labels = torch.arange(n, device=nn_a.device) + offset
    logits_nn = nn_a @ dist.gather_with_grad(p_b).T / temperature  # [N, N*world]: rows NN(z_i)
    logits_p = p_b @ dist.gather(nn_a).T / temperature  # [N, N*world]: rows p_i^+
    loss = (contrastive_ce(logits_nn, labels, decoupled) + contrastive_ce(logits_p, labels, decoupled)) / 2
    return loss, logits_nn.shape[1]
