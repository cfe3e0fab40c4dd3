"""Semi-supervised losses (pseudo-labels, VAT, MixMatch, FixMatch): functions of logits and targets.

VAT's adversarial direction needs the classifier itself (a gradient through it), so
``vat_direction`` takes the model as a callable; everything else is a pure function of tensors.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def confidence_mask(logits_weak: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """FixMatch's pseudo-labels: q = softmax(logits of the weak view) (no gradient), the hard label
    argmax q and the mask 1(max q >= threshold). logits_weak: [N, K] -> (labels [N] long, mask [N] float)."""
    q = F.softmax(logits_weak.detach().float(), dim=-1)
    conf, labels = q.max(dim=-1)
    return labels, (conf >= threshold).float()


def fixmatch_unlabelled(
    logits_weak: torch.Tensor, logits_strong: torch.Tensor, threshold: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """FixMatch's unlabelled loss (Sohn et al. 2020, eq. 2):
    l_u = 1/(mu B) sum_b 1(max q_b >= tau) H(argmax q_b, p(y | A(u_b))): the mean over *all* mu B
    unlabelled images, the ones under the threshold contributing 0. Returns (l_u, mask [N])."""
    labels, mask = confidence_mask(logits_weak, threshold)
    ce = F.cross_entropy(logits_strong.float(), labels, reduction="none")
    return (ce * mask).mean(), mask


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-sum_k t_k log softmax(logits)_k, mean over the batch; targets [N, K] are probabilities."""
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()


def sharpen(p: torch.Tensor, temperature: float) -> torch.Tensor:
    """MixMatch's Sharpen(p, T)_i = p_i^(1/T) / sum_j p_j^(1/T) (Berthelot et al. 2019, eq. 7)."""
    pt = p.pow(1.0 / temperature)
    return pt / pt.sum(dim=-1, keepdim=True)


def mixup(
    x: torch.Tensor, y: torch.Tensor, x2: torch.Tensor, y2: torch.Tensor, lam: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor]:
    """MixMatch's MixUp with lambda' = max(lambda, 1 - lambda) (eq. 8-11), so the mix stays closer to
    its first argument: x' = l' x + (1 - l') x2 and likewise the targets. ``lam`` is a scalar or one
    value per row."""
    lam = torch.as_tensor(lam, dtype=x.dtype, device=x.device)
    lam = torch.maximum(lam, 1 - lam)
    lx = lam.view(-1, *([1] * (x.dim() - 1))) if lam.dim() else lam
    ly = lam.view(-1, 1) if lam.dim() else lam
    return lx * x + (1 - lx) * x2, ly * y + (1 - ly) * y2


def mixmatch_unlabelled(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """MixMatch's L_U = 1/(L |U'|) sum ||q - p_model||_2^2 (eq. 4): the squared error between guessed
    labels and predicted probabilities, averaged over the batch and the L classes."""
    return F.mse_loss(F.softmax(logits.float(), dim=-1), targets.float())


def kl_divergence(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) of the softmaxes of two logit tensors [N, K], mean over the batch."""
    log_p = F.log_softmax(logits_p.float(), dim=-1)
    log_q = F.log_softmax(logits_q.float(), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def _unit(d: torch.Tensor) -> torch.Tensor:
    """Each row of d scaled to unit L2 norm (over all its non-batch dimensions)."""
    return d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (d.dim() - 1)))


def vat_direction(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    logits: torch.Tensor,
    xi: float = 1e-6,
    power_iterations: int = 1,
    gen: torch.Generator | None = None,
) -> torch.Tensor:
    """VAT's adversarial direction (Miyato et al. 2018, eq. 11-13): the dominant eigenvector of the
    Hessian of D(r) = KL(p(y|x) || p(y|x + r)) at r = 0, by power iteration on finite differences:
    d <- normalise(grad_r D(r) at r = xi d), starting from a random unit d. Returns unit-norm
    directions [N, ...] (no gradient); ``logits``: the model's output on x, used as the fixed p."""
    p = logits.detach()
    d = _unit(torch.randn(x.shape, generator=gen).to(x.device, x.dtype))
    for _ in range(power_iterations):
        d.requires_grad_(True)
        dist = kl_divergence(p, model(x.detach() + xi * d))
        (grad,) = torch.autograd.grad(dist, d)
        d = _unit(grad.detach())
    return d


def vat_loss(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    logits: torch.Tensor,
    epsilon: float,
    xi: float = 1e-6,
    power_iterations: int = 1,
    gen: torch.Generator | None = None,
) -> torch.Tensor:
    """The local distributional smoothness LDS = KL(p(y|x) || p(y|x + r_adv)), r_adv = epsilon d_adv
    (eq. 8); p is fixed (no gradient through it), the gradient flows through the perturbed branch."""
    r_adv = epsilon * vat_direction(model, x, logits, xi, power_iterations, gen)
    return kl_divergence(logits.detach(), model(x.detach() + r_adv))


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean prediction entropy -sum_k p_k log p_k (VAT's optional entropy minimisation term)."""
    log_p = F.log_softmax(logits.float(), dim=-1)
    return -(log_p.exp() * log_p).sum(-1).mean()


def pseudo_label_weight(t: float, t1: float, t2: float, alpha_f: float) -> float:
    """Lee (2013), eq. 16: alpha(t) = 0 for t < T1, alpha_f (t - T1)/(T2 - T1) for T1 <= t < T2, and
    alpha_f from T2 on (t, T1, T2 in any one unit: epochs in the paper, steps here)."""
    if t < t1:
        return 0.0
    if t < t2:
        return alpha_f * (t - t1) / (t2 - t1)
    return alpha_f
