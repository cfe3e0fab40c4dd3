"""Reconstruction losses: pixel errors (optionally only where a mask says) and the VAE's KL term."""

from __future__ import annotations

import torch

from selfsup.losses.precision import float32_loss


@float32_loss
def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the masked elements only: sum(M * (pred - target)^2) / sum(M).

    pred, target [N, ...]; mask broadcastable to them, 1 where the loss counts (the removed region
    of a context encoder, the masked patches of MAE). The mean is over the masked elements (times
    the channels a broadcast mask covers), so the loss does not shrink when the region does."""
    pred, target = pred.float(), target.float()
    m = mask.float().expand_as(pred)
    return (m * (pred - target).pow(2)).sum() / m.sum().clamp_min(1.0)


@float32_loss
def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per sample, in nats: [N, D] -> [N].

    The closed form of Kingma & Welling 2014, appendix B: -1/2 * sum(1 + log s^2 - mu^2 - s^2)."""
    mu, logvar = mu.float(), logvar.float()
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
