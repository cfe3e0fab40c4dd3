"""Clustering losses: SwAV's balanced soft codes by Sinkhorn-Knopp and swapped prediction, DeepCluster-v2's
cross-entropy against k-means prototypes, MSN's priors.

Pure functions: the prototype scores, the queue rows and the codes are all passed in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup import dist


def _sum_over_processes(local: torch.Tensor) -> torch.Tensor:
    """Sum of a per-process tensor over processes (a copy; identity in one process)."""
    return dist.all_reduce_mean(local.clone()) * dist.world_size()


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3, num_shared: int = 0) -> torch.Tensor:
    """SwAV's codes: a soft assignment of samples to prototypes with equal partition
    (Caron et al. 2020, sec. 3.1, eq. 3-5; the official ``distributed_sinkhorn``).

    scores: [N, K] = z . c_k (cosines of samples with prototypes); the first ``num_shared`` rows are
    the same on every process (a queue that gathers all processes' keys), the other rows are this
    process's own. Q = exp(scores / epsilon) in the paper's K x B layout, then ``iterations``
    rounds of Sinkhorn-Knopp: rows (prototypes) rescaled to 1/K each, columns (samples) to 1/B
    each, over the B samples of all processes (sums are all-reduced, shared rows counted once).
    Returns [N, K] codes: each sample's row sums to 1 (the paper's Q scaled by B); each
    prototype receives ~B/K of them (exactly after enough iterations).
    float32, no gradient: the codes are targets.
    """
    s = scores.detach().float()
    world = dist.world_size()
    # exp(s / eps) overflows float32 for s / eps > 88; shifting all scores by one constant (the
    # largest over every process) changes nothing, as the first step divides by the total anyway.
    # (A sample whose best score is > 87 eps below the overall best would underflow to a zero code:
    # impossible for cosines in [-1, 1] with eps >= 0.025; the paper uses 0.05, at times 0.03.)
    shift = s.max() if s.numel() else s.new_zeros(())
    if world > 1:
        torch.distributed.all_reduce(shift, op=torch.distributed.ReduceOp.MAX)
    q = torch.exp((s - shift) / epsilon).T  # [K, N]
    k, n = q.shape
    b = num_shared + (n - num_shared) * world  # samples to assign over all processes
    tiny = torch.finfo(q.dtype).tiny  # a prototype whose scores all underflow stays 0 instead of NaN

    def per_prototype(x: torch.Tensor) -> torch.Tensor:  # [K, N] -> [K, 1] summed over all samples
        return _sum_over_processes(x[:, num_shared:].sum(1, keepdim=True)) + x[:, :num_shared].sum(1, keepdim=True)

    q /= per_prototype(q).sum().clamp_min(tiny)  # the whole matrix sums to 1
    for _ in range(iterations):
        q /= per_prototype(q).clamp_min(tiny) * k  # each prototype: 1/K of the mass (the equal partition)
        q /= q.sum(0, keepdim=True).clamp_min(tiny) * b  # each sample: 1/B
    return (q * b).T  # [N, K], rows sum to 1


def swapped_prediction(scores: torch.Tensor, codes: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SwAV's swapped prediction loss (Caron et al. 2020, eq. 1-2, with multi-crop eq. 6).

    scores: [V, B, K] prototype scores z_v . C of every crop (with gradient); codes: [G, B, K] the
    codes q_i of the first G crops (the globals; no gradient). Crop v predicts the codes of global
    crop i != v through p_v = softmax(z_v . C / tau); the loss is the cross-entropy
    -sum_k q_i log p_v, averaged over the batch and over all (i, v != i) pairs, which is the
    official code's mean over i of the mean over v != i.
    """
    v, b, _ = scores.shape
    g = codes.shape[0]
    # float32 throughout: under autocast the einsum (a batched matmul) would otherwise run in bf16
    with torch.autocast(scores.device.type, enabled=False):
        log_p = F.log_softmax(scores.float() / temperature, dim=-1)  # [V, B, K]
        ce = -torch.einsum("ibk,vbk->iv", codes.detach().float(), log_p) / b  # [G, V]: mean over the batch
    off_diagonal = ~torch.eye(g, v, dtype=torch.bool, device=ce.device)  # a crop never predicts its own codes
    return ce[off_diagonal].mean()


def prototype_cross_entropy(
    z: torch.Tensor, prototypes: list[torch.Tensor], targets: list[torch.Tensor], temperature: float = 0.1
) -> torch.Tensor:
    """DeepCluster-v2's loss (Caron et al. 2020, SwAV paper sec. 4; the official main_deepclusterv2.py):
    for each set h of prototypes C_h (k-means centroids, [K_h, D], unit rows, no gradient), the
    cross-entropy of softmax(z . C_h^T / tau) against the hard k-means assignment y_h of each sample,
    averaged over the samples and then over the sets.

    z: [N, D] unit embeddings of every crop (with gradient); targets: per set, int64 [N] (a crop
    takes its image's assignment). float32: tau = 0.1 would magnify bf16's rounding of the cosines."""
    with torch.autocast(z.device.type, enabled=False):
        z = z.float()
        losses = [F.cross_entropy(z @ c.detach().float().T / temperature, y) for c, y in zip(prototypes, targets)]
    return torch.stack(losses).mean()


def power_law_prior(num_prototypes: int, tau: float = 0.25, device=None) -> torch.Tensor:
    """PMSN's power-law prior over K prototypes (Assran et al. 2023, "The Hidden Uniform Cluster Prior
    in Self-Supervised Learning", sec. 5): p_k proportional to k^(-tau) for k = 1..K, summing to 1.
    tau = 0 is the uniform prior. Prototypes are exchangeable, so which one gets rank k is arbitrary."""
    k = torch.arange(1, num_prototypes + 1, dtype=torch.float64, device=device)
    prior = k.pow(-tau)
    return (prior / prior.sum()).float()


def prior_matching(mean_probs: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
    """KL(p_bar || prior) = sum_k p_bar_k log(p_bar_k / prior_k): how far the mean prediction over the
    anchors, p_bar [K], is from a prior [K] (None: uniform).

    With the uniform prior this is log K - H(p_bar), MSN's mean-entropy maximisation (me-max) term
    exactly as the official code computes it (``rloss`` in src/losses.py: -H(p_bar) + log K), whose
    gradient is that of -H(p_bar); PMSN replaces the uniform prior by a power law. 0 log 0 = 0.
    """
    p = mean_probs.float()
    log_prior = (
        -torch.log(torch.tensor(float(p.shape[-1]), device=p.device))
        if prior is None
        else prior.float().clamp_min(torch.finfo(torch.float32).tiny).log()
    )
    return torch.xlogy(p, p).sum(-1) - (p * log_prior).sum(-1)
