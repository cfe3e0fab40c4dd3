"""GAN losses (Goodfellow et al. 2014) in the non-saturating form: binary cross-entropy on logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.losses.precision import float32_loss


@float32_loss
def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(real) - log(1 - D(fake)), averaged: D learns to tell real (1) from generated (0)."""
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    return F.binary_cross_entropy_with_logits(
        real_logits, torch.ones_like(real_logits)
    ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))


@float32_loss
def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(fake): the non-saturating generator loss (strong gradients while D still wins)."""
    fake_logits = fake_logits.float()
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
