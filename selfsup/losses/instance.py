"""Instance-discrimination losses (pure functions; banks and negatives are passed in).

- ``nce_instance``: InstDisc's noise-contrastive estimation against a memory bank
  (Wu et al. 2018, sec. 3.2-3.3), and ``nce_log_z`` for its Monte-Carlo normaliser.
- ``invariant_spreading``: InvaSpread's in-batch loss (Ye et al. 2019, sec. 3).
- ``supcon``: supervised contrastive L_out (Khosla et al. 2020, eq. 2): positives are every view
  of the same class, the labelled reference point of the family.

All compute in float32 with autocast disabled: with temperatures of 0.07-0.1 a bf16 cosine
(3 significant digits) moves a logit by ~0.05, and NCE compares logits to a fixed log Z.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from selfsup import dist


def _no_autocast(x: torch.Tensor):
    return torch.autocast(device_type=x.device.type, enabled=False)


# ------------------------------------------------------------------------------------ InstDisc


@torch.no_grad()
def nce_log_z(f: torch.Tensor, noise: torch.Tensor, temperature: float, num_samples: int) -> torch.Tensor:
    """Monte-Carlo estimate of log Z, Z = sum_j exp(v_j.f/tau) ~ n * E_j[exp(v_j.f/tau)] (Wu et al. 2018,
    sec. 3.2), over every (feature, noise entry) pair of one batch: f [B, D], noise [m, D] (both unit
    vectors). Returns a 0-d float32 tensor; averaged over processes so all hold the same constant."""
    with _no_autocast(f):
        s = f.float() @ noise.float().T / temperature  # [B, m]
        log_mean = torch.logsumexp(s.flatten(), 0) - math.log(s.numel())
        est = dist.all_reduce_mean(log_mean.exp().clone())  # mean of the per-process means of exp
        return est.log() + math.log(num_samples)


def nce_instance(
    f: torch.Tensor,
    v_pos: torch.Tensor,
    v_neg: torch.Tensor,
    temperature: float,
    log_z: torch.Tensor | float,
    num_samples: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """InstDisc's NCE loss (Wu et al. 2018, sec. 3.2) with uniform noise P_n = 1/n.

    f: [B, D] current features f_theta(x_i), unit length; v_pos: [B, D] the bank entries v_i of the
    same images; v_neg: [m, D] m noise entries drawn uniformly from the bank (shared by the batch).
    P(i|v) = exp(v.f_i / tau) / Z, and the posterior that (i, v) came from the data is
    h(i, v) = P(i|v) / (P(i|v) + m P_n), so
        L = E_i[ -log h(i, v_i) - sum_k log(1 - h(i, v_k)) ]   (mean over the batch, sum over noise).
    Written as logistic regression on logit(h) = v.f/tau - log Z - log(m/n), which is exact and
    stays finite where the ratio form needs the official code's +eps.
    Returns (loss, positive part, noise part), the parts as batch means.
    """
    m = v_neg.shape[0]
    with _no_autocast(f):
        f, v_pos, v_neg = f.float(), v_pos.float(), v_neg.float()
        shift = torch.as_tensor(log_z, dtype=torch.float32, device=f.device) + math.log(m / num_samples)
        logit_pos = (f * v_pos).sum(1) / temperature - shift  # [B]
        logit_neg = f @ v_neg.T / temperature - shift  # [B, m]
        pos = F.softplus(-logit_pos)  # -log h(i, v_i) = -log sigmoid(logit)
        neg = F.softplus(logit_neg).sum(1)  # -sum_k log(1 - h(i, v_k))
        return (pos + neg).mean(), pos.mean(), neg.mean()


# ---------------------------------------------------------------------------------- InvaSpread


def invariant_spreading(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float, detach_weights: bool = True
) -> tuple[torch.Tensor, int]:
    """InvaSpread (Ye et al. 2019, sec. 3) over the 2N views of a batch.

    z1, z2: [N, D] embeddings of two augmentations of the same N images (normalised here). Every
    view a is an anchor; the other 2N-1 views are the candidate "instance weights" k, and
    P(k|a) = exp(z_k.z_a/tau) / sum_{j != a} exp(z_j.z_a/tau). The loss is
        L = -1/(2N) sum_a [ log P(pos(a)|a) + sum_{k not in {a, pos(a)}} log(1 - P(k|a)) ],
    the probability that the augmented sample is recognised as its own instance, and that it is
    NOT recognised as any of the 2(N-1) other views (treated as independent events, as the paper
    does). Both views act as anchors, as in the official code (mangye16/Unsupervised_Embedding_Learning,
    BatchCriterion with negM=1). ``detach_weights``: the official code stops the gradient through the
    candidate side (``x.t().data``), so each embedding is moved only as an anchor; False differentiates
    both sides. Views of other processes are gathered as candidates.
    Returns (loss, candidates per anchor = 2N' - 1).
    """
    with _no_autocast(z1):
        z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # [2N, D]
        n2, n = z.shape[0], z1.shape[0]
        z_all = dist.gather_with_grad(z)  # [2N*world, D]
        if detach_weights:
            z_all = z_all.detach()
        logits = z @ z_all.T / temperature  # [2N, 2N*world]
        offset = dist.rank() * n2
        idx = torch.arange(n2, device=z.device)
        logits[idx, idx + offset] = float("-inf")  # a view is not a candidate for itself
        log_p = logits.log_softmax(1)  # log P(k|a)
        pos = (idx + n) % n2 + offset
        not_neg = torch.zeros_like(logits, dtype=torch.bool)
        not_neg[idx, idx + offset] = True
        not_neg[idx, pos] = True
        # log(1 - P) = log(-expm1(log P)); the clamp keeps it finite if one negative takes all mass
        log_not = torch.log(-torch.expm1(log_p.clamp(max=-1e-12))).masked_fill(not_neg, 0.0)
        loss = -(log_p[idx, pos] + log_not.sum(1)).mean()
        return loss, z_all.shape[0] - 1


# ------------------------------------------------------------------------------------- SupCon


def supcon(z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor, temperature: float) -> tuple[torch.Tensor, int]:
    """Supervised contrastive loss, L_out form (Khosla et al. 2020, eq. 2).

    z1, z2: [N, D] projections of two views of N images (normalised here); labels: [N] int.
    Over the 2N views, anchor i has A(i) = every other view and P(i) = the other views with i's
    label (its partner view always among them):
        L = 1/(2N) sum_i  -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p/tau) / sum_{a in A(i)} exp(z_i.z_a/tau) ).
    The 1/|P(i)| sits outside the log (L_out, the form the paper found better than L_in). The
    official code's extra factor tau/0.07 is not in the paper and is left out. Views and labels of
    other processes are gathered (with gradient) as candidates.
    Returns (loss, candidates per anchor = 2N' - 1).
    """
    with _no_autocast(z1):
        z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # [2N, D]
        y = torch.cat([labels, labels])  # [2N]
        n2 = z.shape[0]
        z_all, y_all = dist.gather_with_grad(z), dist.gather(y)  # [2N*world, D], [2N*world]
        logits = z @ z_all.T / temperature  # [2N, 2N*world]
        idx = torch.arange(n2, device=z.device)
        self_mask = torch.zeros_like(logits, dtype=torch.bool)
        self_mask[idx, idx + dist.rank() * n2] = True
        log_p = logits.masked_fill(self_mask, float("-inf")).log_softmax(1)  # over A(i)
        positives = (y[:, None] == y_all[None, :]) & ~self_mask  # P(i), [2N, 2N*world]
        n_pos = positives.sum(1)  # >= 1: the partner view
        loss = -(log_p.masked_fill(~positives, 0.0).sum(1) / n_pos.clamp(min=1))
        return loss.mean(), z_all.shape[0] - 1
